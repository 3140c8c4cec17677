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
use crate::storage::{Storage, StorageError, is_remote};

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
/// its report and summary record the output's stamp: size, time and inode of a local
/// file, size and entity tag of an object). Works the same for `s3://` outputs, whose
/// objects are looked up through `storage`. `--overwrite` skips this check.
pub async fn check_output_owner(
    store: &SharedStore,
    storage: &Storage,
    request: &ProcessRequest,
) -> Result<(), PipelineError> {
    let output = location(&request.output)?;
    let files = [
        output.clone(),
        sibling(&output, "thumb.jpg"),
        sibling(&output, "report.json"),
    ];
    let mut existing = Vec::new();
    for file in &files {
        let there = storage
            .exists(file)
            .await
            .map_err(|e| PipelineError::Output {
                path: file.clone(),
                detail: format!("cannot tell whether something is already there: {e}"),
            })?;
        if there {
            existing.push(file);
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let params = run_params(request).await?;
    let fingerprint = output.to_string_lossy().into_owned();
    let own = store
        .run_find(PIPELINE, &fingerprint)
        .await?
        .filter(|run| same_identity(run, &params));
    let found = Found {
        report: storage
            .get_bytes(&files[2])
            .await
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_slice(&t).ok()),
        stamp: output_stamp(storage, &output).await.ok().flatten(),
    };
    let foreign: Vec<String> = existing
        .into_iter()
        .filter(|p| {
            !own.as_ref()
                .is_some_and(|run| run_wrote(run, &files, p, &found))
        })
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

/// What is at the output now: the report next to it (parsed) and the output's stamp.
struct Found {
    report: Option<serde_json::Value>,
    stamp: Option<serde_json::Value>,
}

/// What identifies the file or object at `output` now (`None`: nothing there): a local
/// file's size, modification time, device and inode; an object's location, size and
/// entity tag. A run records it in its report and summary, so a later check knows the
/// output as its own only while nobody has replaced it.
pub(crate) async fn output_stamp(
    storage: &Storage,
    output: &Path,
) -> Result<Option<serde_json::Value>, StorageError> {
    if !is_remote(output) {
        return Ok(file_stamp(output));
    }
    Ok(storage
        .version(output)
        .await?
        .map(|v| serde_json::json!({ "location": output, "size": v.size, "e_tag": v.e_tag })))
}

/// Whether `run` wrote `path`, one of `files` (output, thumbnail, report).
fn run_wrote(run: &Run, files: &[PathBuf; 3], path: &Path, found: &Found) -> bool {
    let [output, _thumbnail, report] = files;
    let uid = run.params["uid"].as_str().unwrap_or_default();
    let report_is_own = found
        .report
        .as_ref()
        .filter(|r| !uid.is_empty() && r["uid"].as_str() == Some(uid));
    if path == output {
        let recorded = |r: &serde_json::Value| stamp_is(&r["output_file"], output, found);
        let by_summary = if is_remote(output) {
            run.summary.as_ref().is_some_and(recorded)
        } else {
            wrote_output(run, output)
        };
        return by_summary || report_is_own.is_some_and(recorded);
    }
    if path == report {
        return report_is_own.is_some();
    }
    // The thumbnail carries no stamp: it is the run's while the run is unfinished or
    // its report is its own.
    run.status != RunStatus::Completed || report_is_own.is_some()
}

/// Whether `recorded` (a summary's or report's `output_file`) is the stamp of what is at
/// `output` now. Object stamps recorded before sizes and entity tags were (a location
/// only) match the same location.
fn stamp_is(recorded: &serde_json::Value, output: &Path, found: &Found) -> bool {
    if is_remote(output) && recorded.get("size").is_none() {
        return recorded["location"].as_str() == output.to_str();
    }
    found.stamp.as_ref().is_some_and(|s| recorded == s)
}

/// Whether the completed `run`'s summary records the file now at `output`. An object
/// in a bucket is known by the location its summary names.
pub(crate) fn wrote_output(run: &Run, output: &Path) -> bool {
    if is_remote(output) {
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
