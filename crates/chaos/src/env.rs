//! Where the suite runs: the idempipe binary, the sample videos, a scratch directory,
//! and how children are started and stopped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The suite's fixed surroundings.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The `idempipe` binary under test.
    pub(crate) bin: PathBuf,
    /// The folder of sample videos.
    pub(crate) media: PathBuf,
    /// Scratch directory of this suite run (removed at the end unless it failed).
    pub(crate) root: PathBuf,
    /// The short profile.
    pub(crate) quick: bool,
}

impl Env {
    /// A fresh directory for one scenario.
    pub(crate) fn scenario_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts `idempipe ARGS`, its output going to `log` (appended).
    pub(crate) fn spawn(&self, args: &[String], log: &Path) -> anyhow::Result<Child> {
        spawn_logged(Command::new(&self.bin), args, log)
    }
}

/// Starts `command ARGS` with stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(
    mut command: Command,
    args: &[String],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {args:?}"))
}

/// Runs a command to the end; fails with its output when it exits non-zero.
pub(crate) async fn run_checked(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends SIGKILL and reaps the child.
pub(crate) async fn sigkill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Sends SIGTERM (a clean stop) and waits up to `grace` before SIGKILL.
pub(crate) async fn sigterm(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = run_checked("kill", &["-TERM", &pid.to_string()]).await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        sigkill(child).await;
    }
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
