//! What `idempipe process` shows, run as the real binary against real enhancement
//! servers (`idempipe enhance-server`): without a terminal, plain lines that say why
//! frames wait (the endpoint's circuit, the last error) and no INFO logs unless `-v`; a
//! second API URL is not held by the first one's circuit; on a pseudo-terminal, the live
//! display ends with a labelled summary. Also `--version` and `completions`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use idempipe_testkit::TempDir;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idempipe"));
    cmd.env_remove("IDEMPIPE_LOG");
    cmd
}

/// A small real video: 120 frames of 176x144.
fn sample() -> String {
    idempipe_testkit::media("carphone_pristine.mp4")
        .display()
        .to_string()
}

/// `idempipe enhance-server` on a free port, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(failure_rate: f64) -> Self {
        let port = idempipe_testkit::free_port();
        let child = bin()
            .args(["enhance-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--failure-rate", &failure_rate.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "enhance-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_args(dir: &TempDir, out: &str, api: &str) -> Vec<String> {
    [
        "process",
        &sample(),
        "-o",
        &dir.join(out).display().to_string(),
        "--db",
        &dir.join("state.db").display().to_string(),
        "--artifacts",
        &dir.join("artifacts").display().to_string(),
        "--api",
        api,
        "--captions",
        "off",
        "--preset",
        "ultrafast",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `idempipe process` against an API that answers 503 to every frame until its
/// stderr says why it waits, then kills it; returns the lines read.
fn lines_until_waiting(dir: &TempDir, api: &str) -> Vec<String> {
    let mut child = bin()
        .args(process_args(dir, "down.mp4", api))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let said_why = |l: &String| l.contains("waiting: circuit") && l.contains("HTTP 503");
    while !lines.iter().any(said_why) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn plain_progress_says_why_it_waits_and_a_new_api_is_not_held() {
    let dir = TempDir::new("cli-progress");
    let down = Server::start(1.0);
    let lines = lines_until_waiting(&dir, &down.url);
    let all = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.contains("waiting: circuit")
            && l.contains(&down.url)
            && l.contains("HTTP 503")),
        "a plain line names the circuit of {} and the last error:\n{all}",
        down.url
    );
    assert!(
        lines.iter().any(|l| l.contains("frames 0/120")),
        "plain progress lines:\n{all}"
    );
    assert!(!all.contains("INFO"), "no INFO logs without -v:\n{all}");

    // Right after, the same database, another (healthy) API: its own limiter, never opened.
    let up = Server::start(0.0);
    let out = bin()
        .arg("-v")
        .args(process_args(&dir, "up.mp4", &up.url))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("INFO"), "-v shows INFO logs:\n{stderr}");
    assert!(
        stderr.contains("frames:    120 of 120 enhanced, 0 failed (awaiting retry), 0 dead"),
        "{stderr}"
    );
    let limiters = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = idempipe_engine::connect(&dir.join("state.db").display().to_string())
            .await
            .unwrap();
        store.limiter_list().await.unwrap()
    });
    let of = |url: &str| {
        limiters
            .iter()
            .find(|l| l.config.name.contains(url))
            .unwrap_or_else(|| panic!("no limiter for {url}: {limiters:?}"))
    };
    assert!(of(&down.url).circuit_opens >= 1);
    assert_eq!(
        of(&up.url).circuit_opens,
        0,
        "the healthy API's breaker never opened"
    );
}

#[test]
fn a_terminal_gets_a_live_display_and_a_labelled_summary() {
    let dir = TempDir::new("cli-tty");
    let out = dir.join("out.mp4").display().to_string();
    let cmd = format!(
        "{} process {} -o {out} --db {} --artifacts {} --captions off --preset ultrafast",
        env!("CARGO_BIN_EXE_idempipe"),
        sample(),
        dir.join("state.db").display(),
        dir.join("artifacts").display(),
    );
    // `script` runs the command on a pseudo-terminal and copies what it drew.
    let run = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove("IDEMPIPE_LOG")
        .env("COLUMNS", "120")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{screen}");
    assert!(
        screen.contains("frames (") || screen.contains("frames/s"),
        "a live display was drawn:\n{screen}"
    );
    for label in [
        "completed after",
        "frames:    120 of 120 enhanced",
        "this time: 120 enhanced at",
        "output:",
        "thumbnail:",
        "report:",
    ] {
        assert!(
            screen.contains(label),
            "the summary has {label:?}:\n{screen}"
        );
    }
    assert!(!screen.contains("INFO"), "{screen}");
}

#[test]
fn version_names_the_schema_and_completions_are_printed() {
    let out = bin().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!(
            "idempipe {} (schema {})",
            env!("CARGO_PKG_VERSION"),
            idempipe_engine::schema_version()
        )
    );
    for (shell, marker) in [
        ("bash", "_idempipe()"),
        ("zsh", "#compdef idempipe"),
        ("fish", "complete -c idempipe"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("enhance-server"),
            "{shell} completes subcommands"
        );
    }
}
