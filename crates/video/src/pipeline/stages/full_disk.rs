//! A full disk pauses an item instead of burning its attempts.
//!
//! Every stage writes files, and a disk that fills up (other programs, a small scratch
//! volume) usually frees again within seconds. Failing at once would spend an item's
//! attempt budget in a few backoffs and leave the run failed for `idempipe retry`; and
//! for a frame the API was already paid for, it would throw the answer away. So an
//! attempt that fails for a full disk waits and tries again, its lease renewed, for up to
//! [`PATIENCE`]; the warning it logs names the file and says `No space left on device`.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};

/// What a full disk says in an error: the OS's text, which ffmpeg repeats.
const DISK_FULL: &str = "No space left on device";
/// How long one attempt waits for space before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
/// The first pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `step`, and again while it fails because the disk is full, for up to
/// [`PATIENCE`] (less if the engine asks the job to stop). A full disk that outlasts it
/// fails the attempt as the worker's own failure ([`HandlerError::local`]), which the
/// stage's limiter does not hold against the outside service.
pub(crate) async fn wait_out_full_disk<T, F, Fut>(job: &Job, mut step: F) -> Result<T, HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HandlerError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let error = match step().await {
            Ok(value) => return Ok(value),
            Err(e) if is_disk_full(&e) => e,
            Err(e) => return Err(e),
        };
        let message = error.detail()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if started.elapsed() >= PATIENCE || job.is_cancelled() {
            return Err(HandlerError::local(message));
        }
        tracing::warn!(run = job.run_id, stage = %job.stage, key = %job.key, error = %message, "disk full: waiting for space, then trying again");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = job.cancelled() => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Whether `e` failed for a full disk.
fn is_disk_full(e: &HandlerError) -> bool {
    e.detail()["message"]
        .as_str()
        .is_some_and(|m| m.contains(DISK_FULL))
}

/// A stage's handler whose attempts wait out a full disk ([`wait_out_full_disk`] around
/// the whole attempt): for stages whose work can simply be done again (decoding,
/// encoding, muxing), not for one that calls a paid API (the frame stage waits around
/// its write alone).
pub(crate) struct WaitOutFullDisk<H>(pub(crate) H);

#[async_trait]
impl<H: Handler> Handler for WaitOutFullDisk<H> {
    async fn handle(&self, job: &Job) -> ItemResult {
        wait_out_full_disk(job, || self.0.handle(job)).await
    }

    async fn limiter(&self, job: &Job) -> Result<Option<String>, HandlerError> {
        self.0.limiter(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_disk_is_waited_out() {
        let full =
            HandlerError::transient("/a/frame.rgb: write: No space left on device (os error 28)");
        assert!(is_disk_full(&full));
        assert!(!is_disk_full(&HandlerError::transient(
            "connection refused"
        )));
        assert!(!is_disk_full(&HandlerError::permanent("bad payload")));
    }
}
