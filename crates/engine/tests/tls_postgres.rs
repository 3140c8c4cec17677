//! PostgreSQL over TLS: a throwaway cluster with `ssl=on` and a certificate from a CA made
//! by the test; the store connects with `sslmode=require` and `sslmode=verify-full`
//! (trusting that CA through `sslrootcert`), and refuses a server its CA did not sign.

use std::path::{Path, PathBuf};
use std::process::Command;

use idempipe_engine::store::RunCreate;
use idempipe_engine::store::postgres::PgStore;
use idempipe_engine::{NewItem, Store};
use idempipe_testkit::TempDir;
use idempipe_testkit::tls::TestCa;
use serde_json::json;

/// A PostgreSQL cluster of the test's own, serving TLS with `ca`'s server certificate;
/// stopped on drop.
struct TlsCluster {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

/// The newest PostgreSQL server binaries installed.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup installs them)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A shell command, as the `postgres` user when root (PostgreSQL refuses to run as root).
fn pg_shell(command: &str) -> Command {
    let mut c;
    if is_root() {
        c = Command::new("su");
        c.args(["postgres", "-c", command]);
    } else {
        c = Command::new("bash");
        c.args(["-c", command]);
    }
    c
}

/// Runs `command` with [`pg_shell`], giving `dir` to the `postgres` user first when root.
fn run_pg(dir: &Path, command: &str) {
    if is_root() {
        let chown = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(chown.success());
    }
    let status = pg_shell(command).status().unwrap();
    assert!(status.success(), "{command} failed");
}

impl TlsCluster {
    fn start(ca: &TestCa) -> Self {
        let bin = pg_bin();
        let dir = TempDir::new("pg-tls");
        let data = dir.join("data");
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::copy(&ca.cert_pem, &cert).unwrap();
        std::fs::copy(&ca.key_pem, &key).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        run_pg(
            dir.path(),
            &format!(
                "{}/initdb -D {} -U postgres -A trust >/dev/null",
                bin.display(),
                data.display()
            ),
        );
        let port = idempipe_testkit::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} \
             -c ssl_key_file={}",
            dir.path().display(),
            cert.display(),
            key.display()
        );
        run_pg(
            dir.path(),
            &format!(
                "{}/pg_ctl -D {} -o '{options}' -l {} -w start >/dev/null",
                bin.display(),
                data.display(),
                dir.join("log").display()
            ),
        );
        Self { bin, dir, port }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = pg_shell(&format!(
            "{}/pg_ctl -D {} -m immediate stop",
            self.bin.display(),
            self.dir.join("data").display()
        ))
        .output();
    }
}

/// Connects, migrates, creates and reads back a run, and checks that the session is TLS.
async fn store_works_over_tls(url: &str) {
    let store = PgStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    store.migrate().await.unwrap();
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "tls".into(),
                fingerprint: format!("fp-{}", fastrand::u64(..)),
                input: "over TLS".into(),
                params: json!({}),
                items: vec![NewItem::new("s", "k", json!({}))],
            },
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(store.run_get(run).await.unwrap().input, "over TLS");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(ssl, "{url}: the session is not encrypted");
}

#[tokio::test]
async fn postgres_over_tls_require_and_verify_full() {
    let ca = TestCa::new("pg-ca");
    let cluster = TlsCluster::start(&ca);

    store_works_over_tls(&cluster.url("sslmode=require")).await;
    store_works_over_tls(&cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.ca_pem.display()
    )))
    .await;

    // A CA that did not sign the server's certificate: refused, saying why and what to check.
    let other = TestCa::new("pg-other-ca");
    let url = cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.ca_pem.display()
    ));
    let err = PgStore::connect(&url).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{}",
            cluster.port
        )) && err.contains("TLS failed")
            && err.to_lowercase().contains("certificate")
            && err.contains("sslrootcert"),
        "{err}"
    );
}
