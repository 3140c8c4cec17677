//! `transcribe`: speech to text for one window of the audio.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_captions::audio::read_pcm_window;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::json;

use super::WindowWork;
use super::frame::classify;
use crate::pipeline::context::{Ctx, payload, storage_failure, transient};
use crate::pipeline::disk::check_manifest_quick;

/// Reads the window from the run's extracted audio and transcribes it with the run's
/// transcriber. The result holds the segments, timed from the window's start.
pub(crate) struct Transcribe(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Transcribe {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: WindowWork = payload(&job.payload)?;
        let params = self.0.params(job.run_id).await?;
        let captions = &params.settings.captions;
        if !params.uid.is_empty() {
            // Uid and size only: hashing the whole track for every window would cost more
            // than the window itself.
            check_manifest_quick(&self.0.storage, &work.audio, &params.uid)
                .await
                .map_err(|why| {
                    HandlerError::permanent(format!(
                        "{why}: the extracted audio is damaged or not this run's"
                    ))
                })?;
        }
        let audio = self.0.storage.fetch(&work.audio).await.map_err(|e| {
            if e.is_not_found() {
                HandlerError::permanent(format!(
                    "{e}: the extracted audio is gone (was the artifact directory cleaned?)"
                ))
            } else {
                storage_failure(e)
            }
        })?;
        let path = audio.path().to_owned();
        let window = work.window;
        let samples = tokio::task::spawn_blocking(move || read_pcm_window(&path, window))
            .await
            .map_err(transient)?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HandlerError::permanent(format!(
                    "{}: the extracted audio is gone (was the artifact directory cleaned?)",
                    work.audio.display()
                )),
                _ => transient(format!("{}: {e}", work.audio.display())),
            })?;
        let transcriber = self.0.transcriber(captions).await?;
        if !captions.is_local() {
            job.begin_external_call().await.map_err(transient)?;
        }
        let started = std::time::Instant::now();
        let transcript = transcriber
            .transcribe(samples, &job.idempotency_key())
            .await
            .map_err(|e| classify(&e))?;
        let secs = started.elapsed().as_secs_f64();
        tracing::debug!(run = job.run_id, key = %job.key, secs, segments = transcript.segments.len(), "window transcribed");
        Ok(json!({
            "start_secs": window.start_secs(),
            "secs": window.secs(),
            "transcriber": transcriber.name(),
            "elapsed_secs": secs,
            "transcript": transcript,
        }))
    }
}
