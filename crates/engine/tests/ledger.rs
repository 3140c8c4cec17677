//! What the store keeps for an outcome: a success writes no attempt row yet shows in the
//! history; and a flush retried after its commit's answer was lost (the connection
//! dropped) applies once, and reports its outcomes as recorded.

mod common;
#[path = "common/ledger.rs"]
mod ledger;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{TestDb, claim};
use idempipe_engine::store::{ClaimedItem, Outcome, OutcomeKind, RunCreate};
use idempipe_engine::{NewItem, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn completed(item: &ClaimedItem, token: i64, spawns: Vec<NewItem>) -> Outcome {
    Outcome {
        item_id: item.id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!({ "key": item.key })),
        spawns,
    }
}

fn failed(item: &ClaimedItem, token: i64) -> Outcome {
    Outcome {
        item_id: item.id,
        lease_token: token,
        kind: OutcomeKind::Failed {
            error: json!({ "kind": "boom" }),
            retry_at: 10_000_000,
        },
        spawns: Vec::new(),
    }
}

/// A run with group `g` (members s/a, s/b, s/c, s/d), `w/g` waiting for the group and `w/d`
/// waiting for s/d. Returns the run and the four claimed members, by key.
async fn fan_in_run(store: &dyn Store) -> (i64, i64, Vec<ClaimedItem>) {
    let mut items: Vec<NewItem> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| NewItem::new("s", *k, json!(null)).in_group("g"))
        .collect();
    items.push(NewItem::new("w", "g", json!(null)).after_group("g"));
    items.push(NewItem::new("w", "d", json!(null)).after_item("s", "d"));
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "t".into(),
                fingerprint: format!("fp-{}", fastrand::u64(..)),
                input: "-".into(),
                params: json!({}),
                items,
            },
            1_000,
        )
        .await
        .unwrap();
    let (token, mut claimed) = claim(store, "s", 10, 2_000, 60_000).await;
    claimed.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(claimed.len(), 4);
    (run, token, claimed)
}

