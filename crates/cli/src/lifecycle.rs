//! Stopping cleanly, and at once when asked twice; counts that must be at least one.
//!
//! The first SIGINT (Ctrl-C) or SIGTERM starts a clean stop: handlers stop, their items are
//! given back without using an attempt, and ffmpeg children (in their own process groups,
//! so the terminal's Ctrl-C does not reach them) are killed with them. A second signal
//! quits at once with exit code 130; items still held are rescued when their leases expire.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// Exit code when interrupted by a signal (128 + SIGINT).
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

/// Listens for SIGINT and SIGTERM from now on. The returned future resolves at the first
/// signal (after printing that a second one quits at once); a second signal kills the
/// media children and exits the process with [`EXIT_INTERRUPTED`].
pub(crate) fn stop_signals() -> impl Future<Output = ()> + Send + 'static {
    let (first_tx, first_rx) = oneshot::channel::<()>();
    // Registered before returning, so no signal between now and the first await is lost.
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = streams else {
            tracing::warn!("cannot listen for SIGINT/SIGTERM; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: press Ctrl-C again to quit at once");
        let _ = first_tx.send(());
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let killed = idempipe_video::media::kill_children();
        eprintln!(
            "quitting at once ({killed} ffmpeg process(es) killed); items still held are \
             rescued when their leases expire"
        );
        std::process::exit(EXIT_INTERRUPTED);
    });
    async move {
        // A dropped sender means the listener could not start: never resolve.
        if first_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Parses a count of handler calls at once: 0 would never run anything, so it is refused
/// before any work starts.
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => {
            Err("must be at least 1 (0 handler calls at once would never run anything)".into())
        }
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; expected a whole number of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("x").is_err());
    }
}
