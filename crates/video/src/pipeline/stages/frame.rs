//! `frame`: enhance one frame through the run's provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use idempipe_enhance::EnhanceParams;
use idempipe_enhance::buffers::FRAMES;
use idempipe_enhance::provider::{HttpProvider, Provider, ProviderError};
use image::RgbImage;
use serde_json::json;

use super::FrameWork;
use super::full_disk::wait_out_full_disk;
use super::score::Score;
use crate::media::frame_file::{
    read_blocking, read_slot_blocking, write_blocking, write_slot_blocking,
};
use crate::media::{MediaError, write_frame_file_shared};
use crate::pipeline::context::{Ctx, Enhancer, payload, storage_failure, transient};
use crate::pipeline::settings::OnFrameFailure;
use crate::storage::{Fetched, is_remote};

/// How the thumbnail is chosen, stated in results and the report.
pub(crate) const SCORE_CRITERION: &str = "score = contrast x sharpness of the enhanced frame's luma (standard deviation x mean absolute Laplacian), sampled on a grid at most 320 pixels wide: favours frames that are both well exposed and in focus over fades, black frames and motion blur; ties go to the earliest frame";

/// Reads the original, calls the provider with the item's idempotency key, writes the
/// enhanced frame atomically and returns its metrics.
///
/// Through an API, a frame costs two hops to the blocking pool: one reads the original
/// and encodes the request, the other decodes the answer, scores it and writes it.
pub(crate) struct Frame(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Frame {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: FrameWork = payload(&job.payload)?;
        let params = self.0.params(job.run_id).await?;
        let settings = &params.settings;
        let provider = self.0.provider(&settings.provider)?;
        let enhanced = match provider {
            Enhancer::Http(http) => {
                through_api(&self.0, job, &work, &http, settings.enhance).await?
            }
            Enhancer::Local(local) => {
                let original = read_original(&self.0, &work).await?;
                match local
                    .enhance(original, &settings.enhance, &job.idempotency_key())
                    .await
                {
                    Ok(enhanced) => {
                        let enhanced = Arc::new(enhanced);
                        write_paid_frame(&self.0, job, &work, &enhanced).await?;
                        // Sampled on a grid at most 320 wide: a small fraction of a
                        // millisecond, cheaper here than a hop to the blocking pool.
                        Ok(Score::of(&enhanced))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let e = match enhanced {
            Ok(score) => return Ok(score.to_json()),
            Err(e) => e,
        };
        let error = classify(&e);
        let last = job.budget_used >= self.0.options.frame_max_attempts;
        let give_up = matches!(error, HandlerError::Permanent(_)) || last;
        if settings.on_frame_failure == OnFrameFailure::KeepOriginal && give_up {
            tracing::warn!(run = job.run_id, key = %job.key, error = %e, "keeping the original frame");
            let original = read_original(&self.0, &work).await?;
            write_paid_frame(&self.0, job, &work, &Arc::new(original)).await?;
            return Ok(json!({
                "kept_original": true,
                "error": error.detail(),
                "attempt": job.attempt,
            }));
        }
        Err(error)
    }

    /// The run's endpoint's limiter: runs against different APIs never share one.
    async fn limiter(&self, job: &Job) -> Result<Option<String>, HandlerError> {
        self.0.enhance_limiter(job.run_id).await.map(Some)
    }
}

/// Enhances a frame through the API: the original read and encoded in one hop, the call
/// marked and made, the answer decoded, scored and written in another. The provider's
/// failures (the answer's included) are the inner error, for the caller's policy.
async fn through_api(
    ctx: &Ctx,
    job: &Job,
    work: &FrameWork,
    http: &Arc<HttpProvider>,
    params: EnhanceParams,
) -> Result<Result<Score, ProviderError>, HandlerError> {
    let (original, copy) = local_original(ctx, work).await?;
    let encoder = http.clone();
    let slot = work.slot;
    let request = tokio::task::spawn_blocking(move || {
        let frame = read_original_blocking(&original, slot);
        drop(copy);
        let frame = frame?;
        let request = encoder.request(&frame, &params);
        FRAMES.give(frame.into_raw());
        Ok::<_, MediaError>(request)
    })
    .await
    .map_err(transient)?
    .map_err(original_unreadable)?;
    let request = match request {
        Ok(request) => request,
        Err(e) => return Ok(Err(e)),
    };
    job.begin_external_call().await.map_err(transient)?;
    let answer = match http.send(request, &job.idempotency_key()).await {
        Ok(answer) => answer,
        Err(e) => return Ok(Err(e)),
    };
    // Written where the encoder reads it: the location itself when local (atomically),
    // else a scratch file published below.
    let staged = if is_remote(&work.enhanced) {
        Some(
            ctx.storage
                .stage(&work.enhanced)
                .await
                .map_err(storage_failure)?,
        )
    } else {
        None
    };
    let target = staged
        .as_ref()
        .map_or_else(|| work.enhanced.clone(), |s| s.path().to_owned());
    let kept = tokio::task::spawn_blocking(move || {
        let frame = answer.image()?;
        let score = Score::of(&frame);
        // Written, its buffer serves the next frame; not written, it is kept to retry.
        let unwritten = match write_enhanced_blocking(&target, slot, &frame) {
            Ok(()) => {
                FRAMES.give(frame.into_raw());
                None
            }
            Err(e) => Some((Arc::new(frame), e)),
        };
        Ok::<_, ProviderError>((score, unwritten))
    })
    .await
    .map_err(transient)?;
    let (score, unwritten) = match kept {
        Ok(kept) => kept,
        Err(e) => return Ok(Err(e)),
    };
    match (unwritten, staged) {
        (None, None) => {}
        (None, Some(staged)) => ctx
            .storage
            .publish(&staged)
            .await
            .map_err(storage_failure)?,
        // The answer is paid for: write it again the usual way, which waits out a full disk.
        (Some((frame, e)), _) => {
            tracing::debug!(run = job.run_id, key = %job.key, error = %e, "writing the enhanced frame again");
            write_paid_frame(ctx, job, work, &frame).await?;
        }
    }
    Ok(Ok(score))
}

/// A local file with the frame's original: the original itself (a missing one fails
/// its read), or a copy of it when it is in object storage, kept while it is read.
async fn local_original(
    ctx: &Ctx,
    work: &FrameWork,
) -> Result<(PathBuf, Option<Fetched>), HandlerError> {
    if !is_remote(&work.original) {
        return Ok((work.original.clone(), None));
    }
    let file = ctx.storage.fetch(&work.original).await.map_err(|e| {
        if e.is_not_found() {
            gone(&e)
        } else {
            storage_failure(e)
        }
    })?;
    Ok((file.path().to_owned(), Some(file)))
}

/// A frame whose original is missing fails for good; other read errors may pass.
fn original_unreadable(e: MediaError) -> HandlerError {
    match e {
        MediaError::NotFound { .. } => gone(&e),
        other => transient(other),
    }
}

/// The original is gone: nothing a retry can fix.
fn gone(e: &dyn std::fmt::Display) -> HandlerError {
    HandlerError::permanent(format!(
        "{e}: the segment's frames are gone (was the artifact directory cleaned?)"
    ))
}

async fn read_original(ctx: &Ctx, work: &FrameWork) -> Result<RgbImage, HandlerError> {
    let (original, copy) = local_original(ctx, work).await?;
    let slot = work.slot;
    tokio::task::spawn_blocking(move || {
        let frame = read_original_blocking(&original, slot);
        drop(copy);
        frame
    })
    .await
    .map_err(transient)?
    .map_err(original_unreadable)
}

/// Writes an enhanced frame into slot `slot` of its segment's file of enhanced frames,
/// or as a frame file.
fn write_enhanced_blocking(
    path: &Path,
    slot: Option<u64>,
    frame: &RgbImage,
) -> Result<(), MediaError> {
    match slot {
        Some(slot) => write_slot_blocking(path, slot, frame),
        None => write_blocking(path, frame),
    }
}

/// Reads an original: frame `slot` of its segment's file of originals (into a buffer
/// of [`FRAMES`]), or a frame file.
fn read_original_blocking(path: &Path, slot: Option<u64>) -> Result<RgbImage, MediaError> {
    match slot {
        Some(slot) => read_slot_blocking(path, slot, FRAMES.take()),
        None => read_blocking(path),
    }
}

/// Writes a frame the provider answered. A full disk does not throw the answer away: the
/// write waits for space with the frame held ([`wait_out_full_disk`]).
async fn write_paid_frame(
    ctx: &Ctx,
    job: &Job,
    work: &FrameWork,
    frame: &Arc<RgbImage>,
) -> Result<(), HandlerError> {
    wait_out_full_disk(job, || write_enhanced(ctx, work, frame.clone())).await
}

/// Writes the enhanced frame where the encoder will read it: into its slot of the
/// segment's file of enhanced frames, or as a frame file (atomically: a local rename,
/// or one PUT).
async fn write_enhanced(
    ctx: &Ctx,
    work: &FrameWork,
    frame: Arc<RgbImage>,
) -> Result<(), HandlerError> {
    if !is_remote(&work.enhanced) {
        let (path, slot) = (work.enhanced.clone(), work.slot);
        return tokio::task::spawn_blocking(move || write_enhanced_blocking(&path, slot, &frame))
            .await
            .map_err(transient)?
            .map_err(transient);
    }
    let staged = ctx
        .storage
        .stage(&work.enhanced)
        .await
        .map_err(storage_failure)?;
    write_frame_file_shared(staged.path(), frame)
        .await
        .map_err(transient)?;
    ctx.storage.publish(&staged).await.map_err(storage_failure)
}

/// 429 with Retry-After waits as asked (pausing the shared limiter), other retryable
/// failures back off, permanent ones (400, 413) go dead at once.
pub(crate) fn classify(e: &ProviderError) -> HandlerError {
    let detail = |kind: &str| json!({ "kind": kind, "status": e.status(), "message": e.message() });
    match e {
        ProviderError::Retryable {
            retry_after: Some(after),
            ..
        } => {
            let mut d = detail("retry_after");
            d["after_ms"] = json!(after.as_millis() as u64);
            HandlerError::RetryAfter(*after, d)
        }
        ProviderError::Permanent { .. } => HandlerError::Permanent(detail("permanent")),
        _ => HandlerError::Transient(detail("transient")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn provider_errors_map_to_engine_outcomes() {
        let e = ProviderError::Retryable {
            retry_after: Some(Duration::from_secs(2)),
            status: Some(429),
            message: "slow".into(),
        };
        match classify(&e) {
            HandlerError::RetryAfter(d, v) => {
                assert_eq!(d, Duration::from_secs(2));
                assert_eq!(v["status"], 429);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&ProviderError::retryable("503")),
            HandlerError::Transient(_)
        ));
        let p = classify(&ProviderError::Permanent {
            status: Some(400),
            message: "bad image".into(),
        });
        assert_eq!(p.detail()["message"], "bad image");
        assert!(matches!(p, HandlerError::Permanent(_)));
    }
}
