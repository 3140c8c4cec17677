//! "New work may be due": a signal from the store's committing calls to this process's
//! workers (and, on PostgreSQL, from other processes' NOTIFYs).
//!
//! A `watch` channel rather than a `Notify`: a receiver remembers a signal sent while it
//! was not waiting (a worker busy claiming, or between two waits), so a worker whose
//! claim came back empty just before new work committed still wakes at once instead of
//! sleeping until its next poll.

use std::sync::Arc;

use tokio::sync::watch;

/// The sending side, shared by a store's clones.
#[derive(Clone, Debug)]
pub(crate) struct WorkSignal(Arc<watch::Sender<()>>);

impl WorkSignal {
    /// A signal nobody has subscribed to yet.
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(())))
    }

    /// Tells every subscriber that new work may be due.
    pub(crate) fn notify(&self) {
        self.0.send_replace(());
    }

    /// A receiver that sees every signal sent from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal sent while nobody waits is seen by the next wait.
    #[tokio::test]
    async fn a_signal_sent_while_nobody_waits_is_not_lost() {
        let signal = WorkSignal::new();
        let mut rx = signal.subscribe();
        signal.notify();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .expect("the earlier signal wakes the wait")
            .unwrap();
        // Seen once: the next wait sleeps until a new signal.
        assert!(!rx.has_changed().unwrap());
    }
}
