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
use crate::limiter::{LimiterConfig, LimiterFeedback, LimiterState, Permit, Unused};
use crate::model::{Dep, NewItem};
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
    /// Items spawned by the outcomes that have some, by item id.
    spawns: HashMap<i64, Spawns>,
}

impl RecordInput {
    /// The input of recording `outcomes`.
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
            spawns: outcomes
                .iter()
                .filter(|o| !o.spawns.is_empty())
                .map(|o| (o.item_id, Spawns::new(&o.spawns)))
                .collect(),
        }
    }
}

/// The items one completion spawns, prepared off the writer thread: the JSON of each
/// insert statement, and the inputs of the items that wait for some.
pub(super) struct Spawns {
    /// `item_insert_spawned`'s JSON parameter, per chunk of [`shared::INSERT_CHUNK`] items.
    chunks: Vec<String>,
    /// The dependencies of each item that has some, by (stage, key).
    deps: HashMap<(String, String), Vec<Dep>>,
}

impl Spawns {
    fn new(items: &[NewItem]) -> Self {
        let all: Vec<&NewItem> = items.iter().collect();
        Self {
            chunks: all
                .chunks(shared::INSERT_CHUNK)
                .map(shared::insert_param)
                .collect(),
            deps: items
                .iter()
                .filter(|i| !i.deps.is_empty())
                .map(|i| ((i.stage.clone(), i.key.clone()), i.deps.clone()))
                .collect(),
        }
    }
}

/// Inserts the items one completion of run `run_id` spawned, a statement per table for
/// the whole batch: the items, their groups, then the waits of those with inputs. An
/// item waits for each input item not completed yet and each group with members left
/// (every member spawned here counts, wherever it is listed); items whose key exists
/// already are skipped with their links.
fn insert_spawns(
    conn: &Connection,
    run_id: i64,
    spawns: &Spawns,
    now: Millis,
) -> rusqlite::Result<()> {
    // (id, stage, key, group) of each item inserted.
    let mut inserted: Vec<(i64, String, String, Option<String>)> = Vec::new();
    for chunk in &spawns.chunks {
        inserted.extend(query(
            conn,
            "item_insert_spawned",
            &[&run_id, &now, chunk],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?);
    }
    let mut members: HashMap<&str, i64> = HashMap::new();
    for (_, _, _, group) in &inserted {
        if let Some(group) = group {
            *members.entry(group.as_str()).or_default() += 1;
        }
    }
    if !members.is_empty() {
        let param: Vec<Value> = members.iter().map(|(g, n)| json!([g, n])).collect();
        execute(
            conn,
            "group_add_many",
            &[&run_id, &Value::Array(param).to_string()],
        )?;
    }
    // The new items that wait, and the inputs they name.
    let waiters: Vec<(i64, &str, &str, &Vec<Dep>)> = inserted
        .iter()
        .filter_map(|(id, stage, key, _)| {
            let deps = spawns.deps.get(&(stage.clone(), key.clone()))?;
            Some((*id, stage.as_str(), key.as_str(), deps))
        })
        .collect();
    if waiters.is_empty() {
        return Ok(());
    }
    let mut items: HashSet<(&str, &str)> = HashSet::new();
    let mut groups: HashSet<&str> = HashSet::new();
    for (_, _, _, deps) in &waiters {
        for dep in deps.iter() {
            match dep {
                Dep::Item { stage, key } => {
                    items.insert((stage, key));
                }
                Dep::Group(group) => {
                    groups.insert(group);
                }
            }
        }
    }
    // (stage, key) -> (id, completed)
    let mut inputs: HashMap<(String, String), (i64, bool)> = HashMap::new();
    if !items.is_empty() {
        let param: Vec<Value> = items.iter().map(|(s, k)| json!([s, k])).collect();
        let found = query(
            conn,
            "item_lookup_many",
            &[&run_id, &Value::Array(param).to_string()],
            |r| {
                let status: String = r.get(3)?;
                Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, status == "completed")))
            },
        )?;
        inputs.extend(found);
    }
    let mut remaining: HashMap<String, i64> = HashMap::new();
    if !groups.is_empty() {
        let param: Vec<&str> = groups.into_iter().collect();
        remaining.extend(query(
            conn,
            "group_remaining_many",
            &[&run_id, &shared::json_array(&param)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?);
    }
    let mut item_waits: Vec<Value> = Vec::new();
    let mut waited_for: HashSet<i64> = HashSet::new();
    let mut group_waits: Vec<Value> = Vec::new();
    let mut waiting: Vec<Value> = Vec::new();
    for (waiter, stage, key, deps) in waiters {
        let mut n: i64 = 0;
        let mut seen: HashSet<&Dep> = HashSet::new();
        for dep in deps.iter().filter(|d| seen.insert(d)) {
            match dep {
                Dep::Item {
                    stage: in_stage,
                    key: in_key,
                } => {
                    let Some(&(input, completed)) = inputs.get(&(in_stage.clone(), in_key.clone()))
                    else {
                        return Err(missing(format!(
                            "item {in_stage}/{in_key} of run {run_id} (a dependency of {stage}/{key})"
                        )));
                    };
                    if !completed {
                        item_waits.push(json!([input, waiter]));
                        waited_for.insert(input);
                        n += 1;
                    }
                }
                Dep::Group(group) => {
                    if remaining.get(group).copied().unwrap_or(0) > 0 {
                        group_waits.push(json!([group, waiter]));
                        n += 1;
                    }
                }
            }
        }
        if n > 0 {
            waiting.push(json!([waiter, n]));
        }
    }
    if !item_waits.is_empty() {
        execute(
            conn,
            "item_wait_insert_many",
            &[&Value::Array(item_waits).to_string()],
        )?;
        let ids: Vec<i64> = waited_for.into_iter().collect();
        execute(
            conn,
            "item_set_has_waiters_many",
            &[&shared::json_array(&ids)],
        )?;
    }
    if !group_waits.is_empty() {
        execute(
            conn,
            "group_wait_insert_many",
            &[&run_id, &Value::Array(group_waits).to_string()],
        )?;
    }
    if !waiting.is_empty() {
        execute(
            conn,
            "item_add_waiting_many",
            &[&Value::Array(waiting).to_string()],
        )?;
    }
    Ok(())
}

/// A row the statements need is missing: the unit fails naming it.
fn missing(what: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("{what} not found").into())
}

