//! Running ffmpeg/ffprobe to completion and turning failures into [`MediaError`]s.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};

use tokio::process::Command;

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

/// A command for `tool` with stdin closed and the child killed if the future is dropped.
pub(crate) fn command<I, S>(tool: &'static str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(tool);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs `cmd` to completion; a spawn failure or non-zero exit becomes an error about `path`.
pub(crate) async fn run(
    tool: &'static str,
    mut cmd: Command,
    path: &Path,
) -> Result<Output, MediaError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = cmd
        .output()
        .await
        .map_err(|source| spawn_error(tool, path, source))?;
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
