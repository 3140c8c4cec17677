//! `idempipe process --api https://...` against the real enhancement server behind a TLS
//! proxy whose certificate comes from a CA made by the test: trusted with `--ca-file`,
//! refused at preflight without it.

use std::process::Output;

use idempipe_enhance::ServerConfig;
use idempipe_enhance::server::{ServerState, serve_with_state};
use idempipe_testkit::TempDir;
use idempipe_testkit::tls::{TestCa, TlsProxy};

async fn process(dir: &TempDir, api: &str, extra: &[&str]) -> Output {
    let input = idempipe_testkit::media("bikes.mp4");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .arg("process")
        .arg(&input)
        .arg("-o")
        .arg(dir.join("out.mp4"))
        .arg("--db")
        .arg(dir.join("state.db"))
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .args(["--api", api, "--captions", "off", "--preset", "ultrafast"])
        .args(extra)
        .env("IDEMPIPE_LOG", "warn")
        .env_remove("IDEMPIPE_CA_FILE")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_calls_an_https_api_trusting_the_ca_file() {
    let ca = TestCa::new("cli-https-ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let state = ServerState::new(ServerConfig::default()).unwrap();
    let stats = state.stats();
    tokio::spawn(serve_with_state(listener, state, std::future::pending()));
    let proxy = TlsProxy::start(upstream, &ca).await;
    let api = format!("https://127.0.0.1:{}", proxy.addr.port());

    // The system's roots do not know the test CA: refused before any work.
    let dir = TempDir::new("cli-https-untrusted");
    let run = process(&dir, &api, &[]).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&api) && stderr.contains("certificate") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    assert_eq!(stats.enhance_calls(), 0);

    // Trusting the CA, the whole run goes through the HTTPS API.
    let dir = TempDir::new("cli-https");
    let ca_file = ca.ca_pem.display().to_string();
    let run = process(&dir, &api, &["--ca-file", &ca_file]).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(dir.join("out.mp4").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out.report.json")).unwrap()).unwrap();
    let enhanced = report["frames"]["enhanced"].as_u64().unwrap();
    assert!(enhanced > 0, "{report}");
    // Every enhanced frame was a call the server over TLS answered.
    assert_eq!(stats.enhance_calls(), enhanced, "{report}");
}

#[test]
fn an_unreadable_ca_file_is_refused_naming_it() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args([
            "--ca-file",
            "/nonexistent/ca.pem",
            "runs",
            "--db",
            "/nonexistent/x.db",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CA file /nonexistent/ca.pem: cannot read it"),
        "{stderr}"
    );
}
