//! Machines for the object-storage tests: an S3-compatible server process (s3rver),
//! enhancement API servers, PostgreSQL, and worker hosts in network namespaces, each
//! with a private scratch directory (a tmpfs in a mount namespace of its own, so no
//! worker can see another's). Included with `#[path]`.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Attempt, RunStatus, SharedStore};
use idempipe_enhance::server::{ServerConfig, ServerState, serve_with_state};
use idempipe_testkit::netns::{Forwarder, Host, Network};
use idempipe_testkit::s3::{CREDENTIALS, S3Server};
use idempipe_testkit::{TempDir, TestDb};
use idempipe_video::storage::s3::S3Options;
use idempipe_video::storage::{Scratch, Storage};

pub const BIN: &str = env!("CARGO_BIN_EXE_idempipe");

/// The sample every run here processes: 176x144, 120 frames.
pub fn input() -> PathBuf {
    idempipe_testkit::media("carphone_pristine.mp4")
}

/// Settings shared by every run of these tests (fast encoder, several segments).
pub const SETTINGS: [&str; 6] = [
    "--captions",
    "off",
    "--preset",
    "ultrafast",
    "--segment-seconds",
    "1",
];

/// Runs `cmd` to completion within `limit`; returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `idempipe ARGS` with the AWS environment of `s3` (if any).
pub fn idempipe(args: &[&str], s3: Option<&S3Server>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("IDEMPIPE_LOG", "warn");
    if let Some(s3) = s3 {
        cmd.envs(s3.env());
    }
    cmd
}

/// The per-frame MD5 lines of the video stream of `path` (ffmpeg's framemd5 without
/// its header): equal lists mean frame-identical videos.
pub fn frame_md5s(path: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg framemd5 of {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap_or_default().trim().to_owned())
        .collect()
}

/// An enhancement API server on `ip` with `config`: its base URL and state (counters).
pub async fn start_api(ip: IpAddr, config: ServerConfig) -> (String, ServerState) {
    let state = ServerState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(async move {
        serve_with_state(listener, served, std::future::pending())
            .await
            .unwrap()
    });
    (url, state)
}

/// The frames of the reference: the same input and settings run by one `process` with
/// local artifacts, enhancing through `api` (a server of its own: idempotency keys of
/// different databases collide) or in process.
pub async fn reference_frames(dir: &TempDir, api: Option<&str>) -> Vec<String> {
    let out = dir.join("reference.mp4");
    let mut cmd = idempipe(
        &[
            "process",
            input().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--artifacts",
            dir.join("reference-artifacts").to_str().unwrap(),
            "--db",
            dir.join("reference.db").to_str().unwrap(),
        ],
        None,
    );
    if let Some(api) = api {
        cmd.args(["--api", api]);
    }
    let (code, _, err) = run(cmd.args(SETTINGS), Duration::from_secs(180));
    assert_eq!(code, 0, "reference run: {err}");
    let frames = frame_md5s(&out);
    assert_eq!(frames.len(), 120);
    frames
}

/// A storage client of `s3` for the test itself (reading outputs, listing keys).
pub fn storage_of(s3: &S3Server, scratch: &Path) -> Storage {
    let options = S3Options {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        credentials: Some((CREDENTIALS.into(), CREDENTIALS.into())),
    };
    Storage::with_s3_options(Scratch::new(scratch.to_owned()).unwrap(), options)
}

/// The database URL as seen from the hosts: the PostgreSQL host and port replaced by
/// the forwarder's.
pub fn via(url: &str, forwarder: &Forwarder) -> String {
    let at = url.find('@').expect("a user in the PostgreSQL URL") + 1;
    let end = at + url[at..].find('/').expect("a database in the URL");
    format!("{}{}{}", &url[..at], forwarder.addr(), &url[end..])
}

/// The PostgreSQL server's address from its URL.
pub fn pg_addr(url: &str) -> SocketAddr {
    let at = url.find('@').expect("a user in the PostgreSQL URL") + 1;
    let end = at + url[at..].find('/').expect("a database in the URL");
    let hostport = &url[at..end];
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("an IP:port in the PostgreSQL URL")
}

/// Everything the worker hosts need, in the test's namespace: a network, the object
/// store and the enhancement API on its gateway address, PostgreSQL through a forwarder.
pub struct Cluster {
    pub net: Network,
    pub s3: S3Server,
    pub api: String,
    pub api_state: ServerState,
    pub db: TestDb,
    pub forwarder: Forwarder,
    pub dir: TempDir,
}