/// `Store::item_record`: the fenced update, the counters, attempt rows of failures,
/// fan-in, the items completions spawn, and the check for an earlier commit of the same
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
        let spawns = input.spawns.get(&row.id);
        if let Some(spawns) = spawns {
            insert_spawns(conn, row.run_id, spawns, now)?;
        }
        wake |= row.has_waiters || row.group.is_some() || spawns.is_some();
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

/// Reads limiter `name` (its row and the concurrency slots held at `now`); `None` when
/// there is no such limiter.
fn limiter_load(
    conn: &Connection,
    name: &str,
    now: Millis,
) -> rusqlite::Result<Option<LimiterState>> {
    let rows = query(conn, "limiter_get", &[&name, &now], |row| {
        let config: String = row.get(1)?;
        let config: LimiterConfig = serde_json::from_str(&config)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, e.into()))?;
        Ok(LimiterState {
            config,
            current_rate: row.get(2)?,
            tokens: row.get(3)?,
            refilled_at: row.get(4)?,
            paused_until: row.get(5)?,
            circuit_open_until: row.get(6)?,
            failure_streak: row.get(7)?,
            throttles: row.get(8)?,
            circuit_opens: row.get(9)?,
            in_flight: row.get(10)?,
            open_streak: row.get(11)?,
            probe_holder: row.get(12)?,
            probe_until: row.get(13)?,
        })
    })?;
    Ok(rows.into_iter().next())
}

/// Writes a limiter's learned state back.
fn limiter_save(conn: &Connection, s: &LimiterState) -> rusqlite::Result<()> {
    execute(
        conn,
        "limiter_save",
        &[
            &s.config.name,
            &s.current_rate,
            &s.tokens,
            &s.refilled_at,
            &s.paused_until,
            &s.circuit_open_until,
            &s.failure_streak,
            &s.throttles,
            &s.circuit_opens,
            &s.open_streak,
            &s.probe_holder,
            &s.probe_until,
        ],
    )
    .map(drop)
}

/// `Store::limiter_lease`: the chunk's permit (if chunks are allowed) and the state
/// after; `None` when the limiter does not exist.
pub(super) fn limiter_lease(
    conn: &Connection,
    name: &str,
    cost: f64,
    successes: u32,
    unused: Unused,
    now: Millis,
) -> rusqlite::Result<Option<(Option<Permit>, LimiterState)>> {
    let Some(mut state) = limiter_load(conn, name, now)? else {
        return Ok(None);
    };
    let (permit, changed) = state.lease(cost, successes, unused, now);
    if changed {
        limiter_save(conn, &state)?;
    }
    Ok(Some((permit, state)))
}

/// `Store::limiter_acquire`: a per-call permit, with a concurrency slot when capped;
/// `None` when the limiter does not exist.
pub(super) fn limiter_acquire(
    conn: &Connection,
    name: &str,
    cost: f64,
    holder: i64,
    hold_until: Millis,
    now: Millis,
) -> rusqlite::Result<Option<Permit>> {
    execute(conn, "limiter_slot_expire", &[&name, &now])?;
    let Some(mut state) = limiter_load(conn, name, now)? else {
        return Ok(None);
    };
    let (permit, holds_slot) = state.acquire(cost, holder, hold_until, now);
    if holds_slot {
        execute(conn, "limiter_slot_take", &[&name, &holder, &hold_until])?;
    }
    limiter_save(conn, &state)?;
    Ok(Some(permit))
}

/// `Store::limiter_release`: gives the slot back and learns from the call's outcome;
/// `false` when the limiter does not exist.
pub(super) fn limiter_release(
    conn: &Connection,
    name: &str,
    holder: i64,
    feedback: LimiterFeedback,
    now: Millis,
) -> rusqlite::Result<bool> {
    execute(conn, "limiter_slot_give", &[&name, &holder])?;
    let Some(mut state) = limiter_load(conn, name, now)? else {
        return Ok(false);
    };
    if state.release(feedback, holder, now) {
        limiter_save(conn, &state)?;
    }
    Ok(true)
}
