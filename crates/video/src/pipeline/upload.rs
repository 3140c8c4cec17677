//! Inputs and outputs in object storage: a local input is uploaded once next to the
//! run's `s3://` artifacts (so that workers on other machines can read it), and remote
//! inputs and outputs are checked before a run starts.

use std::path::{Path, PathBuf};

use super::disk::hash_file;
use super::error::PipelineError;
use super::start::ProcessRequest;
use crate::media::MediaError;
use crate::storage::{self, Scratch, Storage};

/// Where uploaded inputs go under the artifact root.
const INPUTS: &str = "inputs";

/// `request` with a local input uploaded to `ARTIFACTS/inputs/<hash>/<name>` when the
/// artifacts are in object storage; unchanged otherwise. The name holds the contents'
/// FNV-1a 64 hash and size, so submitting the same file again uploads nothing and finds
/// the same run.
pub async fn upload_input(
    storage: &Storage,
    request: &ProcessRequest,
) -> Result<ProcessRequest, PipelineError> {
    if storage::is_remote(&request.input) || !storage::is_remote(&request.artifacts) {
        return Ok(request.clone());
    }
    let (size, hash) = hash_file(&request.input)
        .await
        .map_err(|e| MediaError::reading(&request.input, "read", e))?;
    let name = request
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let location = request
        .artifacts
        .join(INPUTS)
        .join(format!("{hash}-{size}"))
        .join(name);
    if storage.size(&location).await? == Some(size) {
        tracing::info!(input = %location.display(), "the input is uploaded already");
    } else {
        tracing::info!(input = %request.input.display(), to = %location.display(), bytes = size, "uploading the input");
        storage.publish_file(&request.input, &location).await?;
    }
    Ok(ProcessRequest {
        input: location,
        ..request.clone()
    })
}

/// The size of the remote input `location`; a missing object is the input's
/// [`MediaError::NotFound`].
pub(crate) async fn remote_size(location: &Path) -> Result<u64, PipelineError> {
    let storage = Storage::new(Scratch::unchecked(std::env::temp_dir()));
    storage.size(location).await?.ok_or_else(|| {
        PipelineError::Media(MediaError::NotFound {
            path: location.to_owned(),
        })
    })
}

/// Checks that the bucket of a remote output answers with the credentials at hand (a
/// HEAD of the output's key: present or absent both pass).
pub async fn check_remote_output(storage: &Storage, output: &Path) -> Result<(), PipelineError> {
    storage::check_location(output)?;
    storage
        .exists(output)
        .await
        .map(|_| ())
        .map_err(|e| PipelineError::Output {
            path: PathBuf::from(output),
            detail: e.to_string(),
        })
}
