//! The OpenAPI-generated TypeScript client (from the committed spec by `scripts/clients.sh`,
//! which `make test` runs first) drives a live gateway.

use std::path::{Path, PathBuf};
use std::process::Command;

use starcite_tests::{TestGateway, TestNats};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run the {what} flow: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} flow failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("flow: ok"), "{what} flow said: {stdout}");
}

fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run `make test` (or scripts/clients.sh) to generate the clients",
        path.display()
    );
}

#[tokio::test]
async fn the_generated_typescript_client_completes_the_flow() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let project = root().join("clients/typescript");
    require(&project.join("generated/schema.d.ts"));
    let mut command = Command::new(project.join("node_modules/.bin/tsx"));
    command
        .current_dir(&project)
        .arg("flow.ts")
        .arg(&gateway.base_url);
    let flow = tokio::task::spawn_blocking(move || run(command, "typescript"));
    flow.await.unwrap();
}