impl Cluster {
    /// Starts it all; the API answers with `config`.
    pub async fn start(config: ServerConfig) -> Self {
        let net = Network::create();
        let gw = IpAddr::V4(net.gateway());
        let s3 = S3Server::start_on(gw, "media");
        let (api, api_state) = start_api(gw, config).await;
        let db = TestDb::postgres().await;
        let forwarder = Forwarder::start(net.gateway(), pg_addr(&db.url));
        Self {
            net,
            s3,
            api,
            api_state,
            db,
            forwarder,
            dir: TempDir::new("cluster"),
        }
    }

    /// `submit`s the sample from this namespace: the input is uploaded once, the
    /// output and artifacts are in the bucket. Returns the run id.
    pub fn submit(&self) -> i64 {
        self.submit_with(&input(), &[])
    }

    /// `submit`s `input` with the usual settings and `extra` arguments.
    pub fn submit_with(&self, input: &Path, extra: &[&str]) -> i64 {
        let (code, out, err) = run(
            idempipe(
                &[
                    "submit",
                    input.to_str().unwrap(),
                    "-o",
                    &self.s3.url("out/carphone.mp4"),
                    "--artifacts",
                    &self.s3.url("jobs"),
                    "--db",
                    &self.db.url,
                    "--api",
                    &self.api,
                ],
                Some(&self.s3),
            )
            .args(SETTINGS)
            .args(extra),
            Duration::from_secs(120),
        );
        assert_eq!(code, 0, "submit: {err}");
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("a run id: {out}"))
    }

    /// `idempipe worker` on `host`, named `name`, with the database through the
    /// forwarder, the object store's environment (`endpoint` overriding its URL), and
    /// a scratch directory no other process can see.
    pub fn worker_with_endpoint(&self, host: &Host, name: &str, endpoint: &str) -> Child {
        self.worker_with(host, name, endpoint, 4)
    }

    /// As [`worker_with_endpoint`](Self::worker_with_endpoint), with `concurrency`
    /// handler calls at once.
    pub fn worker_with(
        &self,
        host: &Host,
        name: &str,
        endpoint: &str,
        concurrency: usize,
    ) -> Child {
        let scratch = self.dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let scratch = scratch.to_str().unwrap().to_owned();
        let db = via(&self.db.url, &self.forwarder);
        let log = std::fs::File::create(self.dir.join(&format!("{name}.log"))).unwrap();
        host.command("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o size=256m scratch \"$0\" && exec \"$@\"")
            .arg(&scratch)
            .arg(BIN)
            .args(["worker", "--db", &db, "--scratch", &scratch, "--name", name])
            .args(["--concurrency", &concurrency.to_string()])
            .envs(self.s3.env())
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("IDEMPIPE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// [`worker_with_endpoint`](Self::worker_with_endpoint) with the real store.
    pub fn worker(&self, host: &Host, name: &str) -> Child {
        self.worker_with_endpoint(host, name, &self.s3.endpoint())
    }

    /// What worker `name` logged.
    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until run `run_id` ends; panics after `limit`.
    pub async fn wait_for_end(
        &self,
        store: &SharedStore,
        run_id: i64,
        limit: Duration,
    ) -> RunStatus {
        let deadline = Instant::now() + limit;
        loop {
            let run = store.run_get(run_id).await.unwrap();
            if run.status != RunStatus::Running {
                return run.status;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until at least `n` frames of `run_id` are completed.
    pub async fn wait_for_frames(&self, store: &SharedStore, run_id: i64, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let p = idempipe_video::pipeline::frame_progress(store, run_id)
                .await
                .unwrap();
            if p.done >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} frames after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The frames of the run's output, read back from the bucket.
    pub async fn output_frames(&self) -> Vec<String> {
        let scratch = self.dir.join("test-scratch");
        let storage = storage_of(&self.s3, &scratch);
        let out = storage
            .fetch(Path::new(&self.s3.url("out/carphone.mp4")))
            .await
            .expect("the output is in the bucket");
        frame_md5s(out.path())
    }
}

/// Every attempt of every item of `run_id`.
pub async fn attempts(store: &SharedStore, run_id: i64) -> Vec<(String, Attempt)> {
    let filter = ItemFilter {
        run_id,
        stage: None,
        statuses: vec![],
        limit: 100_000,
        after_id: 0,
    };
    let mut all = Vec::new();
    for item in store.item_list(&filter).await.unwrap() {
        for a in store.attempt_list(item.id).await.unwrap() {
            all.push((format!("{}/{}", item.stage, item.key), a));
        }
    }
    all
}

/// SIGKILLs `child` and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