/// Everything a double application of outcomes would change twice.
async fn effects(db: &TestDb, store: &dyn Store, run: i64, ids: &[i64]) -> Value {
    let mut stored = Vec::new();
    for id in ids {
        stored.push(ledger::stored_attempts(db, *id).await);
    }
    let items: Vec<Value> = store
        .item_list(&idempipe_engine::store::ItemFilter {
            run_id: run,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|i| json!([i.stage, i.key, i.status.as_str(), i.attempts, i.waiting_on]))
        .collect();
    let snapshot = ledger::assert_counters_match(db, run, "effects").await;
    json!({ "stored_attempts": stored, "items": items, "counts": format!("{:?}", snapshot.items) })
}

/// A success stores no attempt row; the history still shows it, from the item row, and
/// keeps it when the item is redone and completes again.
async fn success_is_history_without_a_row(db: TestDb) {
    let store = db.store().await;
    let (run, token, claimed) = fan_in_run(&*store).await;
    let outcomes = vec![
        completed(&claimed[0], token, vec![]),
        failed(&claimed[1], token),
    ];
    assert_eq!(
        store.item_record(&outcomes, 3_000).await.unwrap(),
        [true, true]
    );
    assert_eq!(ledger::stored_attempts(&db, claimed[0].id).await, 0);
    assert_eq!(ledger::stored_attempts(&db, claimed[1].id).await, 1);
    let history = store.attempt_list(claimed[0].id).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let a = &history[0];
    assert_eq!(
        (
            a.attempt,
            a.started_at,
            a.ended_at,
            a.outcome.as_str(),
            a.worker.as_deref()
        ),
        (1, 2_000, 3_000, "completed", Some("test"))
    );
    assert_eq!(a.error, None);
    let failure = store.attempt_list(claimed[1].id).await.unwrap();
    assert_eq!(failure.len(), 1);
    assert_eq!(failure[0].outcome, "failed");

    // Redo: the first success is kept as a row, the second is read from the item.
    assert_eq!(store.item_redo(run, &["s".into()], 4_000).await.unwrap(), 2);
    let (token2, again) = claim(&*store, "s", 10, 5_000, 60_000).await;
    let a_again = again.iter().find(|c| c.id == claimed[0].id).unwrap();
    idempipe_engine::store::record_one(&*store, completed(a_again, token2, vec![]), 6_000)
        .await
        .unwrap();
    let history = store.attempt_list(claimed[0].id).await.unwrap();
    let summary: Vec<(i64, i64, &str)> = history
        .iter()
        .map(|a| (a.attempt, a.ended_at, a.outcome.as_str()))
        .collect();
    assert_eq!(summary, [(1, 3_000, "completed"), (2, 6_000, "completed")]);
    assert_eq!(ledger::stored_attempts(&db, claimed[0].id).await, 1);
    ledger::assert_counters_match(&db, run, "after redo").await;
}

/// The completer retries a flush whose commit outcome it could not see. If that commit
/// happened, the retry changes nothing (fan-in, attempt rows, spawns, counters) and still
/// reports every outcome as recorded, so the worker counts them once, as completed.
async fn retried_flush_applies_once(db: TestDb) {
    let store = db.store().await;
    let (run, token, claimed) = fan_in_run(&*store).await;
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    // One statement on PostgreSQL (no spawns), then the transaction path (a spawn).
    let plain = vec![
        completed(&claimed[0], token, vec![]),
        completed(&claimed[1], token, vec![]),
        failed(&claimed[2], token),
    ];
    let spawning = vec![completed(
        &claimed[3],
        token,
        vec![NewItem::new("x", "spawned", json!(null))],
    )];
    for batch in [&plain, &spawning] {
        let first = store.item_record(batch, 3_000).await.unwrap();
        assert!(first.iter().all(|r| *r), "{first:?}");
        let once = effects(&db, &*store, run, &ids).await;
        let retried = store.item_record(batch, 3_500).await.unwrap();
        assert!(
            retried.iter().all(|r| *r),
            "a retry after a commit that happened must report its outcomes as recorded: {retried:?}"
        );
        assert_eq!(effects(&db, &*store, run, &ids).await, once);
    }
    // The group released its waiter once; the item waiter once.
    let w = store.item_get(run, "w", "g").await.unwrap();
    assert_eq!(w.waiting_on, 1, "s/c failed, so the group still misses one");
    assert_eq!(store.item_get(run, "w", "d").await.unwrap().waiting_on, 0);
    // Another attempt's token is still refused.
    let stale = vec![completed(&claimed[0], token + 1, vec![])];
    assert_eq!(store.item_record(&stale, 4_000).await.unwrap(), [false]);
}

backend_tests!(success_is_history_without_a_row, retried_flush_applies_once);

/// A TCP proxy to PostgreSQL that, once armed with a byte pattern, drops the connection
/// (both ways) at the first answer from the server that contains it, without passing that
/// answer on.
struct CutProxy {
    addr: SocketAddr,
    pattern: Arc<Mutex<Option<&'static [u8]>>>,
    cut: Arc<AtomicBool>,
}

impl CutProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pattern: Arc<Mutex<Option<&'static [u8]>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let (p, c) = (pattern.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(pipe(client, server, p.clone(), c.clone()));
            }
        });
        Self { addr, pattern, cut }
    }

    fn arm(&self, pattern: &'static [u8]) {
        self.cut.store(false, Ordering::SeqCst);
        *self.pattern.lock().unwrap() = Some(pattern);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    pattern: Arc<Mutex<Option<&'static [u8]>>>,
    cut: Arc<AtomicBool>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let hit = {
            let mut armed = pattern.lock().unwrap();
            let hit = armed.is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p));
            if hit {
                *armed = None;
            }
            hit
        };
        if hit {
            cut.store(true, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// The same over a real dropped connection (PostgreSQL): the server may or may not have
/// committed when the client sees the error; a retry on a new connection applies the
/// outcomes exactly once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_flush_retried_after_a_dropped_connection_applies_once() {
    let db = TestDb::postgres().await;
    let direct = db.store().await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = CutProxy::start(upstream.clone()).await;
    assert!(
        db.url.contains(&upstream),
        "the test URL names its server as {upstream}"
    );
    // Plain text, so the proxy can see the answers it cuts at.
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let proxied_url = format!(
        "{}{sep}sslmode=disable",
        db.url.replace(&upstream, &proxy.addr.to_string())
    );

    // (answer to cut at, whether the server committed before it, spawns or not)
    let cases: [(&'static [u8], bool, bool); 3] = [
        // One autocommit statement: its answer is sent after the commit.
        (b"SELECT ", true, false),
        // The transaction path (a spawn): cut at COMMIT's answer (committed) ...
        (b"COMMIT\0", true, true),
        // ... or at the record statement's answer, before COMMIT (rolled back).
        (b"UPDATE ", false, true),
    ];
    for (pattern, committed, spawn) in cases {
        let what = String::from_utf8_lossy(pattern).to_string();
        let (run, token, claimed) = fan_in_run(&*direct).await;
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let spawns = |k: &str| {
            if spawn {
                vec![NewItem::new("x", k, json!(null))]
            } else {
                vec![]
            }
        };
        let batch = vec![
            completed(&claimed[0], token, spawns("a")),
            completed(&claimed[1], token, vec![]),
            failed(&claimed[2], token),
            completed(&claimed[3], token, spawns("d")),
        ];
        let proxied = idempipe_engine::connect(&proxied_url).await.unwrap();
        proxy.arm(pattern);
        let lost = proxied.item_record(&batch, 3_000).await;
        assert!(
            lost.is_err() && proxy.cut.load(Ordering::SeqCst),
            "{what}: the connection must drop mid-flush: {lost:?}"
        );
        let a = direct.item_get(run, "s", "a").await.unwrap();
        assert_eq!(
            a.status == idempipe_engine::ItemStatus::Completed,
            committed,
            "{what}: committed before the cut? {a:?}"
        );
        let retried = direct.item_record(&batch, 3_500).await.unwrap();
        assert_eq!(retried, [true; 4], "{what}");
        let after_retry = effects(&db, &*direct, run, &ids).await;
        // A second retry changes nothing more.
        assert_eq!(direct.item_record(&batch, 4_000).await.unwrap(), [true; 4]);
        assert_eq!(
            effects(&db, &*direct, run, &ids).await,
            after_retry,
            "{what}"
        );
        assert_eq!(
            ledger::stored_attempts(&db, claimed[2].id).await,
            1,
            "{what}"
        );
        assert_eq!(
            ledger::stored_attempts(&db, claimed[0].id).await,
            0,
            "{what}"
        );
        assert_eq!(
            direct.item_get(run, "w", "g").await.unwrap().waiting_on,
            1,
            "{what}: the group released nothing twice"
        );
        assert_eq!(
            direct.item_get(run, "w", "d").await.unwrap().waiting_on,
            0,
            "{what}"
        );
        let spawned = direct
            .item_list(&idempipe_engine::store::ItemFilter {
                run_id: run,
                stage: Some("x".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(spawned.len(), if spawn { 2 } else { 0 }, "{what}");
    }
}
