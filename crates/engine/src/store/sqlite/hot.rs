//! The SQLite hot path, run on the writer thread (`writer.rs`): claims, outcomes, lease
//! renewals, starts of prefetched items, external-call marks and give-backs. Each function
//! is one unit of the writer's transaction and runs the same statements (`queries.sql`) as
//! the sqlx flow in `shared.rs`, bound by their `$N` names.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Type;
use rusqlite::{Connection, Row, Statement, ToSql};
use serde_json::{Value, json};

use super::QUERIES;
use crate::clock::Millis;
use crate::store::shared::{self, Recorded};
use crate::store::{ClaimParams, ClaimedItem, Outcome};

/// Binds `values` to the statement's `$1`, `$2`, ... (SQLite numbers named parameters
/// by first appearance, not by their digits).
fn bind(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for (i, value) in values.iter().enumerate() {
        if let Some(index) = stmt.parameter_index(&format!("${}", i + 1))? {
            stmt.raw_bind_parameter(index, value)?;
        }
    }
    Ok(())
}

/// Runs statement `name` with `values`, mapping each returned row.
fn query<T>(
    conn: &Connection,
    name: &str,
    values: &[&dyn ToSql],
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(QUERIES.get(name))?;
    bind(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Runs statement `name` with `values`; returns the rows it changed.
fn execute(conn: &Connection, name: &str, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(QUERIES.get(name))?;
    bind(&mut stmt, values)?;
    stmt.raw_execute()
}

fn json_value(column: usize, text: Option<String>) -> rusqlite::Result<Value> {
    match text {
        None => Ok(Value::Null),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, e.into())),
    }
}

/// `Store::item_claim`: moves the counters, then claims.
pub(super) fn claim(conn: &Connection, p: &ClaimParams) -> rusqlite::Result<Vec<ClaimedItem>> {
    let values: [&dyn ToSql; 7] = [
        &p.stage,
        &p.now,
        &p.limit,
        &p.lease_token,
        &p.lease_expires_at,
        &p.worker,
        &p.run_id,
    ];
    execute(conn, "item_claim_count", &values)?;
    query(conn, "item_claim", &values, |row| {
        let attempts: i64 = row.get(4)?;
        let retry_base: i64 = row.get(5)?;
        Ok(ClaimedItem {
            id: row.get(0)?,
            run_id: row.get(1)?,
            key: row.get(2)?,
            payload: json_value(3, row.get(3)?)?,
            attempt: attempts,
            budget_used: attempts - retry_base,
        })
    })
}

/// What [`record`] did: per outcome whether it is recorded, and whether waiters were
/// released (so workers should look for work).
pub(super) struct RecordDone {
    pub(super) flags: Vec<bool>,
    pub(super) wake: bool,
}

/// What [`record`] needs of a batch of outcomes, prepared before it goes to the writer
/// thread (whose time is the scarce one).
pub(super) struct RecordInput {
    /// `item_record`'s JSON parameter.
    param: String,
    /// (item id, lease token) of each outcome, in order.
    attempts: Vec<(i64, i64)>,
    /// Error detail of the failed outcomes, by item id.
    errors: HashMap<i64, Value>,
}

impl RecordInput {
    /// The input of recording `outcomes` (which have no spawns).
    pub(super) fn new(outcomes: &[Outcome]) -> Self {
        Self {
            param: shared::record_param(outcomes),
            attempts: outcomes
                .iter()
                .map(|o| (o.item_id, o.lease_token))
                .collect(),
            errors: outcomes
                .iter()
                .filter_map(|o| Some((o.item_id, shared::outcome_error(&o.kind)?.clone())))
                .collect(),
        }
    }
}

