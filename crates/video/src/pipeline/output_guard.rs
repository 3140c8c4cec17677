//! Keeping inputs and unrelated files safe: the output is never the input (same device
//! and inode, so symlinks and hard links count), its extension names a container we
//! write, and a file already at the output (or its thumbnail or report) is replaced only
//! if this run wrote it, unless the user says to overwrite.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use idempipe_engine::{Run, RunStatus, SharedStore};

use super::PIPELINE;
use super::disk::file_stamp;
use super::error::PipelineError;
use super::settings::sibling;
use super::start::{ProcessRequest, location, run_params, same_identity};
use crate::media::Container;

/// Checks the output path on its own: its extension names a supported container, and
/// it is not the input itself (compared by device and inode).
pub async fn check_output_target(input: &Path, output: &Path) -> Result<(), PipelineError> {
    let out = location(output)?;
    Container::for_path(&out).map_err(|e| PipelineError::Output {
        path: out.clone(),
        detail: format!(
            "the extension names no supported container; use one of {} ({e})",
            Container::SUPPORTED
        ),
    })?;
    let (Ok(i), Ok(o)) = (
        tokio::fs::metadata(input).await,
        tokio::fs::metadata(&out).await,
    ) else {
        return Ok(());
    };
    if i.dev() == o.dev() && i.ino() == o.ino() {
        return Err(PipelineError::Output {
            path: out,
            detail: format!(
                "it is the input {} (same file); writing it would destroy the input: choose another output",
                input.display()
            ),
        });
    }
    Ok(())
}

/// Refuses when a file exists at the output, its thumbnail or its report that the run
/// `request` resumes did not write (the run with the same output, input and settings;
/// its report and summary record the output file's size, time and inode). `--overwrite`
/// skips this check.
pub async fn check_output_owner(
    store: &SharedStore,
    request: &ProcessRequest,
) -> Result<(), PipelineError> {
    let output = location(&request.output)?;
    let files = [
        output.clone(),
        sibling(&output, "thumb.jpg"),
        sibling(&output, "report.json"),
    ];
    let existing: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let params = run_params(request).await?;
    let fingerprint = output.to_string_lossy().into_owned();
    let own = store
        .run_find(PIPELINE, &fingerprint)
        .await?
        .filter(|run| same_identity(run, &params));
    let foreign: Vec<String> = existing
        .into_iter()
        .filter(|p| !own.as_ref().is_some_and(|run| run_wrote(run, &files, p)))
        .map(|p| p.display().to_string())
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(PipelineError::Output {
        path: output,
        detail: format!(
            "{}: already there and not written by this run; pass --overwrite (-y) to replace, or choose another output",
            foreign.join(", ")
        ),
    })
}

/// Whether `run` wrote `path`, one of `files` (output, thumbnail, report).
fn run_wrote(run: &Run, files: &[PathBuf; 3], path: &Path) -> bool {
    let [output, _thumbnail, report] = files;
    let uid = run.params["uid"].as_str().unwrap_or_default();
    let report_is_own = std::fs::read(report)
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .filter(|r| !uid.is_empty() && r["uid"].as_str() == Some(uid));
    if path == output {
        return wrote_output(run, output)
            || report_is_own.is_some_and(|r| stamp_matches(&r, output));
    }
    if path == report {
        return report_is_own.is_some();
    }
    // The thumbnail carries no stamp: it is the run's while the run is unfinished or
    // its report is its own.
    run.status != RunStatus::Completed || report_is_own.is_some()
}

/// Whether the completed `run`'s summary records the file now at `output`. An object
/// in a bucket has no local stamp: the summary naming it is what is known.
pub(crate) fn wrote_output(run: &Run, output: &Path) -> bool {
    if crate::storage::is_remote(output) {
        return run
            .summary
            .as_ref()
            .is_some_and(|s| s["output_file"]["location"].as_str() == output.to_str());
    }
    match &run.summary {
        Some(summary) if summary.get("output_file").is_some() => stamp_matches(summary, output),
        // Runs made before stamps were recorded: the file being there is all we know.
        _ => output.exists(),
    }
}

fn stamp_matches(report: &serde_json::Value, output: &Path) -> bool {
    file_stamp(output).is_some_and(|stamp| report["output_file"] == stamp)
}
