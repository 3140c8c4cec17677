//! A real S3-compatible server process for tests: s3rver (npm), which keeps its objects
//! as files in a directory, checks AWS Signature V4 (access key and secret `S3RVER`),
//! and so survives a restart with its data, as a real object store does.
//!
//! `scripts/setup` installs it; `$IDEMPIPE_S3RVER` names another binary.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

/// The access key and secret s3rver accepts.
pub const CREDENTIALS: &str = "S3RVER";

/// A running s3rver with one bucket; killed (and its data removed) on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    addr: SocketAddr,
    bucket: String,
    data: TempDir,
}

impl S3Server {
    /// Starts s3rver on `127.0.0.1` with bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        Self::start_on("127.0.0.1".parse().expect("an address"), bucket)
    }

    /// Starts s3rver on `ip` (a free port) with bucket `bucket`.
    pub fn start_on(ip: IpAddr, bucket: &str) -> Self {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
            .port();
        let mut server = Self {
            child: None,
            addr: SocketAddr::new(ip, port),
            bucket: bucket.to_owned(),
            data: TempDir::new("s3rver"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = std::env::var("IDEMPIPE_S3RVER").unwrap_or_else(|_| "s3rver".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the s3rver log");
        let child = Command::new(&bin)
            .arg("-d")
            .arg(self.data.join("data"))
            .args(["-a", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(["--configure-bucket", &self.bucket])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} (the S3 test server; scripts/setup installs it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3rver did not listen on {} within 20 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server at once (SIGKILL); its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `http://IP:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://BUCKET/KEY`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key.trim_start_matches('/'))
    }

    /// The AWS environment a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", CREDENTIALS.into()),
            ("AWS_SECRET_ACCESS_KEY", CREDENTIALS.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    fn log_path(&self) -> PathBuf {
        self.data.join("s3rver.log")
    }

    /// What the server logged so far: one line per request (method, path and query,
    /// status), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
