//! The real `idempipe enhance-server`, started with a key ledger and the faults a
//! scenario injects, and what it counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idempipe_enhance::server::{KeyLedgerSnapshot, StatsSnapshot};
use tokio::process::Child;

use crate::env::{Env, sigterm};

/// A running enhancement server.
#[derive(Debug)]
pub(crate) struct Api {
    child: Child,
    /// Its base URL, as runs are given it.
    pub(crate) url: String,
    client: reqwest::Client,
}

/// What the server counted over a scenario, per frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Billing {
    /// Frames enhanced under two or more different idempotency keys.
    pub(crate) paid_twice: u64,
    /// Requests admitted beyond the first per key, summed over keys: the calls a server
    /// that ignored idempotency keys would have billed again.
    pub(crate) same_key_repeats: u64,
    /// Real enhancements in all.
    pub(crate) enhanced: u64,
    /// Answers by status, from `/stats`.
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// Answers held past the client's timeout.
    pub(crate) hung: u64,
    /// 200s with a garbage body.
    pub(crate) garbled: u64,
}

impl Api {
    /// Starts `idempipe enhance-server` on `listen` (`host:port`) with `faults` (extra
    /// flags) and waits until it answers `/healthz`; `url_host` is how runs reach it.
    pub(crate) async fn start(
        env: &Env,
        listen: &str,
        url_host: &str,
        faults: &[&str],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let port = listen.rsplit(':').next().unwrap_or_default();
        let mut args: Vec<String> = ["enhance-server", "--listen", listen, "--key-ledger"]
            .map(str::to_string)
            .into();
        if !listen.starts_with("127.") {
            args.push("--allow-remote".into());
        }
        args.extend(faults.iter().map(|f| f.to_string()));
        let child = env.spawn(&args, log)?;
        let api = Self {
            child,
            url: format!("http://{url_host}:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = api.client.get(format!("{}/healthz", api.url)).send().await
                && r.status().is_success()
            {
                return Ok(api);
            }
            if Instant::now() > deadline {
                bail!(
                    "enhance-server did not answer /healthz within 20 s (see {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the server billed, from `/stats` and `/stats/keys`.
    pub(crate) async fn billing(&self) -> anyhow::Result<Billing> {
        let stats: StatsSnapshot = self.get_json("/stats").await?;
        let ledger: KeyLedgerSnapshot = self.get_json("/stats/keys").await?;
        let mut keys_per_frame: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut billing = Billing {
            enhanced: stats.enhance_calls,
            by_status: stats.by_status.clone(),
            hung: ledger.hung,
            garbled: ledger.garbled,
            ..Billing::default()
        };
        for (key, count) in &ledger.keys {
            let frame = frame_of(key).with_context(|| format!("unexpected key {key:?}"))?;
            if count.enhanced > 0 {
                keys_per_frame.entry(frame).or_default().insert(key);
            }
            billing.same_key_repeats += count.admitted.saturating_sub(1);
        }
        billing.paid_twice = keys_per_frame.values().filter(|k| k.len() > 1).count() as u64;
        Ok(billing)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await?;
        let response = response.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Stops the server.
    pub(crate) async fn stop(mut self) {
        sigterm(&mut self.child, Duration::from_secs(5)).await;
    }
}

/// The frame an idempotency key `idempipe:RUN:frame:frame/000123` names (`frame/000123`):
/// the same frame under another run's key is the same work paid again.
fn frame_of(key: &str) -> Option<&str> {
    let mut parts = key.splitn(4, ':');
    (parts.next()? == "idempipe").then_some(())?;
    parts.next()?;
    (parts.next()? == "frame").then_some(())?;
    parts.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_keys() {
        assert_eq!(
            frame_of("idempipe:3:frame:frame/000123"),
            Some("frame/000123")
        );
        assert_eq!(frame_of("idempipe:3:transcribe:w/1"), None);
        assert_eq!(frame_of("other"), None);
    }
}
