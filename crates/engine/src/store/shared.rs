//! The statement flow shared by both backends.
//!
//! `impl_store!` expands to the `Store` implementation of a backend type. The Rust is the
//! same for SQLite and PostgreSQL; what differs is the SQL (each backend's `queries.sql`)
//! and what each backend provides: `begin_write`, `leader_try_acquire_impl`, the
//! `MIGRATIONS` list and a `local_wake` ([`WorkSignal`](super::work_signal::WorkSignal)). A macro instead of generics over
//! `sqlx::Database` keeps the code free of the long trait bounds sqlx would need.

use serde_json::{Value, json};

use crate::clock::Millis;
use crate::error::{StoreError, StoreResult};
use crate::model::{ItemStatus, RunStatus};
use crate::policy::{Backoff, OnUnknown};
use crate::store::{Outcome, OutcomeKind};

/// Upper bound of expired leases handled per rescue pass, so one pass stays short.
pub(crate) const RESCUE_BATCH: i64 = 1000;

/// Parses an optional JSON text column.
pub(crate) fn json_col(column: &'static str, text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|error| StoreError::Json { column, error }))
        .transpose()
}

/// Parses a stored item status.
pub(crate) fn item_status(s: &str) -> StoreResult<ItemStatus> {
    ItemStatus::parse(s)
        .ok_or_else(|| StoreError::Config(format!("unknown item status {s:?} in database")))
}

/// Parses a stored run status.
pub(crate) fn run_status(s: &str) -> StoreResult<RunStatus> {
    RunStatus::parse(s)
        .ok_or_else(|| StoreError::Config(format!("unknown run status {s:?} in database")))
}

/// The JSON array `item_record` takes.
pub(crate) fn record_param(outcomes: &[Outcome]) -> String {
    let rows: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let mut row = json!({ "id": o.item_id, "token": o.lease_token });
            match &o.kind {
                OutcomeKind::Completed(result) => {
                    row["status"] = json!("completed");
                    row["result"] = result.clone();
                }
                OutcomeKind::Failed { error, retry_at } => {
                    row["status"] = json!("failed");
                    row["error"] = error.clone();
                    row["next_at"] = json!(retry_at);
                }
                OutcomeKind::Dead(error) => {
                    row["status"] = json!("dead");
                    row["error"] = error.clone();
                }
            }
            row
        })
        .collect();
    Value::Array(rows).to_string()
}

/// The error detail of an outcome, if it failed.
pub(crate) fn outcome_error(kind: &OutcomeKind) -> Option<&Value> {
    match kind {
        OutcomeKind::Completed(_) => None,
        OutcomeKind::Failed { error, .. } | OutcomeKind::Dead(error) => Some(error),
    }
}

/// An item whose lease expired, with its stage's policy.
pub(crate) struct Expired {
    pub(crate) id: i64,
    pub(crate) lease_token: i64,
    pub(crate) attempts: i64,
    pub(crate) retry_base: i64,
    pub(crate) external_call_at: Option<Millis>,
    pub(crate) max_attempts: i64,
    pub(crate) backoff: Backoff,
    pub(crate) on_unknown: OnUnknown,
}

/// Decides what an expired lease becomes: `(status, error, next_at)`.
pub(crate) fn rescue_decision(e: &Expired, now: Millis) -> (&'static str, Value, Option<Millis>) {
    let started = e.external_call_at.is_some();
    let error = json!({
        "kind": "lease_expired",
        "message": "the worker stopped renewing its lease (killed, crashed or stalled)",
        "external_call_started": started,
    });
    let used = e.attempts - e.retry_base;
    if started && e.on_unknown == OnUnknown::Park {
        ("unknown", error, None)
    } else if used >= e.max_attempts {
        ("dead", error, None)
    } else {
        ("failed", error, Some(now + e.backoff.delay_ms(used)))
    }
}

/// A row returned by `item_record` / `item_rescue`.
pub(crate) struct Recorded {
    pub(crate) id: i64,
    pub(crate) run_id: i64,
    pub(crate) attempt: i64,
    pub(crate) worker: Option<String>,
    pub(crate) started_at: Option<Millis>,
    pub(crate) external_call_at: Option<Millis>,
    pub(crate) group: Option<String>,
    pub(crate) has_waiters: bool,
    pub(crate) status: String,
}

/// The JSON array `attempt_insert_many` takes.
pub(crate) fn attempts_param<'a>(
    rows: impl Iterator<Item = (&'a Recorded, Option<&'a Value>)>,
) -> String {
    let rows: Vec<Value> = rows
        .map(|(r, error)| {
            json!({
                "item_id": r.id, "run_id": r.run_id, "attempt": r.attempt, "worker": r.worker,
                "started_at": r.started_at.unwrap_or_default(),
                "external_call_at": r.external_call_at, "outcome": r.status, "error": error,
            })
        })
        .collect();
    Value::Array(rows).to_string()
}

/// Items per bulk insert statement (bounded so one statement's JSON stays a few MB).
pub(crate) const INSERT_CHUNK: usize = 10_000;

/// The JSON array `item_insert_many` takes.
pub(crate) fn insert_param(items: &[&crate::model::NewItem]) -> String {
    let rows: Vec<Value> = items
        .iter()
        .map(|i| json!({ "stage": i.stage, "key": i.key, "group": i.group, "payload": i.payload }))
        .collect();
    Value::Array(rows).to_string()
}

/// JSON array text of the given values.
pub(crate) fn json_array<T: serde::Serialize>(values: &[T]) -> String {
    serde_json::to_string(values).expect("serialising plain values cannot fail")
}

