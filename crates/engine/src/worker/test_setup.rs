//! Setup shared by the worker's unit tests: a run whose items are claimed under a token.

use serde_json::json;

use crate::model::NewItem;
use crate::store::{ClaimParams, ClaimedItem, RunCreate, SharedStore};

/// A store on `db` with one run of items `keys` in stage `s`, all claimed under `token`
/// (leases of 30 s). Returns the store, the run id and the claimed items.
pub(crate) async fn claimed(
    db: &idempipe_testkit::TestDb,
    keys: &[&str],
    token: i64,
) -> (SharedStore, i64, Vec<ClaimedItem>) {
    let store = crate::connect(&db.url).await.unwrap();
    let now = crate::clock::system_clock().now();
    let create = RunCreate {
        pipeline: "t".into(),
        fingerprint: "f".into(),
        input: "-".into(),
        params: json!({}),
        items: keys
            .iter()
            .map(|k| NewItem::new("s", *k, json!(null)))
            .collect(),
    };
    let run = store.run_create(&create, now).await.unwrap();
    let claimed = store
        .item_claim(&ClaimParams {
            stage: "s".into(),
            limit: keys.len() as i64,
            worker: "w".into(),
            lease_token: token,
            lease_expires_at: now + 30_000,
            now,
            run_id: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), keys.len(), "every item is claimed");
    (store, run, claimed)
}
