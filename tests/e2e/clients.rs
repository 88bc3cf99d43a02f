//! The OpenAPI-generated Python client (from the committed spec by `scripts/clients.sh`, which
//! `make test` runs first) drives a live gateway.

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
async fn the_generated_python_client_completes_the_flow() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let root = root();
    let generated = root.join("target/clients/python");
    require(&generated.join("starcite_client"));
    let mut command = Command::new(root.join("tools/venv/bin/python"));
    command
        .arg(root.join("clients/python/flow.py"))
        .arg(&gateway.base_url)
        .arg(&generated);
    let flow = tokio::task::spawn_blocking(move || run(command, "python"));
    flow.await.unwrap();
}
