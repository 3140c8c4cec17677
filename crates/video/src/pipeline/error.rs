//! The error type of the pipeline's entry points.

use std::path::PathBuf;

use idempipe_engine::StoreError;

use crate::media::MediaError;
use crate::storage::StorageError;

/// What can go wrong before or around a run; messages name the file, URL or field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The input cannot be used.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The output cannot be written where asked.
    #[error("cannot write the output {path}: {detail}")]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The enhancement API (or a transcription service) does not answer.
    #[error("API {url} is unreachable: {detail}")]
    ApiUnreachable {
        /// The base URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// A setting is invalid; the message names it.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A run's stored parameters are not this pipeline's.
    #[error("run {run_id}: stored parameters are unusable: {detail}")]
    BadRun {
        /// The run.
        run_id: i64,
        /// What is wrong.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in object storage (or the local artifact directory) cannot be used.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