/// `Store::item_record` for outcomes without spawns: the fenced update, the counters,
/// attempt rows of failures, fan-in, and the check for an earlier commit of the same
/// attempts (a retried flush).
pub(super) fn record(
    conn: &Connection,
    input: &RecordInput,
    now: Millis,
) -> rusqlite::Result<RecordDone> {
    let mut stages: HashMap<i64, String> = HashMap::new();
    let recorded = query(conn, "item_record", &[&input.param, &now], |row| {
        stages.insert(row.get(0)?, row.get(9)?);
        Ok(Recorded {
            id: row.get(0)?,
            run_id: row.get(1)?,
            attempt: row.get(2)?,
            worker: row.get(3)?,
            started_at: row.get(4)?,
            external_call_at: row.get(5)?,
            group: row.get(6)?,
            has_waiters: row.get(7)?,
            status: row.get(8)?,
        })
    })?;
    count(conn, &recorded, &stages, now)?;
    let failures: Vec<(&Recorded, Option<&Value>)> = recorded
        .iter()
        .filter(|r| r.status != "completed")
        .map(|r| (r, input.errors.get(&r.id)))
        .collect();
    if !failures.is_empty() {
        let attempts = shared::attempts_param(failures.into_iter());
        execute(conn, "attempt_insert_many", &[&attempts, &now])?;
    }
    let mut wake = false;
    for row in recorded.iter().filter(|r| r.status == "completed") {
        release_dependents(conn, row)?;
        wake |= row.has_waiters || row.group.is_some();
    }
    let mut done: HashSet<i64> = recorded.iter().map(|r| r.id).collect();
    let missing: Vec<Value> = input
        .attempts
        .iter()
        .filter(|(id, _)| !done.contains(id))
        .map(|(id, token)| json!({ "id": id, "token": token }))
        .collect();
    if !missing.is_empty() {
        let param = Value::Array(missing).to_string();
        done.extend(query(conn, "item_recorded_before", &[&param], |r| {
            r.get::<_, i64>(0)
        })?);
    }
    let flags = input
        .attempts
        .iter()
        .map(|(id, _)| done.contains(id))
        .collect();
    Ok(RecordDone { flags, wake })
}

/// Adds the batch's changes to the counters (SQLite counts recorded outcomes itself).
fn count(
    conn: &Connection,
    recorded: &[Recorded],
    stages: &HashMap<i64, String>,
    now: Millis,
) -> rusqlite::Result<()> {
    if recorded.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<(i64, &str, &str), i64> = HashMap::new();
    let mut completions: HashMap<(i64, &str), i64> = HashMap::new();
    for r in recorded {
        let stage = stages[&r.id].as_str();
        *counts.entry((r.run_id, stage, "running")).or_default() -= 1;
        *counts.entry((r.run_id, stage, &r.status)).or_default() += 1;
        if r.status == "completed" {
            *completions.entry((r.run_id, stage)).or_default() += 1;
        }
    }
    let counts: Vec<Value> = counts
        .into_iter()
        .map(|((run, stage, status), n)| json!([run, stage, status, n]))
        .collect();
    execute(
        conn,
        "stage_counts_add",
        &[&Value::Array(counts).to_string()],
    )?;
    if !completions.is_empty() {
        let second = now / 1000;
        let completions: Vec<Value> = completions
            .into_iter()
            .map(|((run, stage), n)| json!([run, stage, second, n]))
            .collect();
        execute(
            conn,
            "stage_completions_add",
            &[&Value::Array(completions).to_string()],
        )?;
    }
    Ok(())
}

/// Counted fan-in: an item just completed; releases whoever waited for it.
fn release_dependents(conn: &Connection, row: &Recorded) -> rusqlite::Result<()> {
    if row.has_waiters {
        execute(conn, "item_release_waiters", &[&row.id])?;
    }
    if let Some(group) = &row.group {
        let remaining = query(conn, "group_leave", &[&row.run_id, group], |r| {
            r.get::<_, i64>(0)
        })?;
        if remaining.first() == Some(&0) {
            execute(conn, "group_release_waiters", &[&row.run_id, group])?;
            execute(conn, "group_mark_released", &[&row.run_id, group])?;
        }
    }
    Ok(())
}

/// `Store::item_heartbeat`: the ids whose lease was extended.
pub(super) fn heartbeat(
    conn: &Connection,
    ids: &[i64],
    token: i64,
    expires: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let ids = shared::json_array(ids);
    query(conn, "item_heartbeat", &[&ids, &token, &expires], |r| {
        r.get(0)
    })
}

/// `Store::item_start`: the prefetched ids moved to the attempt's token.
pub(super) fn start(
    conn: &Connection,
    ids: &[i64],
    ahead_token: i64,
    token: i64,
    expires: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let ids = shared::json_array(ids);
    query(
        conn,
        "item_start",
        &[&ids, &ahead_token, &token, &expires],
        |r| r.get(0),
    )
}

/// `Store::item_mark_external_many`: the ids marked.
pub(super) fn mark_many(
    conn: &Connection,
    marks: &[(i64, i64)],
    now: Millis,
) -> rusqlite::Result<Vec<i64>> {
    let param: Vec<Value> = marks
        .iter()
        .map(|(id, token)| json!({ "id": id, "token": token }))
        .collect();
    let param = Value::Array(param).to_string();
    query(conn, "item_mark_external_many", &[&param, &now], |r| {
        r.get(0)
    })
}

/// `Store::item_release`: how many items went back.
pub(super) fn release(
    conn: &Connection,
    ids: &[i64],
    token: i64,
    now: Millis,
) -> rusqlite::Result<u64> {
    let ids = shared::json_array(ids);
    Ok(execute(conn, "item_release", &[&ids, &token, &now])? as u64)
}
