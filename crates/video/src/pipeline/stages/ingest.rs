//! `ingest`: mark the run's artifact directory as the run's and probe the input; a bad
//! input fails the run at once.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, NewItem};
use serde_json::json;

use crate::media::{self, MediaError};
use crate::pipeline::context::{Ctx, storage_failure};
use crate::pipeline::disk::{Marker, ensure_marker};
use crate::pipeline::stage;

/// Probes the input and spawns `split`.
pub(crate) struct Ingest(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Ingest {
    async fn handle(&self, job: &Job) -> ItemResult {
        let (params, dir) = self.0.run(job.run_id).await?;
        if !params.uid.is_empty() {
            let marker = Marker {
                uid: params.uid.clone(),
                run_id: job.run_id,
                input: params.input.clone(),
                output: params.output.clone(),
            };
            ensure_marker(&self.0.storage, &dir.root(), &marker)
                .await
                .map_err(storage_failure)?;
        }
        let input = self
            .0
            .storage
            .fetch(&params.input)
            .await
            .map_err(storage_failure)?;
        let mut info = media::probe(input.path()).await.map_err(probe_error)?;
        let meta = tokio::fs::metadata(input.path())
            .await
            .map_err(HandlerError::transient)?;
        if meta.len() != params.input_size {
            return Err(HandlerError::permanent(format!(
                "{}: changed since run {} was created ({} bytes, now {}); run process again to start a new run",
                params.input.display(),
                job.run_id,
                params.input_size,
                meta.len()
            )));
        }
        let (w, h) = info.display_size();
        tracing::info!(run = job.run_id, input = %params.input.display(), frames = info.frame_count,
            fps = %info.fps, width = w, height = h, audio = info.has_audio, "probed input");
        let raw = std::mem::take(&mut info.raw);
        job.spawn(NewItem::new(
            stage::SPLIT,
            "split",
            serde_json::to_value(&info).expect("media info serialises"),
        ));
        info.raw = raw;
        Ok(json!(info))
    }
}

/// Everything wrong with the input itself is permanent: retrying cannot fix the file.
fn probe_error(e: MediaError) -> HandlerError {
    match e {
        MediaError::Io { .. } => HandlerError::transient(e),
        other => HandlerError::permanent(other),
    }
}
