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
    read_blocking, read_slot_blocking, read_written_slot_blocking, release_slot_blocking,
    slot_size_blocking, write_blocking, write_slot_blocking,
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
                let original = match read_original(&self.0, &work).await? {
                    Source::Original(original) => original,
                    Source::Enhanced(enhanced) => return Ok(Score::of(&enhanced).to_json()),
                };
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
            let original = match read_original(&self.0, &work).await? {
                Source::Original(original) => original,
                Source::Enhanced(enhanced) => return Ok(Score::of(&enhanced).to_json()),
            };
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
    let enhanced = work.enhanced.clone();
    let request = tokio::task::spawn_blocking(move || {
        let frame = read_original_blocking(&original, &enhanced, slot);
        drop(copy);
        let frame = match frame? {
            Source::Original(frame) => frame,
            Source::Enhanced(enhanced) => {
                let score = Score::of(&enhanced);
                FRAMES.give(enhanced.into_raw());
                return Ok(Err(score));
            }
        };
        let request = encoder.request(&frame, &params);
        FRAMES.give(frame.into_raw());
        Ok::<_, MediaError>(Ok(request))
    })
    .await
    .map_err(transient)?
    .map_err(original_unreadable)?;
    let request = match request {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => return Ok(Err(e)),
        // A rerun after the enhanced frame was written and its original released.
        Err(score) => return Ok(Ok(score)),
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
    let original = work.original.clone();
    let kept = tokio::task::spawn_blocking(move || {
        let frame = answer.image()?;
        let score = Score::of(&frame);
        // Written, its buffer serves the next frame; not written, it is kept to retry.
        let unwritten = match write_enhanced_blocking(&target, &original, slot, &frame) {
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

/// A frame whose original is missing (or released without its enhanced frame written)
/// fails for good; other read errors may pass.
fn original_unreadable(e: MediaError) -> HandlerError {
    match e {
        MediaError::NotFound { .. } | MediaError::ReleasedFrame { .. } => gone(&e),
        other => transient(other),
    }
}

/// The original is gone: nothing a retry can fix.
fn gone(e: &dyn std::fmt::Display) -> HandlerError {
    HandlerError::permanent(format!(
        "{e}: the segment's frames are gone (was the artifact directory cleaned?)"
    ))
}

async fn read_original(ctx: &Ctx, work: &FrameWork) -> Result<Source, HandlerError> {
    let (original, copy) = local_original(ctx, work).await?;
    let (enhanced, slot) = (work.enhanced.clone(), work.slot);
    tokio::task::spawn_blocking(move || {
        let frame = read_original_blocking(&original, &enhanced, slot);
        drop(copy);
        frame
    })
    .await
    .map_err(transient)?
    .map_err(original_unreadable)
}

/// Writes an enhanced frame into slot `slot` of its segment's file of enhanced frames,
/// or as a frame file; once written, its original's slot in `original` is released.
fn write_enhanced_blocking(
    path: &Path,
    original: &Path,
    slot: Option<u64>,
    frame: &RgbImage,
) -> Result<(), MediaError> {
    match slot {
        Some(slot) => write_slot_blocking(path, slot, frame)?,
        None => write_blocking(path, frame)?,
    }
    release_original_blocking(original, slot, frame);
    Ok(())
}

/// What a frame item starts from.
enum Source {
    /// The original, to enhance.
    Original(RgbImage),
    /// The enhanced frame, written by an earlier attempt that released the original.
    Enhanced(RgbImage),
}

/// Reads an original: frame `slot` of its segment's file of originals (into a buffer
/// of [`FRAMES`]), or a frame file. A released original (its slot is a hole) is never
/// read as a frame: the enhanced frame an earlier attempt wrote before releasing it is
/// read instead, and without one the read fails ([`MediaError::ReleasedFrame`]).
fn read_original_blocking(
    path: &Path,
    enhanced: &Path,
    slot: Option<u64>,
) -> Result<Source, MediaError> {
    let Some(slot) = slot else {
        return read_blocking(path).map(Source::Original);
    };
    match read_slot_blocking(path, slot, FRAMES.take()) {
        Ok(frame) => Ok(Source::Original(frame)),
        Err(released @ MediaError::ReleasedFrame { .. }) => {
            let (width, height) = slot_size_blocking(path)?;
            read_written_slot_blocking(enhanced, slot, width, height, FRAMES.take())?
                .map(Source::Enhanced)
                .ok_or(released)
        }
        Err(e) => Err(e),
    }
}

/// Releases the disk of frame `slot` of a segment's file of originals once its enhanced
/// `frame` is written: nothing reads it again ([`read_original_blocking`] reads the
/// enhanced frame instead), so a segment waiting for the API holds one copy of each
/// frame, not two. A failed release only costs disk until the segment's encode.
fn release_original_blocking(path: &Path, slot: Option<u64>, frame: &RgbImage) {
    let Some(slot) = slot else { return };
    if is_remote(path) {
        return;
    }
    if let Err(e) = release_slot_blocking(path, slot, frame.width(), frame.height()) {
        tracing::warn!(error = %e, "could not release an enhanced frame's original");
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
        let original = work.original.clone();
        return tokio::task::spawn_blocking(move || {
            write_enhanced_blocking(&path, &original, slot, &frame)
        })
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

    /// A released original is never sent: a rerun reads the enhanced frame written before
    /// the release, and without one the frame fails for good (never a frame of zeros).
    #[test]
    fn released_originals_read_as_their_enhanced_frame_or_not_at_all() {
        let dir = idempipe_testkit::TempDir::new("released");
        let (originals, enhanced) = (dir.join("originals.rgb"), dir.join("enhanced.rgb"));
        let flat = |v| RgbImage::from_pixel(64, 48, image::Rgb([v; 3]));
        for slot in 0..3 {
            write_slot_blocking(&originals, slot, &flat(5)).unwrap();
        }
        // Slot 0: written, which releases its original; slot 1: released alone.
        write_enhanced_blocking(&enhanced, &originals, Some(0), &flat(9)).unwrap();
        release_original_blocking(&originals, Some(1), &flat(9));
        let read = |slot| read_original_blocking(&originals, &enhanced, Some(slot));
        assert!(matches!(read(0), Ok(Source::Enhanced(f)) if f == flat(9)));
        assert!(matches!(
            read(1),
            Err(MediaError::ReleasedFrame { slot: 1, .. })
        ));
        assert!(matches!(
            original_unreadable(read(1).err().unwrap()),
            HandlerError::Permanent(_)
        ));
        assert!(matches!(read(2), Ok(Source::Original(f)) if f == flat(5)));
    }

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
