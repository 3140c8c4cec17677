//! The database's clock, carried forward on this machine's monotonic clock.
//!
//! Leases, backoff and limiter windows are timestamps compared across processes: if each
//! process used its own wall clock, one whose clock jumped (a bad NTP step, a VM restored
//! from a snapshot) would hand out leases that expire at once or never, and rescue the
//! live leases of every other worker. So workers take the time from the database, read
//! once and then advanced by the monotonic clock (which never jumps), re-read now and then.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::clock::{Clock, Millis};
use crate::error::StoreResult;
use crate::store::SharedStore;

/// How often the database's clock is read again (to follow a step of the server's own
/// clock; between readings the monotonic clock's drift is parts per million).
const RESYNC: Duration = Duration::from_secs(30);

/// The database's time as seen from this process; share it as a `SharedClock`.
#[derive(Debug)]
pub struct DatabaseClock {
    /// The database's time at a local instant.
    anchor: Mutex<(Millis, Instant)>,
}

impl DatabaseClock {
    /// Reads the database's clock and keeps re-reading it every 30 s in the background
    /// (a failed reading keeps the last one) for as long as the clock is in use.
    pub async fn start(store: SharedStore) -> StoreResult<Arc<Self>> {
        let clock = Arc::new(Self {
            anchor: Mutex::new(read(&store).await?),
        });
        let weak: Weak<Self> = Arc::downgrade(&clock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                let reading = read(&store).await;
                let Some(clock) = weak.upgrade() else { break };
                match reading {
                    Ok(anchor) => *clock.anchor.lock().unwrap_or_else(|e| e.into_inner()) = anchor,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the database's clock; keeping the last reading")
                    }
                }
            }
        });
        Ok(clock)
    }
}

/// One reading, placed at the middle of its round trip.
async fn read(store: &SharedStore) -> StoreResult<(Millis, Instant)> {
    let sent = Instant::now();
    let now = store.db_now().await?;
    Ok((now, sent + sent.elapsed() / 2))
}

impl Clock for DatabaseClock {
    fn now(&self) -> Millis {
        let (at, instant) = *self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        at + instant.elapsed().as_millis() as Millis
    }
}
