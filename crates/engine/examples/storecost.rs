//! Scratch: raw store call costs.
use idempipe_engine::store::{ClaimParams, Outcome, OutcomeKind, RunCreate};
use idempipe_engine::{NewItem, connect};
use serde_json::json;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let store = connect(&url).await.unwrap();
    let items: Vec<NewItem> = (0..20000)
        .map(|i| NewItem::new("noop", format!("{i:07}"), json!(null)))
        .collect();
    let t = Instant::now();
    store
        .run_create(
            &RunCreate {
                pipeline: "b".into(),
                fingerprint: "f".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    println!("insert 20000: {:?}", t.elapsed());
    let (mut tc, mut tr) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for round in 0..300 {
        let t = Instant::now();
        let c = store
            .item_claim(&ClaimParams {
                stage: "noop".into(),
                limit: 64,
                worker: "w".into(),
                lease_token: round + 1,
                lease_expires_at: 1_000_000,
                now: 1,
            })
            .await
            .unwrap();
        tc += t.elapsed();
        let outs: Vec<Outcome> = c
            .iter()
            .map(|c| Outcome {
                item_id: c.id,
                lease_token: round + 1,
                kind: OutcomeKind::Completed(json!(null)),
                spawns: vec![],
            })
            .collect();
        let t = Instant::now();
        store.item_record(&outs, 2).await.unwrap();
        tr += t.elapsed();
    }
    println!("claim64 avg {:?}, record64 avg {:?}", tc / 300, tr / 300);
}
