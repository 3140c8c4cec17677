//! Watching a run through the database: its id, frames completed over time, its end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{ItemStatus, OpenMode, RunStatus, SharedStore};

/// A run's progress, sampled in the background.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    store: SharedStore,
    /// The run watched.
    pub(crate) run_id: i64,
    samples: Arc<Mutex<Vec<(Instant, i64)>>>,
    sampler: Arc<tokio::task::JoinHandle<()>>,
}

impl Watch {
    /// Waits (up to `timeout`) for the database at `url` to hold a run, then samples its
    /// completed frames every 200 ms.
    pub(crate) async fn attach(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let deadline = Instant::now() + timeout;
        let pause = || tokio::time::sleep(Duration::from_millis(100));
        // One store for the whole watch: each connection pool keeps a listener alive.
        let store = loop {
            match idempipe_engine::connect_with(url, OpenMode::MustExist).await {
                Ok(store) => break store,
                Err(e) if Instant::now() > deadline => bail!("cannot open {url}: {e}"),
                Err(_) => pause().await,
            }
        };
        let run_id = loop {
            if let Ok(runs) = store.run_list(1).await
                && let Some(run) = runs.first()
            {
                break run.id;
            }
            if Instant::now() > deadline {
                bail!("no run appeared in {url} within {timeout:?}");
            }
            pause().await;
        };
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = {
            let (store, samples) = (store.clone(), samples.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(done) = completed_frames(&store, run_id).await {
                        samples
                            .lock()
                            .expect("samples")
                            .push((Instant::now(), done));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Ok(Self {
            store,
            run_id,
            samples,
            sampler: Arc::new(sampler),
        })
    }

    /// Frames completed at the last sample.
    pub(crate) fn completed_now(&self) -> i64 {
        self.samples
            .lock()
            .expect("samples")
            .last()
            .map_or(0, |s| s.1)
    }

    /// Waits until the run is no longer running, or `timeout`; returns its status
    /// (`None` on timeout).
    pub(crate) async fn wait_end(&self, timeout: Duration) -> Option<RunStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(run) = self.store.run_get(self.run_id).await
                && run.status != RunStatus::Running
            {
                return Some(run.status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Time from `since` until frames first moved past their count at `since` (or the
    /// run ended), per the samples.
    pub(crate) fn recovery(&self, since: Instant, ended: Option<Instant>) -> Option<Duration> {
        let samples = self.samples.lock().expect("samples");
        let before = samples
            .iter()
            .take_while(|s| s.0 <= since)
            .last()
            .map_or(0, |s| s.1);
        samples
            .iter()
            .find(|s| s.0 > since && s.1 > before)
            .map(|s| s.0)
            .or(ended)
            .map(|t| t.saturating_duration_since(since))
    }

    /// Completed frame items of the run.
    pub(crate) async fn completed_frames(&self) -> anyhow::Result<i64> {
        completed_frames(&self.store, self.run_id).await
    }

    /// Running items held by the worker named `name`.
    pub(crate) async fn held_items(&self, name: &str) -> anyhow::Result<Vec<i64>> {
        let items = self
            .store
            .item_list(&ItemFilter {
                run_id: self.run_id,
                stage: None,
                statuses: vec![ItemStatus::Running],
                limit: 1_000_000,
                after_id: 0,
            })
            .await?;
        Ok(items
            .iter()
            .filter(|i| i.worker.as_deref() == Some(name))
            .map(|i| i.id)
            .collect())
    }

    /// Whether the items `ids` are all completed.
    pub(crate) async fn completed_among(&self, ids: &[i64]) -> anyhow::Result<bool> {
        let items = self
            .store
            .item_list(&ItemFilter {
                run_id: self.run_id,
                stage: None,
                statuses: vec![ItemStatus::Completed],
                limit: 1_000_000,
                after_id: 0,
            })
            .await?;
        Ok(ids.iter().all(|id| items.iter().any(|i| i.id == *id)))
    }

    /// The last errors of the run's failed and dead items, as JSON text.
    pub(crate) async fn errors(&self) -> anyhow::Result<Vec<String>> {
        let items = self
            .store
            .item_list(&ItemFilter {
                run_id: self.run_id,
                stage: None,
                statuses: vec![ItemStatus::Failed, ItemStatus::Dead],
                limit: 1_000_000,
                after_id: 0,
            })
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| i.last_error.as_ref().map(|e| e.to_string()))
            .collect())
    }

    /// The run's dead items, as `stage key (attempts)`.
    pub(crate) async fn dead_items(&self) -> anyhow::Result<Vec<String>> {
        let items = self
            .store
            .item_list(&ItemFilter {
                run_id: self.run_id,
                stage: None,
                statuses: vec![ItemStatus::Dead],
                limit: 1000,
                after_id: 0,
            })
            .await?;
        Ok(items
            .iter()
            .map(|i| format!("{} {} ({} attempts)", i.stage, i.key, i.attempts))
            .collect())
    }

    /// How many runs the database holds.
    pub(crate) async fn run_count(&self) -> anyhow::Result<usize> {
        Ok(self.store.run_list(100).await?.len())
    }

    /// Whether an item of `stage` is running now.
    pub(crate) async fn stage_running(&self, stage: &str) -> bool {
        self.store
            .item_list(&ItemFilter {
                run_id: self.run_id,
                stage: Some(stage.into()),
                statuses: vec![ItemStatus::Running],
                limit: 1,
                after_id: 0,
            })
            .await
            .is_ok_and(|items| !items.is_empty())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if Arc::strong_count(&self.sampler) == 1 {
            self.sampler.abort();
        }
    }
}

async fn completed_frames(store: &SharedStore, run_id: i64) -> anyhow::Result<i64> {
    let counts = store.item_counts(run_id).await?;
    Ok(counts
        .iter()
        .filter(|c| c.stage == "frame" && c.status == "completed")
        .map(|c| c.count)
        .sum())
}
