//! Running ffmpeg/ffprobe to completion and turning failures into [`MediaError`]s.
//!
//! Every child runs in its own process group, so a Ctrl-C at the terminal reaches only
//! idempipe, which stops its children itself: dropping a handler kills them
//! (`kill_on_drop`), and [`kill_children`] kills those still running when the process
//! must exit at once.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Mutex;

use tokio::process::{Child, Command};

/// Process ids (each its own process group) of the children running now.
static CHILDREN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Keeps a child's pid in the registry while the child is owned.
#[derive(Debug)]
pub(crate) struct Tracked(Option<u32>);

impl Tracked {
    /// Registers `child` until the returned guard is dropped.
    pub(crate) fn new(child: &Child) -> Self {
        let pid = child.id();
        if let Some(pid) = pid {
            CHILDREN
                .lock()
                .expect("child registry")
                .get_or_insert_with(HashSet::new)
                .insert(pid);
        }
        Self(pid)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && let Some(set) = CHILDREN.lock().expect("child registry").as_mut()
        {
            set.remove(&pid);
        }
    }
}

/// Kills (SIGKILL) the process group of every ffmpeg/ffprobe child still running, for a
/// process about to exit without dropping its handlers. Returns how many were signalled.
pub fn kill_children() -> usize {
    let pids: Vec<u32> = CHILDREN
        .lock()
        .expect("child registry")
        .as_ref()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    if pids.is_empty() {
        return 0;
    }
    // No unsafe code in this workspace: the kill(1) program signals the groups.
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(pids.iter().map(|p| format!("-{p}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        tracing::warn!(error = %e, children = ?pids, "could not run kill(1) to stop the ffmpeg children");
    }
    pids.len()
}

use super::MediaError;

/// Waits for an ffmpeg child whose stderr is being collected by `stderr`; a failure
/// carries the tidied stderr and names `path`.
pub(crate) async fn wait_success(
    child: &mut tokio::process::Child,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    path: &Path,
) -> Result<(), MediaError> {
    let status = child.wait().await.map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        action: "wait for ffmpeg",
        source,
    })?;
    let stderr = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    if !status.success() {
        return Err(MediaError::ToolFailed {
            tool: FFMPEG,
            path: path.to_path_buf(),
            status,
            stderr: tidy_stderr(&stderr),
        });
    }
    Ok(())
}

/// ffmpeg's binary name.
pub(crate) const FFMPEG: &str = "ffmpeg";
/// ffprobe's binary name.
pub(crate) const FFPROBE: &str = "ffprobe";

/// Keeps error messages readable when a tool prints a lot.
const MAX_STDERR_CHARS: usize = 2000;

/// A command for `tool` with stdin closed, in its own process group (a terminal's Ctrl-C
/// does not reach it), and killed if its owner is dropped.
pub(crate) fn command<I, S>(tool: &'static str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    cmd
}

/// Runs `cmd` to completion; a spawn failure or non-zero exit becomes an error about `path`.
pub(crate) async fn run(
    tool: &'static str,
    mut cmd: Command,
    path: &Path,
) -> Result<Output, MediaError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|source| spawn_error(tool, path, source))?;
    let _tracked = Tracked::new(&child);
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            action: "wait for a media tool",
            source,
        })?;
    if !output.status.success() {
        return Err(MediaError::ToolFailed {
            tool,
            path: path.to_owned(),
            status: output.status,
            stderr: tidy_stderr(&output.stderr),
        });
    }
    Ok(output)
}

/// The error for a tool that could not be started.
pub(crate) fn spawn_error(tool: &'static str, path: &Path, source: std::io::Error) -> MediaError {
    MediaError::ToolMissing {
        tool,
        path: path.to_owned(),
        source,
    }
}

/// The tool's stderr as one short line-joined string, keeping the end (where the cause is).
pub(crate) fn tidy_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let count = joined.chars().count();
    if count <= MAX_STDERR_CHARS {
        return joined;
    }
    let tail: String = joined.chars().skip(count - MAX_STDERR_CHARS).collect();
    format!("...{tail}")
}
