//! NATS over TLS with a private CA (`STARCITE_NATS_TLS_CA`), and the credentials and CA files
//! failing start-up by name. Certificates are made per test with the `openssl` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gateway::Gateway;
use gateway::config::Config;
use starcite_tests::{TestGateway, TestNats, event};
use tempfile::TempDir;

#[tokio::test]
async fn a_gateway_trusting_the_servers_ca_becomes_ready_and_appends_over_tls() {
    let pki = Pki::new();
    let nats = TestNats::start_with_config(&pki.server_config());
    let mut config = TestGateway::config(&nats);
    config.nats.tls_ca = Some(pki.ca.clone());
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let reply = gateway.append_ok(&id, event("tls", 1)).await;
    assert_eq!(reply["seq"], 1);
    assert_eq!(gateway.last_seq(&id).await, 1);
}

#[tokio::test]
async fn a_gateway_that_cannot_verify_the_server_never_becomes_ready() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let nats = TestNats::start_with_config(&pki.server_config());
    // Without a CA the system's roots are used; another CA's certificate proves nothing either.
    let without_ca = TestGateway::spawn(TestGateway::config(&nats)).await;
    let mut config = TestGateway::config(&nats);
    config.nats.tls_ca = Some(stranger.ca.clone());
    let other_ca = TestGateway::spawn(config).await;
    stays_unready(&[&without_ca, &other_ca]).await;
}

#[tokio::test]
async fn a_tls_ca_refuses_a_server_without_tls() {
    let pki = Pki::new();
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.tls_ca = Some(pki.ca.clone());
    let gateway = TestGateway::spawn(config).await;
    stays_unready(&[&gateway]).await;
}

#[tokio::test]
async fn unusable_credentials_or_ca_files_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not a credentials file nor a certificate\n").unwrap();
    let missing = dir.path().join("missing");
    let cases = [
        (Some(&missing), None, "STARCITE_NATS_CREDS"),
        (Some(&garbage), None, "STARCITE_NATS_CREDS"),
        (None, Some(&missing), "STARCITE_NATS_TLS_CA"),
        (None, Some(&garbage), "STARCITE_NATS_TLS_CA"),
    ];
    for (creds, ca, variable) in cases {
        // Nothing listens here: the files are refused before any connection is tried.
        let mut config = Config::default();
        config.nats.urls = vec!["nats://127.0.0.1:1".to_owned()];
        config.nats.creds = creds.cloned();
        config.nats.tls_ca = ca.cloned();
        let Err(err) = Gateway::start(config).await else {
            panic!("{variable}: a gateway started with an unusable file");
        };
        let message = err.to_string();
        assert!(message.contains(variable), "{message}");
        if creds == Some(&missing) || ca == Some(&missing) {
            assert!(message.contains("missing"), "names the file: {message}");
        }
    }
}

/// Polls each gateway's readiness for a few seconds; none may turn ready.
async fn stays_unready(gateways: &[&TestGateway]) {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for gateway in gateways {
            let status = gateway
                .client
                .get(format!("{}/health/ready", gateway.base_url))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 503, "{} became ready", gateway.base_url);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1, in a temporary folder.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            dir.path(),
            &format!(
                "req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=starcite-test-ca \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
        );
        openssl(
            dir.path(),
            &format!("req -new {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        );
        std::fs::write(
            path("server.ext"),
            "subjectAltName = IP:127.0.0.1\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(
            dir.path(),
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 \
             -extfile server.ext -out server.pem",
        );
        Pki {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            _dir: dir,
        }
    }

    /// nats-server settings that require TLS from every client.
    fn server_config(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

/// Runs `openssl` in `dir` with `args` (split at whitespace).
fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run openssl ({err}); the TLS tests make their certificates with it \
                 (Debian: apt-get install openssl, which .ci/run does)"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
