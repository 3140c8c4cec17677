//! `captions`: join the windows' transcripts into cues and write WebVTT and SRT files.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_captions::{Segment, cues_from, to_srt, to_vtt};
use idempipe_engine::{Handler, HandlerError, ItemResult, ItemStatus, Job};
use serde_json::{Value, json};

use crate::pipeline::context::{Ctx, storage_failure, transient};
use crate::pipeline::{report, stage};

/// Why a run has no captions, as stated in its report.
pub(crate) mod reason {
    /// Captions were not asked for.
    pub(crate) const OFF: &str = "captions are off";
    /// The input has no audio stream.
    pub(crate) const NO_AUDIO: &str = "the input has no audio track";
    /// The voice activity detector found no speech (silence, noise or music only).
    pub(crate) const SILENT: &str = "no speech was detected in the audio";
    /// The audio has sound but the model heard no words.
    pub(crate) const NO_SPEECH: &str = "no speech was recognised in the audio";
}

/// Writes `OUTPUT.vtt` and `OUTPUT.srt` when there is speech; otherwise records why
/// there are no captions (never a failure).
pub(crate) struct Captions(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Captions {
    async fn handle(&self, job: &Job) -> ItemResult {
        let params = self.0.params(job.run_id).await?;
        if let Some(reason) = job.payload["skip"].as_str() {
            return Ok(json!({ "cues": 0, "reason": reason }));
        }
        let (windows, languages) = transcripts(&self.0, job.run_id).await?;
        let cues = cues_from(&windows);
        // The language most of the words were heard in (detected with `auto`).
        let language = languages
            .into_iter()
            .max_by_key(|&(_, words)| words)
            .map_or_else(|| params.settings.captions.language.clone(), |(l, _)| l);
        if cues.is_empty() {
            let reason = if windows.is_empty() {
                reason::SILENT
            } else {
                reason::NO_SPEECH
            };
            tracing::info!(run = job.run_id, reason, "no captions");
            return Ok(json!({ "cues": 0, "windows": windows.len(), "reason": reason }));
        }
        let (vtt, srt) = (params.captions_vtt(), params.captions_srt());
        for (path, text) in [(&vtt, to_vtt(&cues)), (&srt, to_srt(&cues))] {
            self.0
                .storage
                .put_bytes(path, text.into_bytes())
                .await
                .map_err(storage_failure)?;
        }
        let words: usize = cues.iter().map(|c| c.text.split_whitespace().count()).sum();
        tracing::info!(
            run = job.run_id,
            cues = cues.len(),
            words,
            "captions written"
        );
        Ok(json!({
            "cues": cues.len(),
            "words": words,
            "windows": windows.len(),
            "vtt": vtt,
            "srt": srt,
            "language": language,
        }))
    }
}

/// Every window's start and segments, from the completed `transcribe` items, and the
/// languages they were transcribed in with the number of words in each.
async fn transcripts(
    ctx: &Ctx,
    run_id: i64,
) -> Result<(Vec<(f64, Vec<Segment>)>, Vec<(String, usize)>), HandlerError> {
    let items = report::list(
        &ctx.store,
        run_id,
        Some(stage::TRANSCRIBE),
        vec![ItemStatus::Completed],
    )
    .await
    .map_err(transient)?;
    let mut languages: Vec<(String, usize)> = Vec::new();
    let windows = items
        .into_iter()
        .map(|item| {
            let result = item.result.unwrap_or(Value::Null);
            let segments: Vec<Segment> =
                serde_json::from_value(result["transcript"]["segments"].clone()).map_err(|e| {
                    HandlerError::permanent(format!("{} result has no segments: {e}", item.key))
                })?;
            if let Some(language) = result["transcript"]["language"].as_str() {
                let words: usize = segments
                    .iter()
                    .map(|s| s.text.split_whitespace().count())
                    .sum();
                match languages.iter_mut().find(|(l, _)| l == language) {
                    Some((_, n)) => *n += words,
                    None => languages.push((language.to_string(), words)),
                }
            }
            Ok((result["start_secs"].as_f64().unwrap_or(0.0), segments))
        })
        .collect::<Result<Vec<_>, HandlerError>>()?;
    Ok((windows, languages))
}