/// Expands to `impl Store for $store` for a backend whose pool is `sqlx::Pool<$db>`.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use serde_json::Value;
        use sqlx::Row;
        use std::collections::HashMap;
        use std::time::Duration;

        use crate::clock::Millis;
        use crate::error::{StoreError, StoreResult};
        use crate::limiter::{LimiterConfig, LimiterFeedback, LimiterState, Permit};
        use crate::model::{
            Attempt, Dep, Item, ItemStatus, NewItem, Run, RunActivity, RunStatus, StageCount,
        };
        use crate::policy::{Backoff, OnUnknown, StagePolicy};
        use crate::store::hot_path::HotPath;
        use crate::store::migrate;
        use crate::store::shared::{self, Expired, Recorded, json_col};
        use crate::store::{
            ClaimParams, ClaimedItem, ItemFilter, Outcome, RescueReport, RetryParams,
            RunCreate, Store, Throughput, WorkerPresence,
        };

        type Tx = sqlx::Transaction<'static, $db>;
        /// A statement with its parameters, before it runs.
        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>;

        impl $store {
            fn sql(&self, name: &str) -> &'static str {
                QUERIES.get(name)
            }

            /// Runs a fenced `UPDATE ... RETURNING id` (ids bound first, as one array) in a
            /// write transaction of its own; the ids it changed.
            async fn fenced_ids(&self, query: Query<'_>) -> StoreResult<Vec<i64>> {
                let rows = if SINGLE_STATEMENT_IS_ATOMIC {
                    query.fetch_all(&self.pool).await?
                } else {
                    let mut tx = self.begin_write().await?;
                    let rows = query.fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    rows
                };
                rows.iter().map(|row| Ok(row.try_get::<i64, _>(0)?)).collect()
            }

            async fn notify_tx(&self, tx: &mut Tx) -> StoreResult<()> {
                if let Some(sql) = QUERIES.find("notify") {
                    sqlx::query(sql).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Inserts items and their groups and dependencies inside `tx`. Items without
            /// dependencies go first, in bulk statements; the others follow one by one,
            /// then their waits, so a waiter counts every group member inserted with it
            /// (as SQLite's writer thread does with spawns).
            async fn insert_items_tx(
                &self,
                tx: &mut Tx,
                run_id: i64,
                items: &[NewItem],
                now: Millis,
            ) -> StoreResult<u64> {
                let (simple, dependent): (Vec<&NewItem>, Vec<&NewItem>) =
                    items.iter().partition(|i| i.deps.is_empty());
                let mut inserted = 0;
                for chunk in simple.chunks(shared::INSERT_CHUNK) {
                    let groups: Vec<Option<String>> = sqlx::query_scalar(self.sql("item_insert_many"))
                        .bind(run_id)
                        .bind(now)
                        .bind(shared::insert_param(chunk))
                        .fetch_all(&mut **tx)
                        .await?;
                    inserted += groups.len() as u64;
                    let mut per_group: HashMap<String, i64> = HashMap::new();
                    for group in groups.into_iter().flatten() {
                        *per_group.entry(group).or_default() += 1;
                    }
                    for (group, n) in per_group {
                        sqlx::query(self.sql("group_add"))
                            .bind(run_id)
                            .bind(group)
                            .bind(n)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                // Every item first, then the waits: a waiter counts every group member
                // spawned with it and finds every input spawned with it, wherever listed.
                let mut new_dependent = Vec::with_capacity(dependent.len());
                for item in dependent {
                    let id: Option<i64> = sqlx::query_scalar(self.sql("item_insert"))
                        .bind(run_id)
                        .bind(&item.stage)
                        .bind(&item.key)
                        .bind(&item.group)
                        .bind(item.payload.to_string())
                        .bind(now)
                        .fetch_optional(&mut **tx)
                        .await?;
                    let Some(id) = id else { continue };
                    inserted += 1;
                    if let Some(group) = &item.group {
                        sqlx::query(self.sql("group_join"))
                            .bind(run_id)
                            .bind(group)
                            .execute(&mut **tx)
                            .await?;
                    }
                    new_dependent.push((id, item));
                }
                for (id, item) in new_dependent {
                    let mut waiting: i64 = 0;
                    // A dependency named twice is waited for once (as on SQLite's writer thread).
                    let mut seen = std::collections::HashSet::new();
                    for dep in item.deps.iter().filter(|d| seen.insert(*d)) {
                        match dep {
                            Dep::Item { stage, key } => {
                                let row = sqlx::query(self.sql("item_lookup"))
                                    .bind(run_id)
                                    .bind(stage)
                                    .bind(key)
                                    .fetch_optional(&mut **tx)
                                    .await?
                                    .ok_or_else(|| StoreError::NotFound {
                                        what: format!(
                                            "item {stage}/{key} of run {run_id} (a dependency of {}/{})",
                                            item.stage, item.key
                                        ),
                                    })?;
                                let input: i64 = row.try_get(0)?;
                                let status: String = row.try_get(1)?;
                                if status != "completed" {
                                    sqlx::query(self.sql("item_wait_insert"))
                                        .bind(input)
                                        .bind(id)
                                        .execute(&mut **tx)
                                        .await?;
                                    sqlx::query(self.sql("item_set_has_waiters"))
                                        .bind(input)
                                        .execute(&mut **tx)
                                        .await?;
                                    waiting += 1;
                                }
                            }
                            Dep::Group(group) => {
                                let remaining: Option<i64> = sqlx::query_scalar(self.sql("group_remaining"))
                                    .bind(run_id)
                                    .bind(group)
                                    .fetch_optional(&mut **tx)
                                    .await?;
                                if remaining.unwrap_or(0) > 0 {
                                    sqlx::query(self.sql("group_wait_insert"))
                                        .bind(run_id)
                                        .bind(group)
                                        .bind(id)
                                        .execute(&mut **tx)
                                        .await?;
                                    waiting += 1;
                                }
                            }
                        }
                    }
                    if waiting > 0 {
                        sqlx::query(self.sql("item_add_waiting"))
                            .bind(id)
                            .bind(waiting)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                Ok(inserted)
            }

            /// Counted fan-in: an item just completed; release whoever waited for it.
            async fn release_dependents_tx(&self, tx: &mut Tx, row: &Recorded) -> StoreResult<()> {
                if row.has_waiters {
                    sqlx::query(self.sql("item_release_waiters"))
                        .bind(row.id)
                        .execute(&mut **tx)
                        .await?;
                }
                if let Some(group) = &row.group {
                    let remaining: Option<i64> = sqlx::query_scalar(self.sql("group_leave"))
                        .bind(row.run_id)
                        .bind(group)
                        .fetch_optional(&mut **tx)
                        .await?;
                    if remaining == Some(0) {
                        sqlx::query(self.sql("group_release_waiters"))
                            .bind(row.run_id)
                            .bind(group)
                            .execute(&mut **tx)
                            .await?;
                        sqlx::query(self.sql("group_mark_released"))
                            .bind(row.run_id)
                            .bind(group)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                Ok(())
            }

            /// Where the backend counts recorded outcomes itself (SQLite), adds the batch's
            /// changes to the counters: each row (item_record's, with the stage last) left
            /// `running` for its status, and completed ones completed now.
            async fn count_recorded_tx(
                &self,
                tx: &mut Tx,
                rows: &[<$db as sqlx::Database>::Row],
                now: Millis,
            ) -> StoreResult<()> {
                let mut counts: HashMap<(i64, String, String), i64> = HashMap::new();
                let mut completions: HashMap<(i64, String), i64> = HashMap::new();
                for row in rows {
                    let run_id: i64 = row.try_get(1)?;
                    let status: String = row.try_get(8)?;
                    let stage: String = row.try_get(9)?;
                    *counts.entry((run_id, stage.clone(), "running".into())).or_default() -= 1;
                    if status == "completed" {
                        *completions.entry((run_id, stage.clone())).or_default() += 1;
                    }
                    *counts.entry((run_id, stage, status)).or_default() += 1;
                }
                let counts: Vec<Value> = counts
                    .into_iter()
                    .map(|((run_id, stage, status), n)| serde_json::json!([run_id, stage, status, n]))
                    .collect();
                sqlx::query(self.sql("stage_counts_add"))
                    .bind(Value::Array(counts).to_string())
                    .execute(&mut **tx)
                    .await?;
                if !completions.is_empty() {
                    let second = now / 1000;
                    let completions: Vec<Value> = completions
                        .into_iter()
                        .map(|((run_id, stage), n)| serde_json::json!([run_id, stage, second, n]))
                        .collect();
                    sqlx::query(self.sql("stage_completions_add"))
                        .bind(Value::Array(completions).to_string())
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// `item_claim`'s statement with its parameters.
            fn claim_query(sql: &'static str, p: &ClaimParams) -> Query<'static> {
                sqlx::query(sql)
                    .bind(p.stage.clone())
                    .bind(p.now)
                    .bind(p.limit)
                    .bind(p.lease_token)
                    .bind(p.lease_expires_at)
                    .bind(p.worker.clone())
                    .bind(p.run_id)
            }

            /// Runs the claim inside `tx` (with the counter statement where the backend
            /// counts claims itself).
            async fn claim_tx(&self, tx: &mut Tx, p: &ClaimParams) -> StoreResult<Vec<ClaimedItem>> {
                if let Some(count) = QUERIES.find("item_claim_count") {
                    Self::claim_query(count, p).execute(&mut **tx).await?;
                }
                let rows = Self::claim_query(self.sql("item_claim"), p).fetch_all(&mut **tx).await?;
                Self::claimed_items(&rows)
            }

            /// Decodes `item_claim`'s rows.
            fn claimed_items(rows: &[<$db as sqlx::Database>::Row]) -> StoreResult<Vec<ClaimedItem>> {
                rows.iter().map(|row| Self::claimed_item(row, 0)).collect()
            }

            /// Decodes one claimed item whose columns (id, run, key, payload, attempts,
            /// retry base) start at column `first`.
            fn claimed_item(row: &<$db as sqlx::Database>::Row, first: usize) -> StoreResult<ClaimedItem> {
                let attempts: i64 = row.try_get(first + 4)?;
                let retry_base: i64 = row.try_get(first + 5)?;
                Ok(ClaimedItem {
                    id: row.try_get(first)?,
                    run_id: row.try_get(first + 1)?,
                    key: row.try_get(first + 2)?,
                    payload: json_col("items.payload", row.try_get(first + 3)?)?.unwrap_or(Value::Null),
                    attempt: attempts,
                    budget_used: attempts - retry_base,
                })
            }

            /// Records `outcomes` inside `tx`: their items, the attempts they write, the
            /// fan-in they release and the items they spawn. Returns the ids recorded and
            /// whether waiting workers should be woken (the caller sends the NOTIFY).
            async fn record_tx(
                &self,
                tx: &mut Tx,
                outcomes: &[Outcome],
                now: Millis,
            ) -> StoreResult<(std::collections::HashSet<i64>, bool)> {
                if let Some(sql) = QUERIES.find("item_record_all")
                    && outcomes.iter().all(|o| o.spawns.is_empty())
                {
                    let rows = bind_outcomes(sqlx::query(sql), outcomes, now).fetch_all(&mut **tx).await?;
                    let mut woken: i64 = 0;
                    let mut done = std::collections::HashSet::new();
                    for row in &rows {
                        done.insert(row.try_get::<i64, _>(0)?);
                        woken = woken.max(row.try_get::<i64, _>(9)?);
                    }
                    return Ok((done, woken > 0));
                }
                let rows = bind_outcomes(sqlx::query(self.sql("item_record")), outcomes, now)
                    .fetch_all(&mut **tx)
                    .await?;
                let recorded: Vec<Recorded> = rows.iter().map(Self::recorded).collect::<StoreResult<_>>()?;
                if !recorded.is_empty() && QUERIES.find("stage_counts_add").is_some() {
                    self.count_recorded_tx(tx, &rows, now).await?;
                }
                let by_id: HashMap<i64, &Outcome> = outcomes.iter().map(|o| (o.item_id, o)).collect();
                // A success writes no attempt row: its item row is its history.
                let failures: Vec<(&Recorded, Option<&Value>)> = recorded
                    .iter()
                    .filter(|r| r.status != "completed")
                    .map(|r| (r, by_id.get(&r.id).and_then(|o| shared::outcome_error(&o.kind))))
                    .collect();
                if !failures.is_empty() {
                    let attempts = shared::attempts_param(failures.into_iter());
                    sqlx::query(self.sql("attempt_insert_many")).bind(attempts).bind(now).execute(&mut **tx).await?;
                }
                let mut wake = false;
                for row in recorded.iter().filter(|r| r.status == "completed") {
                    self.release_dependents_tx(tx, row).await?;
                    let spawns = &by_id[&row.id].spawns;
                    if !spawns.is_empty() {
                        self.insert_items_tx(tx, row.run_id, spawns, now).await?;
                    }
                    wake |= row.has_waiters || row.group.is_some() || !spawns.is_empty();
                }
                Ok((recorded.iter().map(|r| r.id).collect(), wake))
            }

            /// `item_record_and_claim` as one statement (`item_record_claim`, PostgreSQL):
            /// rows `r` are recorded items (with the waiters woken), rows `c` claimed ones.
            async fn record_claim_one_statement(
                &self,
                sql: &'static str,
                outcomes: &[Outcome],
                now: Millis,
                p: &ClaimParams,
            ) -> StoreResult<(Vec<bool>, Vec<ClaimedItem>)> {
                let rows = bind_outcomes(sqlx::query(sql), outcomes, now)
                    .bind(p.stage.clone())
                    .bind(p.limit)
                    .bind(p.lease_token)
                    .bind(p.lease_expires_at)
                    .bind(p.worker.clone())
                    .bind(p.run_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut done = std::collections::HashSet::new();
                let mut woken: i64 = 0;
                let mut claimed = Vec::new();
                for row in &rows {
                    let kind: String = row.try_get(0)?;
                    if kind == "r" {
                        done.insert(row.try_get::<i64, _>(1)?);
                        woken = woken.max(row.try_get::<i64, _>(7)?);
                        continue;
                    }
                    claimed.push(Self::claimed_item(row, 1)?);
                }
                if woken > 0 {
                    if let Some(notify) = QUERIES.find("notify") {
                        sqlx::query(notify).execute(&self.pool).await?;
                    }
                    self.local_wake.notify();
                }
                Ok((self.recorded_flags(outcomes, done).await?, claimed))
            }

            fn recorded(row: &<$db as sqlx::Database>::Row) -> StoreResult<Recorded> {
                Ok(Recorded {
                    id: row.try_get(0)?,
                    run_id: row.try_get(1)?,
                    attempt: row.try_get(2)?,
                    worker: row.try_get(3)?,
                    started_at: row.try_get(4)?,
                    external_call_at: row.try_get(5)?,
                    group: row.try_get(6)?,
                    has_waiters: row.try_get(7)?,
                    status: row.try_get(8)?,
                })
            }

            fn run_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<Run> {
                let status: String = row.try_get(5)?;
                Ok(Run {
                    id: row.try_get(0)?,
                    pipeline: row.try_get(1)?,
                    fingerprint: row.try_get(2)?,
                    input: row.try_get(3)?,
                    params: json_col("runs.params", row.try_get(4)?)?.unwrap_or(Value::Null),
                    status: shared::run_status(&status)?,
                    paused: row.try_get(6)?,
                    summary: json_col("runs.summary", row.try_get(7)?)?,
                    created_at: row.try_get(8)?,
                    finished_at: row.try_get(9)?,
                })
            }

            /// Pause, resume and cancel apply only to runs still running.
            fn refuse_finished(run: &Run) -> StoreResult<()> {
                if run.status == RunStatus::Running {
                    Ok(())
                } else {
                    Err(StoreError::RunFinished { run_id: run.id, status: run.status.as_str() })
                }
            }

            fn item_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<Item> {
                let status: String = row.try_get(6)?;
                Ok(Item {
                    id: row.try_get(0)?,
                    run_id: row.try_get(1)?,
                    stage: row.try_get(2)?,
                    key: row.try_get(3)?,
                    group: row.try_get(4)?,
                    payload: json_col("items.payload", row.try_get(5)?)?.unwrap_or(Value::Null),
                    status: shared::item_status(&status)?,
                    attempts: row.try_get(7)?,
                    waiting_on: row.try_get(8)?,
                    next_attempt_at: row.try_get(9)?,
                    worker: row.try_get(10)?,
                    lease_expires_at: row.try_get(11)?,
                    result: json_col("items.result", row.try_get(12)?)?,
                    last_error: json_col("items.last_error", row.try_get(13)?)?,
                    created_at: row.try_get(14)?,
                    completed_at: row.try_get(15)?,
                })
            }

            /// Per outcome, whether it is recorded: written by this call (`done`), or by an
            /// earlier call for the same attempt whose commit happened although its caller
            /// saw an error (a dropped connection): a retried flush finds its own commit.
            async fn recorded_flags(
                &self,
                outcomes: &[Outcome],
                mut done: std::collections::HashSet<i64>,
            ) -> StoreResult<Vec<bool>> {
                let missing: Vec<Value> = outcomes
                    .iter()
                    .filter(|o| !done.contains(&o.item_id))
                    .map(|o| serde_json::json!({ "id": o.item_id, "token": o.lease_token }))
                    .collect();
                if !missing.is_empty() {
                    let before: Vec<i64> = sqlx::query_scalar(self.sql("item_recorded_before"))
                        .bind(Value::Array(missing).to_string())
                        .fetch_all(&self.pool)
                        .await?;
                    done.extend(before);
                }
                Ok(outcomes.iter().map(|o| done.contains(&o.item_id)).collect())
            }

            fn limiter_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<LimiterState> {
                let config: String = row.try_get(1)?;
                let config: LimiterConfig = serde_json::from_str(&config)
                    .map_err(|error| StoreError::Json { column: "limiters.config", error })?;
                Ok(LimiterState {
                    config,
                    current_rate: row.try_get(2)?,
                    tokens: row.try_get(3)?,
                    refilled_at: row.try_get(4)?,
                    paused_until: row.try_get(5)?,
                    circuit_open_until: row.try_get(6)?,
                    failure_streak: row.try_get(7)?,
                    throttles: row.try_get(8)?,
                    circuit_opens: row.try_get(9)?,
                    in_flight: row.try_get(10)?,
                    open_streak: row.try_get(11)?,
                    probe_holder: row.try_get(12)?,
                    probe_until: row.try_get(13)?,
                })
            }

            async fn limiter_load_tx(&self, tx: &mut Tx, name: &str, now: Millis) -> StoreResult<LimiterState> {
                let row = sqlx::query(self.sql("limiter_get"))
                    .bind(name)
                    .bind(now)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { what: format!("limiter {name:?}") })?;
                Self::limiter_row(&row)
            }

            async fn limiter_save_tx(&self, tx: &mut Tx, s: &LimiterState) -> StoreResult<()> {
                sqlx::query(self.sql("limiter_save"))
                    .bind(&s.config.name)
                    .bind(s.current_rate)
                    .bind(s.tokens)
                    .bind(s.refilled_at)
                    .bind(s.paused_until)
                    .bind(s.circuit_open_until)
                    .bind(s.failure_streak)
                    .bind(s.throttles)
                    .bind(s.circuit_opens)
                    .bind(s.open_streak)
                    .bind(s.probe_holder)
                    .bind(s.probe_until)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                BACKEND
            }

            async fn db_now(&self) -> StoreResult<Millis> {
                match QUERIES.find("db_now") {
                    Some(sql) => Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?),
                    None => Ok(crate::clock::Clock::now(&crate::clock::SystemClock)),
                }
            }

            async fn migrate(&self) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                // Processes starting together on a fresh database must not race to create
                // the same tables (PostgreSQL: a duplicate key in pg_type); SQLite's write
                // transaction already serialises them.
                if let Some(sql) = QUERIES.find("migrate_lock") {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                sqlx::raw_sql(migrate::CREATE_TABLE).execute(&mut *tx).await?;
                let applied: Vec<(i64, String, i64)> = sqlx::query_as(migrate::SELECT_APPLIED)
                    .fetch_all(&mut *tx)
                    .await?;
                for m in migrate::pending(MIGRATIONS, &applied)? {
                    tracing::info!(version = m.version, name = m.name, "applying migration");
                    sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| StoreError::Migration {
                        version: m.version,
                        name: m.name.into(),
                        problem: format!("failed: {e}"),
                    })?;
                    sqlx::query(migrate::INSERT_APPLIED)
                        .bind(m.version)
                        .bind(m.name)
                        .bind(m.checksum())
                        .bind(crate::clock::Clock::now(&crate::clock::SystemClock))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn stage_register(&self, policies: &[StagePolicy], now: Millis) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                for p in policies {
                    p.validate()?;
                    sqlx::query(self.sql("stage_register"))
                        .bind(&p.name)
                        .bind(p.max_attempts)
                        .bind(p.backoff.base.as_millis() as i64)
                        .bind(p.backoff.cap.as_millis() as i64)
                        .bind(p.on_unknown.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn run_create(&self, params: &RunCreate, now: Millis) -> StoreResult<i64> {
                let mut tx = self.begin_write().await?;
                let run_id: i64 = sqlx::query_scalar(self.sql("run_insert"))
                    .bind(&params.pipeline)
                    .bind(&params.fingerprint)
                    .bind(&params.input)
                    .bind(params.params.to_string())
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                self.insert_items_tx(&mut tx, run_id, &params.items, now).await?;
                self.notify_tx(&mut tx).await?;
                tx.commit().await?;
                self.local_wake.notify();
                Ok(run_id)
            }

            async fn run_get(&self, run_id: i64) -> StoreResult<Run> {
                let row = sqlx::query(self.sql("run_get"))
                    .bind(run_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { what: format!("run {run_id}") })?;
                Self::run_row(&row)
            }

            async fn run_find(&self, pipeline: &str, fingerprint: &str) -> StoreResult<Option<Run>> {
                let row = sqlx::query(self.sql("run_find"))
                    .bind(pipeline)
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::run_row).transpose()
            }

            async fn run_list(&self, limit: i64) -> StoreResult<Vec<Run>> {
                let rows = sqlx::query(self.sql("run_list")).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(Self::run_row).collect()
            }

            async fn run_set_summary(&self, run_id: i64, summary: &Value) -> StoreResult<()> {
                sqlx::query(self.sql("run_set_summary"))
                    .bind(run_id)
                    .bind(summary.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn run_set_params(&self, run_id: i64, params: &Value) -> StoreResult<()> {
                let n = sqlx::query(self.sql("run_set_params"))
                    .bind(run_id)
                    .bind(params.to_string())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound { what: format!("run {run_id}") });
                }
                Ok(())
            }

            async fn run_cancel(&self, run_id: i64, now: Millis) -> StoreResult<u64> {
                Self::refuse_finished(&self.run_get(run_id).await?)?;
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(self.sql("run_cancel_items"))
                    .bind(run_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(self.sql("run_cancel")).bind(run_id).bind(now).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn run_pause(&self, run_id: i64, stage: Option<&str>, paused: bool) -> StoreResult<()> {
                Self::refuse_finished(&self.run_get(run_id).await?)?;
                let mut tx = self.begin_write().await?;
                match (stage, paused) {
                    (None, _) => {
                        sqlx::query(self.sql("run_set_paused")).bind(run_id).bind(paused).execute(&mut *tx).await?;
                    }
                    (Some(stage), true) => {
                        sqlx::query(self.sql("stage_pause")).bind(run_id).bind(stage).execute(&mut *tx).await?;
                    }
                    (Some(stage), false) => {
                        sqlx::query(self.sql("stage_resume")).bind(run_id).bind(stage).execute(&mut *tx).await?;
                    }
                }
                if !paused {
                    self.notify_tx(&mut tx).await?;
                }
                tx.commit().await?;
                self.local_wake.notify();
                Ok(())
            }

            async fn run_finish_ready(&self, now: Millis) -> StoreResult<Vec<(i64, RunStatus)>> {
                // The counters it reads: shards of sessions that ended fold into one.
                if let Some(fold) = QUERIES.find("stage_counts_fold") {
                    sqlx::query(fold).execute(&self.pool).await?;
                }
                let mut tx = self.begin_write().await?;
                let ready: Vec<(i64, i64)> =
                    sqlx::query_as(self.sql("run_ready_to_finish")).fetch_all(&mut *tx).await?;
                let mut finished = Vec::new();
                for (run_id, dead) in ready {
                    let status = if dead > 0 { RunStatus::Failed } else { RunStatus::Completed };
                    let done = sqlx::query(self.sql("run_finish"))
                        .bind(run_id)
                        .bind(status.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 1 {
                        finished.push((run_id, status));
                    }
                }
                tx.commit().await?;
                Ok(finished)
            }

            async fn item_insert(&self, run_id: i64, items: &[NewItem], now: Millis) -> StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let n = self.insert_items_tx(&mut tx, run_id, items, now).await?;
                self.notify_tx(&mut tx).await?;
                tx.commit().await?;
                self.local_wake.notify();
                Ok(n)
            }

            async fn item_claim(&self, p: &ClaimParams) -> StoreResult<Vec<ClaimedItem>> {
                if let Some(done) = self.hot_claim(p).await {
                    return done;
                }
                // The claim is one statement; where the backend makes a single statement
                // atomic on its own, it skips the BEGIN/COMMIT round trips.
                if SINGLE_STATEMENT_IS_ATOMIC {
                    let rows = Self::claim_query(self.sql("item_claim"), p).fetch_all(&self.pool).await?;
                    return Self::claimed_items(&rows);
                }
                let mut tx = self.begin_write().await?;
                let claimed = self.claim_tx(&mut tx, p).await?;
                tx.commit().await?;
                Ok(claimed)
            }

            async fn item_heartbeat(&self, ids: &[i64], lease_token: i64, lease_expires_at: Millis) -> StoreResult<Vec<i64>> {
                if let Some(done) = self.hot_heartbeat(ids, lease_token, lease_expires_at).await {
                    return done;
                }
                let query = bind_ids(sqlx::query(self.sql("item_heartbeat")), ids)
                    .bind(lease_token)
                    .bind(lease_expires_at);
                self.fenced_ids(query).await
            }

            async fn item_mark_external(&self, item_id: i64, lease_token: i64, now: Millis) -> StoreResult<()> {
                let done = sqlx::query(self.sql("item_mark_external"))
                    .bind(item_id)
                    .bind(lease_token)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::LeaseLost { item_id });
                }
                Ok(())
            }

            async fn item_record(&self, outcomes: &[Outcome], now: Millis) -> StoreResult<Vec<bool>> {
                if outcomes.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some(done) = self.hot_record(outcomes, now).await {
                    return done;
                }
                if let Some(sql) = QUERIES.find("item_record_all")
                    && outcomes.iter().all(|o| o.spawns.is_empty())
                {
                    let rows = bind_outcomes(sqlx::query(sql), outcomes, now)
                        .fetch_all(&self.pool)
                        .await?;
                    let mut woken: i64 = 0;
                    let mut done = std::collections::HashSet::new();
                    for row in &rows {
                        done.insert(row.try_get::<i64, _>(0)?);
                        woken = woken.max(row.try_get::<i64, _>(9)?);
                    }
                    if woken > 0 {
                        if let Some(notify) = QUERIES.find("notify") {
                            sqlx::query(notify).execute(&self.pool).await?;
                        }
                        self.local_wake.notify();
                    }
                    return self.recorded_flags(outcomes, done).await;
                }
                let mut tx = self.begin_write().await?;
                let (done, wake) = self.record_tx(&mut tx, outcomes, now).await?;
                if wake {
                    self.notify_tx(&mut tx).await?;
                }
                tx.commit().await?;
                if wake {
                    self.local_wake.notify();
                }
                self.recorded_flags(outcomes, done).await
            }

            async fn item_release(&self, ids: &[i64], lease_token: i64, now: Millis) -> StoreResult<u64> {
                if let Some(done) = self.hot_release(ids, lease_token, now).await {
                    return done;
                }
                let mut tx = self.begin_write().await?;
                let n = bind_ids(sqlx::query(self.sql("item_release")), ids)
                    .bind(lease_token)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                self.notify_tx(&mut tx).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn item_defer(&self, ids: &[i64], lease_token: i64, until: Millis, now: Millis) -> StoreResult<u64> {
                let done = bind_ids(sqlx::query(self.sql("item_defer")), ids)
                    .bind(lease_token)
                    .bind(until)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn item_rescue_expired(&self, now: Millis) -> StoreResult<RescueReport> {
                let mut tx = self.begin_write().await?;
                let rows = sqlx::query(self.sql("item_expired"))
                    .bind(now)
                    .bind(shared::RESCUE_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut report = RescueReport::default();
                if rows.is_empty() {
                    return Ok(report);
                }
                let mut params = Vec::with_capacity(rows.len());
                let mut errors = HashMap::new();
                for row in &rows {
                    let on_unknown: String = row.try_get(8)?;
                    let e = Expired {
                        id: row.try_get(0)?,
                        lease_token: row.try_get(1)?,
                        attempts: row.try_get(2)?,
                        retry_base: row.try_get(3)?,
                        external_call_at: row.try_get(4)?,
                        max_attempts: row.try_get(5)?,
                        backoff: Backoff {
                            base: Duration::from_millis(row.try_get::<i64, _>(6)? as u64),
                            cap: Duration::from_millis(row.try_get::<i64, _>(7)? as u64),
                            jitter: Backoff::default().jitter,
                        },
                        on_unknown: OnUnknown::parse(&on_unknown),
                    };
                    let (status, error, next_at) = shared::rescue_decision(&e, now);
                    params.push(serde_json::json!({
                        "id": e.id, "token": e.lease_token, "status": status, "error": error, "next_at": next_at,
                    }));
                    errors.insert(e.id, error);
                }
                let rescued = sqlx::query(self.sql("item_rescue"))
                    .bind(Value::Array(params).to_string())
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                let rescued: Vec<Recorded> = rescued.iter().map(Self::recorded).collect::<StoreResult<_>>()?;
                let attempts = shared::attempts_param(rescued.iter().map(|r| (r, errors.get(&r.id))));
                sqlx::query(self.sql("attempt_insert_many")).bind(attempts).bind(now).execute(&mut *tx).await?;
                for r in &rescued {
                    match r.status.as_str() {
                        "dead" => report.dead += 1,
                        "unknown" => report.unknown += 1,
                        _ => report.retried += 1,
                    }
                }
                self.notify_tx(&mut tx).await?;
                tx.commit().await?;
                self.local_wake.notify();
                Ok(report)
            }

            async fn item_retry(&self, p: &RetryParams, now: Millis) -> StoreResult<u64> {
                self.run_get(p.run_id).await?;
                let statuses: Vec<&str> = p.statuses.iter().map(|s| s.as_str()).collect();
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(self.sql("item_retry"))
                    .bind(p.run_id)
                    .bind(&p.stage)
                    .bind(shared::json_array(&statuses))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    sqlx::query(self.sql("run_reopen")).bind(p.run_id).execute(&mut *tx).await?;
                    self.notify_tx(&mut tx).await?;
                }
                tx.commit().await?;
                self.local_wake.notify();
                Ok(n)
            }

            async fn item_redo(&self, run_id: i64, stages: &[String], now: Millis) -> StoreResult<u64> {
                if self.run_get(run_id).await?.status == RunStatus::Cancelled {
                    return Err(StoreError::Config(format!(
                        "run {run_id} is cancelled: its items cannot be made due again"
                    )));
                }
                let stages = shared::json_array(stages);
                let mut tx = self.begin_write().await?;
                // Failed, dead and unknown items first: if one waits for a completed item
                // reopened below, it is counted as a waiter again.
                let revived = sqlx::query(self.sql("item_redo_unfinished"))
                    .bind(run_id)
                    .bind(&stages)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(self.sql("attempt_keep_completed"))
                    .bind(run_id)
                    .bind(&stages)
                    .execute(&mut *tx)
                    .await?;
                let reopened = sqlx::query(self.sql("item_redo_completed"))
                    .bind(run_id)
                    .bind(&stages)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut ids = Vec::with_capacity(reopened.len());
                let mut groups: HashMap<String, i64> = HashMap::new();
                for row in &reopened {
                    ids.push(row.try_get::<i64, _>(0)?);
                    if let Some(group) = row.try_get::<Option<String>, _>(1)? {
                        *groups.entry(group).or_default() += 1;
                    }
                }
                if !ids.is_empty() {
                    sqlx::query(self.sql("item_rearm_waiters"))
                        .bind(shared::json_array(&ids))
                        .execute(&mut *tx)
                        .await?;
                }
                for (group, n) in &groups {
                    let before: Option<i64> = sqlx::query_scalar(self.sql("group_reopen"))
                        .bind(run_id)
                        .bind(group)
                        .bind(n)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if before == Some(0) {
                        // The group had released its waiters: those not done wait again.
                        sqlx::query(self.sql("group_rearm_waiters"))
                            .bind(run_id)
                            .bind(group)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(self.sql("group_mark_unreleased"))
                            .bind(run_id)
                            .bind(group)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let n = revived + ids.len() as u64;
                if n > 0 {
                    sqlx::query(self.sql("run_reopen_finished")).bind(run_id).execute(&mut *tx).await?;
                    self.notify_tx(&mut tx).await?;
                }
                tx.commit().await?;
                self.local_wake.notify();
                Ok(n)
            }

            async fn item_get(&self, run_id: i64, stage: &str, key: &str) -> StoreResult<Item> {
                let row = sqlx::query(self.sql("item_get"))
                    .bind(run_id)
                    .bind(stage)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { what: format!("item {stage}/{key} of run {run_id}") })?;
                Self::item_row(&row)
            }

            async fn item_list(&self, f: &ItemFilter) -> StoreResult<Vec<Item>> {
                let statuses: Vec<&str> = if f.statuses.is_empty() {
                    ItemStatus::ALL.iter().map(|s| s.as_str()).collect()
                } else {
                    f.statuses.iter().map(|s| s.as_str()).collect()
                };
                let rows = sqlx::query(self.sql("item_list"))
                    .bind(f.run_id)
                    .bind(&f.stage)
                    .bind(shared::json_array(&statuses))
                    .bind(f.after_id)
                    .bind(if f.limit > 0 { f.limit } else { i64::MAX })
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::item_row).collect()
            }

            async fn item_counts(&self, run_id: i64) -> StoreResult<Vec<StageCount>> {
                let rows: Vec<(String, String, i64)> =
                    sqlx::query_as(self.sql("item_counts")).bind(run_id).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(|(stage, status, count)| StageCount { stage, status, count }).collect())
            }

            async fn attempt_list(&self, item_id: i64) -> StoreResult<Vec<Attempt>> {
                let rows = sqlx::query(self.sql("attempt_list")).bind(item_id).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok(Attempt {
                            item_id: row.try_get(0)?,
                            attempt: row.try_get(1)?,
                            worker: row.try_get(2)?,
                            started_at: row.try_get(3)?,
                            ended_at: row.try_get(4)?,
                            external_call_at: row.try_get(5)?,
                            outcome: row.try_get(6)?,
                            error: json_col("attempts.error", row.try_get(7)?)?,
                        })
                    })
                    .collect()
            }

            async fn stage_throughput(&self, run_id: i64, stage: &str, window_ms: Millis, now: Millis) -> StoreResult<Throughput> {
                let completed: i64 = sqlx::query_scalar(self.sql("stage_completed_since"))
                    .bind(run_id)
                    .bind(stage)
                    .bind(now - window_ms)
                    .fetch_one(&self.pool)
                    .await?;
                let remaining: i64 = sqlx::query_scalar(self.sql("stage_remaining"))
                    .bind(run_id)
                    .bind(stage)
                    .fetch_one(&self.pool)
                    .await?;
                let per_second = completed as f64 / (window_ms.max(1) as f64 / 1000.0);
                let eta_seconds = (per_second > 0.0).then(|| remaining as f64 / per_second);
                Ok(Throughput { completed_in_window: completed, window_ms, per_second, remaining, eta_seconds })
            }

            async fn history_prune(&self, before: Millis) -> StoreResult<u64> {
                let done = sqlx::query(self.sql("history_prune")).bind(before).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn limiter_define(&self, config: &LimiterConfig, now: Millis) -> StoreResult<()> {
                config.validate()?;
                let fresh = LimiterState::fresh(config.clone(), now);
                let config_json = serde_json::to_string(config).expect("limiter config serialises");
                sqlx::query(self.sql("limiter_upsert"))
                    .bind(&config.name)
                    .bind(config_json)
                    .bind(fresh.current_rate)
                    .bind(fresh.tokens)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn limiter_acquire(&self, name: &str, cost: f64, holder: i64, hold_until: Millis, now: Millis) -> StoreResult<Permit> {
                if let Some(done) = self.hot_limiter_acquire(name, cost, holder, hold_until, now).await {
                    return done;
                }
                let mut tx = self.begin_write().await?;
                sqlx::query(self.sql("limiter_slot_expire")).bind(name).bind(now).execute(&mut *tx).await?;
                let mut state = self.limiter_load_tx(&mut tx, name, now).await?;
                let (permit, holds_slot) = state.acquire(cost, holder, hold_until, now);
                if holds_slot {
                    sqlx::query(self.sql("limiter_slot_take"))
                        .bind(name)
                        .bind(holder)
                        .bind(hold_until)
                        .execute(&mut *tx)
                        .await?;
                }
                self.limiter_save_tx(&mut tx, &state).await?;
                tx.commit().await?;
                Ok(permit)
            }

            async fn limiter_release(&self, name: &str, holder: i64, feedback: LimiterFeedback, now: Millis) -> StoreResult<()> {
                if let Some(done) = self.hot_limiter_release(name, holder, feedback, now).await {
                    return done;
                }
                let mut tx = self.begin_write().await?;
                sqlx::query(self.sql("limiter_slot_give")).bind(name).bind(holder).execute(&mut *tx).await?;
                let mut state = self.limiter_load_tx(&mut tx, name, now).await?;
                if state.release(feedback, holder, now) {
                    self.limiter_save_tx(&mut tx, &state).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn limiter_get(&self, name: &str) -> StoreResult<LimiterState> {
                self.limiter_list()
                    .await?
                    .into_iter()
                    .find(|l| l.config.name == name)
                    .ok_or_else(|| StoreError::NotFound { what: format!("limiter {name:?}") })
            }

            async fn limiter_list(&self) -> StoreResult<Vec<LimiterState>> {
                let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                let rows = sqlx::query(self.sql("limiter_list")).bind(now).fetch_all(&self.pool).await?;
                rows.iter().map(Self::limiter_row).collect()
            }

            fn work_signal(&self) -> tokio::sync::watch::Receiver<()> {
                self.local_wake.subscribe()
            }

            async fn leader_try_acquire(&self) -> StoreResult<bool> {
                self.leader_try_acquire_impl().await
            }

            async fn worker_beat(&self, w: &WorkerPresence, prune_before: Millis) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(self.sql("worker_beat"))
                    .bind(&w.name)
                    .bind(&w.host)
                    .bind(w.pid)
                    .bind(w.run_id)
                    .bind(w.started_at)
                    .bind(w.last_seen_at)
                    .bind(w.alive_until)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(self.sql("worker_prune")).bind(prune_before).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn worker_forget(&self, name: &str) -> StoreResult<()> {
                sqlx::query(self.sql("worker_forget")).bind(name).execute(&self.pool).await?;
                Ok(())
            }

            async fn worker_list(&self) -> StoreResult<Vec<WorkerPresence>> {
                let rows = sqlx::query(self.sql("worker_list")).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok(WorkerPresence {
                            name: row.try_get(0)?,
                            host: row.try_get(1)?,
                            pid: row.try_get(2)?,
                            run_id: row.try_get(3)?,
                            started_at: row.try_get(4)?,
                            last_seen_at: row.try_get(5)?,
                            alive_until: row.try_get(6)?,
                        })
                    })
                    .collect()
            }

            async fn run_activity(&self, run_ids: &[i64], now: Millis) -> StoreResult<Vec<(i64, RunActivity)>> {
                if run_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let rows: Vec<(i64, bool, bool, bool)> = sqlx::query_as(self.sql("run_activity"))
                    .bind(shared::json_array(run_ids))
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, leased, served, started)| (id, RunActivity::from_facts(leased, served, started)))
                    .collect())
            }

            async fn limiter_lease(&self, name: &str, cost: f64, successes: u32, unused: crate::limiter::Unused, now: Millis) -> StoreResult<(Option<Permit>, LimiterState)> {
                if let Some(done) = self.hot_limiter_lease(name, cost, successes, unused, now).await {
                    return done;
                }
                let mut tx = self.begin_write().await?;
                let mut state = self.limiter_load_tx(&mut tx, name, now).await?;
                let (permit, changed) = state.lease(cost, successes, unused, now);
                if changed {
                    self.limiter_save_tx(&mut tx, &state).await?;
                }
                tx.commit().await?;
                Ok((permit, state))
            }

            async fn item_start(&self, ids: &[i64], ahead_token: i64, lease_token: i64, lease_expires_at: Millis) -> StoreResult<Vec<i64>> {
                if let Some(done) = self.hot_start(ids, ahead_token, lease_token, lease_expires_at).await {
                    return done;
                }
                let query = bind_ids(sqlx::query(self.sql("item_start")), ids)
                    .bind(ahead_token)
                    .bind(lease_token)
                    .bind(lease_expires_at);
                self.fenced_ids(query).await
            }

            async fn item_return_unstarted(&self, now: Millis) -> StoreResult<u64> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(self.sql("item_unstarted_expired"))
                    .bind(now)
                    .bind(shared::RESCUE_BATCH)
                    .fetch_all(&self.pool)
                    .await?;
                let mut by_token: HashMap<i64, Vec<i64>> = HashMap::new();
                for (id, token) in rows {
                    by_token.entry(token).or_default().push(id);
                }
                let mut returned = 0;
                for (token, ids) in by_token {
                    // Fenced by the token: an item started meanwhile is left alone.
                    returned += self.item_release(&ids, token, now).await?;
                }
                Ok(returned)
            }

            async fn item_record_and_claim(&self, outcomes: &[Outcome], now: Millis, p: &ClaimParams) -> StoreResult<(Vec<bool>, Vec<ClaimedItem>)> {
                if let Some(done) = self.hot_record_and_claim(outcomes, now, p).await {
                    return done;
                }
                if !CLAIMS_WITH_OUTCOMES || outcomes.is_empty() {
                    let flags = self.item_record(outcomes, now).await?;
                    return Ok((flags, self.item_claim(p).await?));
                }
                if let Some(sql) = QUERIES.find("item_record_claim")
                    && outcomes.iter().all(|o| o.spawns.is_empty())
                {
                    return self.record_claim_one_statement(sql, outcomes, now, p).await;
                }
                let mut tx = self.begin_write().await?;
                let (done, wake) = self.record_tx(&mut tx, outcomes, now).await?;
                let claimed = self.claim_tx(&mut tx, p).await?;
                if wake {
                    self.notify_tx(&mut tx).await?;
                }
                tx.commit().await?;
                if wake {
                    self.local_wake.notify();
                }
                Ok((self.recorded_flags(outcomes, done).await?, claimed))
            }

            fn claims_with_outcomes(&self) -> bool {
                CLAIMS_WITH_OUTCOMES
            }

            async fn item_mark_external_many(&self, marks: &[(i64, i64)], now: Millis) -> StoreResult<Vec<i64>> {
                if let Some(done) = self.hot_mark_many(marks, now).await {
                    return done;
                }
                let param: Vec<Value> = marks.iter().map(|(id, token)| serde_json::json!({ "id": id, "token": token })).collect();
                let query = sqlx::query_scalar(self.sql("item_mark_external_many"))
                    .bind(Value::Array(param).to_string())
                    .bind(now);
                if SINGLE_STATEMENT_IS_ATOMIC {
                    return Ok(query.fetch_all(&self.pool).await?);
                }
                let mut tx = self.begin_write().await?;
                let marked: Vec<i64> = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok(marked)
            }
        }
    };
}

pub(crate) use impl_store;
