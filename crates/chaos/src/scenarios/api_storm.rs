//! API storms: 20% of calls answered 503, bursts of 429 with Retry-After, 10% of answers
//! held past the client's timeout (enhanced, answer lost) and 2% of 200s with a garbage
//! body, all at once, on one `process`.

use std::time::Duration;

use crate::env::sigkill;
use crate::report::Row;
use crate::watch::Watch;

use super::{API_TIMEOUT_SECS, Backend, Case, RUN_TIMEOUT, Suite};

/// Runs the scenario on `backend`.
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let hang_ms = ((API_TIMEOUT_SECS + 1.0) * 1000.0).to_string();
    let faults = [
        "--failure-rate",
        "0.2",
        "--failure-seed",
        "13",
        "--burst-429-every",
        "50",
        "--burst-429-length",
        "5",
        "--burst-429-retry-after",
        "1",
        "--hang-rate",
        "0.1",
        "--hang-ms",
        &hang_ms,
        "--garbage-rate",
        "0.02",
    ];
    let case = Case::new(suite, "api-storm", backend, &faults).await?;
    let mut process = case
        .suite
        .env
        .spawn(&case.process_args(&case.db), &case.dir.join("process.log"))?;
    let watch = Watch::attach(&case.db, Duration::from_secs(30)).await?;
    let status = watch.wait_end(RUN_TIMEOUT).await;
    if tokio::time::timeout(Duration::from_secs(10), process.wait())
        .await
        .is_err()
    {
        sigkill(&mut process).await;
    }
    let billing = case.api.billing().await?;
    let count = |s: u16| billing.by_status.get(&s).copied().unwrap_or(0);
    let faults = format!(
        "{} x 503, {} x 429, {} hung, {} garbage 200s",
        count(503),
        count(429),
        billing.hung,
        billing.garbled
    );
    // A held answer is repeated once under its key (and replayed by the server's cache);
    // a garbage 200 is retried and replayed without another 200 counted.
    let bound = billing.hung + billing.garbled;
    case.finish(Some(&watch), status, faults, None, bound).await
}
