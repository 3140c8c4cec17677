-- PostgreSQL statements of the store, paired by name with ../sqlite/queries.sql.
-- JSON parameters arrive as text and are cast to jsonb; JSON columns are read back as
-- text (::text) so both backends decode the same way. Bulk statements take a JSON array
-- and read it with jsonb_to_recordset (SQLite: json_each).

-- name: stage_register
INSERT INTO stage_policies (stage, max_attempts, backoff_base_ms, backoff_cap_ms, on_unknown, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (stage) DO UPDATE SET max_attempts = excluded.max_attempts,
    backoff_base_ms = excluded.backoff_base_ms, backoff_cap_ms = excluded.backoff_cap_ms,
    on_unknown = excluded.on_unknown, updated_at = excluded.updated_at;

-- name: run_insert
INSERT INTO runs (pipeline, fingerprint, input, params, created_at)
VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id;

-- name: run_get
SELECT id, pipeline, fingerprint, input, params::text, status, paused, summary::text, created_at, finished_at
FROM runs WHERE id = $1;

-- name: run_find
SELECT id, pipeline, fingerprint, input, params::text, status, paused, summary::text, created_at, finished_at
FROM runs WHERE pipeline = $1 AND fingerprint = $2 ORDER BY id DESC LIMIT 1;

-- name: run_list
SELECT id, pipeline, fingerprint, input, params::text, status, paused, summary::text, created_at, finished_at
FROM runs ORDER BY id DESC LIMIT $1;

-- name: run_set_summary
UPDATE runs SET summary = $2::jsonb WHERE id = $1;

-- name: run_cancel_items
UPDATE items SET status = 'cancelled', lease_token = NULL, lease_expires_at = NULL, updated_at = $2
WHERE run_id = $1 AND status IN ('pending', 'running', 'failed', 'unknown');

-- name: run_cancel
UPDATE runs SET status = 'cancelled', finished_at = $2 WHERE id = $1 AND status <> 'cancelled';

-- name: run_set_paused
UPDATE runs SET paused = $2 WHERE id = $1;

-- name: stage_pause
INSERT INTO stage_pauses (run_id, stage) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: stage_resume
DELETE FROM stage_pauses WHERE run_id = $1 AND stage = $2;

-- name: run_ready_to_finish
-- Runs still marked running where nothing can make progress: every item is final, or
-- waits for an input that is dead. dead > 0 means the run failed (a retry reopens it).
-- Read from the counters (`pending` there means pending and not waiting).
SELECT r.id,
       COALESCE((SELECT sum(c.n) FROM stage_counts c WHERE c.run_id = r.id AND c.status = 'dead'), 0)::bigint
FROM runs r
WHERE r.status = 'running' AND NOT r.paused
  AND COALESCE((SELECT sum(c.n) FROM stage_counts c WHERE c.run_id = r.id
                AND c.status IN ('running', 'failed', 'unknown', 'pending')), 0) = 0;

-- name: run_finish
UPDATE runs SET status = $2, finished_at = $3 WHERE id = $1 AND status = 'running';

-- name: run_reopen
UPDATE runs SET status = 'running', finished_at = NULL WHERE id = $1 AND status = 'failed';

-- name: item_insert
INSERT INTO items (run_id, stage, key, group_name, payload, next_attempt_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $6, $6)
ON CONFLICT (run_id, stage, key) DO NOTHING RETURNING id;

-- name: item_insert_many
-- $3: JSON array of {stage, key, group?, payload} without dependencies.
INSERT INTO items (run_id, stage, key, group_name, payload, next_attempt_at, created_at, updated_at)
SELECT $1, i.stage, i.key, i."group", COALESCE(i.payload, 'null'::jsonb), $2, $2, $2
FROM jsonb_to_recordset($3::jsonb) AS i(stage text, key text, "group" text, payload jsonb)
ON CONFLICT (run_id, stage, key) DO NOTHING RETURNING group_name;

-- name: group_add
INSERT INTO groups (run_id, name, remaining, total) VALUES ($1, $2, $3, $3)
ON CONFLICT (run_id, name) DO UPDATE SET remaining = groups.remaining + $3, total = groups.total + $3;

-- name: item_lookup
SELECT id, status FROM items WHERE run_id = $1 AND stage = $2 AND key = $3;

-- name: item_wait_insert
INSERT INTO item_waits (input_id, waiter_id) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: item_set_has_waiters
UPDATE items SET has_waiters = TRUE WHERE id = $1;

-- name: item_add_waiting
UPDATE items SET waiting_on = waiting_on + $2 WHERE id = $1;

-- name: group_join
INSERT INTO groups (run_id, name, remaining, total) VALUES ($1, $2, 1, 1)
ON CONFLICT (run_id, name) DO UPDATE SET remaining = groups.remaining + 1, total = groups.total + 1;

-- name: group_remaining
SELECT remaining FROM groups WHERE run_id = $1 AND name = $2;

-- name: group_wait_insert
INSERT INTO group_waits (run_id, group_name, waiter_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING;

-- name: item_claim
-- Many workers claim at once: SKIP LOCKED lets each take different rows without waiting
-- (SQLite has a single writer instead).
WITH picked AS (
    SELECT i.id FROM items i
    WHERE i.stage = $1 AND i.status IN ('pending', 'failed') AND i.waiting_on = 0
      AND i.next_attempt_at <= $2
      -- $7: the one run this worker serves, or NULL for every run.
      AND ($7::bigint IS NULL OR i.run_id = $7)
      -- Runs that are not running or are paused, as one hashed set per statement: a
      -- correlated EXISTS over runs made the planner (once items had statistics and runs
      -- had none) expect a handful of matches and sort a scan of the whole table instead
      -- of reading items_due in order. Every item's run exists (foreign key).
      AND i.run_id NOT IN (SELECT r.id FROM runs r WHERE r.status <> 'running' OR r.paused)
      -- Paused stages the same way: a correlated NOT EXISTS, with the run bound as a
      -- constant ($7 of a worker serving one run), made the planner expect a single
      -- unpaused item and sort a scan of the whole table (plan_tests.rs).
      AND (i.run_id, i.stage) NOT IN (SELECT p.run_id, p.stage FROM stage_pauses p)
    ORDER BY i.next_attempt_at, i.id
    LIMIT $3
    FOR UPDATE OF i SKIP LOCKED)
UPDATE items SET status = 'running', attempts = items.attempts + 1, lease_token = $4,
    lease_expires_at = $5, worker = $6, claimed_at = $2, external_call_at = NULL,
    last_token = NULL, updated_at = $2
FROM picked WHERE items.id = picked.id
RETURNING items.id, items.run_id, items.key, items.payload::text, items.attempts, items.retry_base;

-- name: item_heartbeat
-- $1: the ids (bigint[]), matched with = ANY on the primary key (joined with unnest($1),
-- a table without statistics got a hash join over a scan of every row). Fenced writes test the lease token
-- alone: the CHECK items_token_while_running makes it imply `status = 'running'`, and a
-- status predicate would let the planner use the items_leased partial index (reading
-- every running item, as many as all workers hold) or misjudge how many rows match.
UPDATE items SET lease_expires_at = $3
WHERE items.id = ANY($1::bigint[]) AND items.lease_token = $2
RETURNING items.id;

-- name: item_mark_external
UPDATE items SET external_call_at = $3 WHERE id = $1 AND lease_token = $2;

-- name: item_record
-- $1..$6: parallel arrays (id, token, status, result, error, next_at), one element per
-- outcome; $7: now. Fenced by the lease token, driven by the primary key (see
-- item_heartbeat). last_token remembers whose outcome this is.
UPDATE items SET status = o.status,
    result = o.result,
    last_error = COALESCE(o.error, items.last_error),
    next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
    completed_at = CASE WHEN o.status = 'completed' THEN $7::bigint END,
    lease_token = NULL, lease_expires_at = NULL, last_token = o.token, updated_at = $7
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]::jsonb[], $5::text[]::jsonb[],
            $6::bigint[]) AS o(id, token, status, result, error, next_at)
WHERE items.id = o.id AND items.lease_token = o.token
RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
    items.external_call_at, items.group_name, items.has_waiters, items.status, items.stage;

-- name: item_rescue
-- As item_record, but only for leases that really expired (a heartbeat may have won).
UPDATE items SET status = o.status,
    last_error = o.error,
    next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
    lease_token = NULL, lease_expires_at = NULL, updated_at = $2
FROM jsonb_to_recordset($1::jsonb)
     AS o(id bigint, token bigint, status text, error jsonb, next_at bigint)
WHERE items.id = o.id AND items.lease_token = o.token AND items.status = 'running'
  AND items.lease_expires_at <= $2
RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
    items.external_call_at, items.group_name, items.has_waiters, items.status;

-- name: attempt_insert_many
-- Failed, dead and rescued attempts only: a success is read from its item row.
INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
SELECT a.item_id, a.run_id, a.attempt, a.worker, a.started_at, $2, a.external_call_at, a.outcome, a.error
FROM jsonb_to_recordset($1::jsonb)
     AS a(item_id bigint, run_id bigint, attempt bigint, worker text, started_at bigint,
          external_call_at bigint, outcome text, error jsonb);

-- name: item_release_waiters
UPDATE items SET waiting_on = waiting_on - 1
WHERE id IN (SELECT waiter_id FROM item_waits WHERE input_id = $1);

-- name: group_leave
UPDATE groups SET remaining = remaining - 1 WHERE run_id = $1 AND name = $2 RETURNING remaining;

-- name: group_release_waiters
UPDATE items SET waiting_on = waiting_on - 1
WHERE id IN (SELECT waiter_id FROM group_waits WHERE run_id = $1 AND group_name = $2 AND NOT released);

-- name: group_mark_released
UPDATE group_waits SET released = TRUE WHERE run_id = $1 AND group_name = $2 AND NOT released;

-- name: item_release
-- Graceful shutdown: attempts that never started an outside call give the item back as if
-- they had not happened. The others stay running until their lease expires and the
-- rescuer applies the stage's outcome-unknown policy.
UPDATE items SET status = CASE WHEN items.attempts - 1 > items.retry_base THEN 'failed' ELSE 'pending' END,
    attempts = items.attempts - 1, lease_token = NULL, lease_expires_at = NULL,
    next_attempt_at = $3, updated_at = $3
WHERE items.id = ANY($1::bigint[]) AND items.lease_token = $2 AND items.external_call_at IS NULL;

-- name: item_defer
-- An item whose endpoint's limiter is paused or has its circuit open goes back, its attempt
-- not counted, due again when the limiter may let it through ($3), instead of holding a
-- worker's slot until then.
UPDATE items SET status = CASE WHEN items.attempts - 1 > items.retry_base THEN 'failed' ELSE 'pending' END,
    attempts = items.attempts - 1, lease_token = NULL, lease_expires_at = NULL,
    next_attempt_at = $3, updated_at = $4
WHERE items.id = ANY($1::bigint[]) AND items.lease_token = $2 AND items.external_call_at IS NULL;

-- name: item_expired
-- Started attempts whose lease lapsed. Prefetched items (negative token) are not attempts
-- yet: item_unstarted_expired gives them back uncounted, even if their lease lapses
-- between the two statements of a maintenance pass.
SELECT i.id, i.lease_token, i.attempts, i.retry_base, i.external_call_at,
       COALESCE(p.max_attempts, 5), COALESCE(p.backoff_base_ms, 500), COALESCE(p.backoff_cap_ms, 60000),
       COALESCE(p.on_unknown, 'retry')
FROM items i LEFT JOIN stage_policies p ON p.stage = i.stage
WHERE i.status = 'running' AND i.lease_expires_at <= $1 AND i.lease_token > 0
ORDER BY i.lease_expires_at LIMIT $2;

-- name: item_retry
UPDATE items SET status = 'failed', next_attempt_at = $4, retry_base = attempts, updated_at = $4
WHERE run_id = $1 AND ($2::text IS NULL OR stage = $2)
  AND status IN (SELECT jsonb_array_elements_text($3::jsonb)) AND status IN ('failed', 'dead', 'unknown');

-- name: item_get
SELECT id, run_id, stage, key, group_name, payload::text, status, attempts, waiting_on, next_attempt_at,
       worker, lease_expires_at, result::text, last_error::text, created_at, completed_at
FROM items WHERE run_id = $1 AND stage = $2 AND key = $3;

-- name: item_list
SELECT id, run_id, stage, key, group_name, payload::text, status, attempts, waiting_on, next_attempt_at,
       worker, lease_expires_at, result::text, last_error::text, created_at, completed_at
FROM items
WHERE run_id = $1 AND ($2::text IS NULL OR stage = $2)
  AND status IN (SELECT jsonb_array_elements_text($3::jsonb)) AND id > $4
ORDER BY id LIMIT $5;

-- name: item_counts
-- From the counters, summed over shards (`waiting`: pending with waiting_on > 0).
SELECT stage, status, sum(n)::bigint FROM stage_counts WHERE run_id = $1
GROUP BY stage, status HAVING sum(n) <> 0 ORDER BY stage, status;

-- name: attempt_list
-- The view: stored attempts and the current success, read from the item row.
SELECT item_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error::text
FROM attempts WHERE item_id = $1 ORDER BY attempt, id IS NULL, id;

-- name: stage_completed_since
-- Whole seconds: a second that ends after $3 counts entirely.
SELECT COALESCE(sum(n), 0)::bigint FROM stage_completions
WHERE run_id = $1 AND stage = $2 AND second * 1000 + 999 > $3;

-- name: stage_remaining
SELECT COALESCE(sum(n), 0)::bigint FROM stage_counts
WHERE run_id = $1 AND stage = $2 AND status IN ('pending', 'waiting', 'running', 'failed', 'unknown');

-- name: history_prune
DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1;

-- name: limiter_upsert
INSERT INTO limiters (name, config, current_rate, tokens, refilled_at) VALUES ($1, $2::jsonb, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET config = excluded.config,
    current_rate = LEAST(limiters.current_rate, excluded.current_rate),
    tokens = LEAST(limiters.tokens, excluded.tokens);

-- name: limiter_get
-- FOR UPDATE serialises acquirers of one limiter across processes (SQLite: BEGIN IMMEDIATE).
SELECT name, config::text, current_rate, tokens, refilled_at, paused_until, circuit_open_until,
       failure_streak, throttles, circuit_opens,
       (SELECT count(*) FROM limiter_slots s WHERE s.limiter = l.name AND s.expires_at > $2)
       , open_streak, probe_holder, probe_until
FROM limiters l WHERE name = $1 FOR UPDATE;

-- name: limiter_list
SELECT name, config::text, current_rate, tokens, refilled_at, paused_until, circuit_open_until,
       failure_streak, throttles, circuit_opens,
       (SELECT count(*) FROM limiter_slots s WHERE s.limiter = l.name AND s.expires_at > $1)
       , open_streak, probe_holder, probe_until
FROM limiters l ORDER BY name;

-- name: limiter_save
UPDATE limiters SET current_rate = $2, tokens = $3, refilled_at = $4, paused_until = $5,
    circuit_open_until = $6, failure_streak = $7, throttles = $8, circuit_opens = $9,
    open_streak = $10, probe_holder = $11, probe_until = $12
WHERE name = $1;

-- name: limiter_slot_expire
DELETE FROM limiter_slots WHERE limiter = $1 AND expires_at <= $2;

-- name: limiter_slot_take
INSERT INTO limiter_slots (limiter, holder, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (limiter, holder) DO UPDATE SET expires_at = excluded.expires_at;

-- name: limiter_slot_give
DELETE FROM limiter_slots WHERE limiter = $1 AND holder = $2;

-- name: migrate_lock
-- Held by the migrating transaction until it commits: one process migrates at a time.
SELECT pg_advisory_xact_lock(7305986234117740411);

-- name: db_now
-- The server's clock in ms since the epoch: leases, backoff and limiters are reckoned by
-- it, not by each worker's own clock (SQLite has no server: its stores use the local clock).
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint;

-- name: notify
-- Wakes LISTENing workers when the transaction commits (SQLite has no equivalent: its
-- workers poll, and those in the same process are woken directly).
SELECT pg_notify('idempipe_work', '');

-- name: item_record_all
-- item_record, the attempts it writes and the fan-in it releases, as ONE statement
-- (PostgreSQL's data-modifying CTEs) instead of a transaction of several round trips.
-- Used when no outcome spawns items. Parameters as item_record. All CTEs see the same
-- snapshot: `upd` changes running items, `wake` pending waiters, so no row is changed
-- twice; a waiter released by an item and a group at once is decremented by the sum
-- (`dec`). A success writes no attempt row (its item row is its history).
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]::jsonb[],
                         $5::text[]::jsonb[], $6::bigint[]) AS o(id, token, status, result, error, next_at)
), upd AS (
    UPDATE items SET status = o.status,
        result = o.result,
        last_error = COALESCE(o.error, items.last_error),
        next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
        completed_at = CASE WHEN o.status = 'completed' THEN $7::bigint END,
        lease_token = NULL, lease_expires_at = NULL, last_token = o.token, updated_at = $7
    FROM o
    WHERE items.id = o.id AND items.lease_token = o.token
    RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
        items.external_call_at, items.group_name, items.has_waiters, items.status
), att AS (
    INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
    SELECT upd.id, upd.run_id, upd.attempts, upd.worker, upd.claimed_at, $7, upd.external_call_at, upd.status, o.error
    FROM upd JOIN o ON o.id = upd.id
    WHERE upd.status <> 'completed'
), grp AS (
    UPDATE groups g SET remaining = g.remaining - c.n
    FROM (SELECT run_id, group_name, count(*) AS n FROM upd
          WHERE status = 'completed' AND group_name IS NOT NULL GROUP BY run_id, group_name) c
    WHERE g.run_id = c.run_id AND g.name = c.group_name
    RETURNING g.run_id, g.name, g.remaining
), gw AS (
    UPDATE group_waits SET released = TRUE FROM grp
    WHERE group_waits.run_id = grp.run_id AND group_waits.group_name = grp.name
      AND grp.remaining = 0 AND NOT group_waits.released
    RETURNING group_waits.waiter_id
), dec AS (
    SELECT waiter_id, count(*) AS n FROM (
        SELECT iw.waiter_id FROM item_waits iw JOIN upd ON iw.input_id = upd.id
        WHERE upd.status = 'completed' AND upd.has_waiters
        UNION ALL SELECT waiter_id FROM gw) x
    GROUP BY waiter_id
), wake AS (
    UPDATE items w SET waiting_on = w.waiting_on - dec.n FROM dec WHERE w.id = dec.waiter_id
    RETURNING w.id
)
SELECT upd.id, upd.run_id, upd.attempts, upd.worker, upd.claimed_at, upd.external_call_at,
       upd.group_name, upd.has_waiters, upd.status, (SELECT count(*) FROM wake) AS woken
FROM upd;

-- name: run_set_params
UPDATE runs SET params = $2::jsonb WHERE id = $1;

-- name: run_reopen_finished
UPDATE runs SET status = 'running', finished_at = NULL
WHERE id = $1 AND status IN ('failed', 'completed');

-- name: item_redo_unfinished
-- item_redo: failed, dead and unknown items of the stages ($2, JSON array) are due now
-- with a fresh budget (as item_retry).
UPDATE items SET status = 'failed', next_attempt_at = $3, retry_base = attempts, updated_at = $3
WHERE run_id = $1 AND stage IN (SELECT jsonb_array_elements_text($2::jsonb))
  AND status IN ('failed', 'dead', 'unknown');

-- name: item_redo_completed
-- item_redo: completed items of the stages become pending with a fresh budget; their
-- result is cleared, their attempts stay.
UPDATE items SET status = 'pending', next_attempt_at = $3, retry_base = attempts, result = NULL,
    completed_at = NULL, updated_at = $3
WHERE run_id = $1 AND stage IN (SELECT jsonb_array_elements_text($2::jsonb)) AND status = 'completed'
RETURNING id, group_name;

-- name: item_rearm_waiters
-- item_redo: whoever waited for a reopened item ($1, JSON array of ids) waits for it
-- again, once per reopened input (every waiter, as its completion releases every waiter).
UPDATE items SET waiting_on = waiting_on + (
    SELECT count(*) FROM item_waits w
    WHERE w.waiter_id = items.id
      AND w.input_id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint))
WHERE id IN (SELECT waiter_id FROM item_waits
             WHERE input_id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint));

-- name: group_reopen
-- item_redo: $3 members of the group are not done any more; returns the count before.
UPDATE groups SET remaining = remaining + $3::bigint WHERE run_id = $1 AND name = $2
RETURNING remaining - $3::bigint;

-- name: group_rearm_waiters
-- item_redo: the group had released its waiters; they wait again.
UPDATE items SET waiting_on = waiting_on + 1
WHERE id IN (SELECT waiter_id FROM group_waits WHERE run_id = $1 AND group_name = $2 AND released);

-- name: group_mark_unreleased
UPDATE group_waits SET released = FALSE WHERE run_id = $1 AND group_name = $2 AND released;

-- name: worker_beat
-- A worker says it is alive until $7 (a few heartbeat periods from now).
INSERT INTO workers (name, host, pid, run_id, started_at, last_seen_at, alive_until)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    run_id = excluded.run_id, last_seen_at = excluded.last_seen_at,
    alive_until = excluded.alive_until;

-- name: worker_prune
-- Rows of workers that died without saying so, once they are long stale.
DELETE FROM workers WHERE alive_until < $1;

-- name: worker_forget
DELETE FROM workers WHERE name = $1;

-- name: worker_list
SELECT name, host, pid, run_id, started_at, last_seen_at, alive_until
FROM workers ORDER BY name;

-- name: run_activity
-- Of the running runs among $1 (JSON array of ids): whether an item holds a live lease,
-- whether a live worker serves the run (or every run), and whether any item was ever claimed.
SELECT r.id,
    EXISTS (SELECT 1 FROM items i WHERE i.run_id = r.id AND i.status = 'running'
            AND i.lease_expires_at > $2) AS leased,
    EXISTS (SELECT 1 FROM workers w WHERE w.alive_until > $2
            AND (w.run_id IS NULL OR w.run_id = r.id)) AS served,
    EXISTS (SELECT 1 FROM items i WHERE i.run_id = r.id AND i.claimed_at IS NOT NULL) AS started
FROM runs r
WHERE r.id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint) AND r.status = 'running';

-- name: item_start
-- A prefetched item's handler starts: its lease moves from the claim-ahead token ($2,
-- negative) to the attempt's token ($3) with a full lease ($4). Until then a lapsed lease
-- gives it back without counting the attempt (item_unstarted_expired). $1: the ids
-- (bigint[]), driven by the primary key as item_heartbeat is (ids read from a JSON array
-- with a semi-join were planned as a scan of every row: 0.7 ms per start on 3,000 items).
UPDATE items SET lease_token = $3, lease_expires_at = $4
WHERE items.id = ANY($1::bigint[]) AND items.lease_token = $2
RETURNING items.id;

-- name: item_unstarted_expired
-- Prefetched items whose worker stopped before their handler started (a negative token
-- marks them): item_release gives them back without counting the attempt.
SELECT id, lease_token FROM items
WHERE status = 'running' AND lease_expires_at <= $1 AND lease_token < 0
ORDER BY lease_expires_at LIMIT $2;

-- name: item_mark_external_many
-- item_mark_external for many attempts at once: $1 is a JSON array of {id, token}.
-- Driven by the primary key (see item_heartbeat for the IS TRUE).
UPDATE items SET external_call_at = $2
FROM jsonb_to_recordset($1::jsonb) AS m(id bigint, token bigint)
WHERE items.id = m.id AND items.lease_token = m.token AND (items.status = 'running') IS TRUE
RETURNING items.id;

-- name: item_recorded_before
-- Of the (id, token) pairs ($1, JSON array of {id, token}), those whose outcome is in:
-- a retried flush after a commit whose answer was lost finds its own commit here.
SELECT i.id FROM items i
JOIN jsonb_to_recordset($1::jsonb) AS o(id bigint, token bigint)
  ON i.id = o.id AND i.last_token = o.token;

-- name: attempt_keep_completed
-- item_redo: before completed items of the stages ($2, JSON array) reopen, their success,
-- until now read from the item row, is stored as an attempt row.
INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
SELECT i.id, i.run_id, i.attempts, i.worker, i.claimed_at, i.completed_at, i.external_call_at, 'completed', NULL
FROM items i
WHERE i.run_id = $1 AND i.stage IN (SELECT jsonb_array_elements_text($2::jsonb)) AND i.status = 'completed'
  AND NOT EXISTS (SELECT 1 FROM attempt_log a
                  WHERE a.item_id = i.id AND a.attempt = i.attempts AND a.outcome = 'completed');

-- name: stage_counts_fold
-- Maintenance: moves the counter shards of sessions that ended (shard = backend pid, see
-- migration 5) into shard 0, so the counter tables do not grow with every connection
-- ever opened. Sums are unchanged. Only rows of running runs, read by primary key per run
-- (the rows of finished runs no longer change, and a pass every second must not read a
-- history of per-second rows). Plans that cannot go bad without statistics: the locking
-- LATERAL subquery is not flattened (as a join it was planned as a sequential scan), and
-- the DELETE finds the rows it locked by ctid (a TID scan; on a table of a page or two a
-- sequential scan may be cheaper and is taken). Rows are taken with SKIP
-- LOCKED, so the fold never waits for (nor deadlocks with) a session that reuses a pid;
-- shard 0 rows are written in key order.
WITH live AS (
    SELECT a.pid FROM pg_stat_activity a WHERE a.pid IS NOT NULL
), gone AS (
    DELETE FROM stage_counts c
    WHERE c.ctid = ANY (ARRAY(
        SELECT s.ctid FROM runs r, LATERAL (
            SELECT x.ctid FROM stage_counts x
            WHERE x.run_id = r.id AND x.shard <> 0 AND x.shard NOT IN (SELECT pid FROM live)
            FOR UPDATE SKIP LOCKED) s
        WHERE r.status = 'running'))
    RETURNING c.run_id, c.stage, c.status, c.n
), gone_done AS (
    DELETE FROM stage_completions c
    WHERE c.ctid = ANY (ARRAY(
        SELECT s.ctid FROM runs r, LATERAL (
            SELECT x.ctid FROM stage_completions x
            WHERE x.run_id = r.id AND x.shard <> 0 AND x.shard NOT IN (SELECT pid FROM live)
            FOR UPDATE SKIP LOCKED) s
        WHERE r.status = 'running'))
    RETURNING c.run_id, c.stage, c.second, c.n
), counts AS (
    INSERT INTO stage_counts AS c (run_id, stage, status, shard, n)
    SELECT run_id, stage, status, 0, sum(n) FROM gone
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = c.n + excluded.n
    RETURNING 1
), done AS (
    INSERT INTO stage_completions AS c (run_id, stage, second, shard, n)
    SELECT run_id, stage, second, 0, sum(n) FROM gone_done
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (run_id, stage, second, shard) DO UPDATE SET n = c.n + excluded.n
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM gone_done);

-- name: item_record_claim
-- item_record_all and item_claim as ONE statement (Store::item_record_and_claim without
-- spawns): one round trip and one commit per item at concurrency 1. $1..$7 as
-- item_record_all; $8..$13 the claim's stage, limit, lease token, lease expiry, worker and
-- run (its `now` is $7). One snapshot for all CTEs: `pick` sees the recorded items still
-- running and the woken waiters still waiting, so it never touches a row `upd` or `wake`
-- changes (an item recorded as failed is claimable from the next statement on). Rows:
-- 'r' per recorded item (id, and the waiters woken in `woken`), 'c' per claimed item.
-- The CTEs `o` to `wake` are item_record_all's, word for word (a unit test in
-- store/queries.rs holds them equal): change both together.
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]::jsonb[],
                         $5::text[]::jsonb[], $6::bigint[]) AS o(id, token, status, result, error, next_at)
), upd AS (
    UPDATE items SET status = o.status,
        result = o.result,
        last_error = COALESCE(o.error, items.last_error),
        next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
        completed_at = CASE WHEN o.status = 'completed' THEN $7::bigint END,
        lease_token = NULL, lease_expires_at = NULL, last_token = o.token, updated_at = $7
    FROM o
    WHERE items.id = o.id AND items.lease_token = o.token
    RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
        items.external_call_at, items.group_name, items.has_waiters, items.status
), att AS (
    INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
    SELECT upd.id, upd.run_id, upd.attempts, upd.worker, upd.claimed_at, $7, upd.external_call_at, upd.status, o.error
    FROM upd JOIN o ON o.id = upd.id
    WHERE upd.status <> 'completed'
), grp AS (
    UPDATE groups g SET remaining = g.remaining - c.n
    FROM (SELECT run_id, group_name, count(*) AS n FROM upd
          WHERE status = 'completed' AND group_name IS NOT NULL GROUP BY run_id, group_name) c
    WHERE g.run_id = c.run_id AND g.name = c.group_name
    RETURNING g.run_id, g.name, g.remaining
), gw AS (
    UPDATE group_waits SET released = TRUE FROM grp
    WHERE group_waits.run_id = grp.run_id AND group_waits.group_name = grp.name
      AND grp.remaining = 0 AND NOT group_waits.released
    RETURNING group_waits.waiter_id
), dec AS (
    SELECT waiter_id, count(*) AS n FROM (
        SELECT iw.waiter_id FROM item_waits iw JOIN upd ON iw.input_id = upd.id
        WHERE upd.status = 'completed' AND upd.has_waiters
        UNION ALL SELECT waiter_id FROM gw) x
    GROUP BY waiter_id
), wake AS (
    UPDATE items w SET waiting_on = w.waiting_on - dec.n FROM dec WHERE w.id = dec.waiter_id
    RETURNING w.id
), pick AS (
    SELECT i.id FROM items i
    WHERE i.stage = $8 AND i.status IN ('pending', 'failed') AND i.waiting_on = 0
      AND i.next_attempt_at <= $7
      AND ($13::bigint IS NULL OR i.run_id = $13)
      AND i.run_id NOT IN (SELECT r.id FROM runs r WHERE r.status <> 'running' OR r.paused)
      AND (i.run_id, i.stage) NOT IN (SELECT p.run_id, p.stage FROM stage_pauses p)
    ORDER BY i.next_attempt_at, i.id
    LIMIT $9
    FOR UPDATE OF i SKIP LOCKED
), claimed AS (
    UPDATE items SET status = 'running', attempts = items.attempts + 1, lease_token = $10,
        lease_expires_at = $11, worker = $12, claimed_at = $7, external_call_at = NULL,
        last_token = NULL, updated_at = $7
    FROM pick WHERE items.id = pick.id
    RETURNING items.id, items.run_id, items.key, items.payload::text, items.attempts, items.retry_base
)
SELECT 'r'::text, upd.id, NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
       (SELECT count(*) FROM wake)
FROM upd
UNION ALL
SELECT 'c'::text, claimed.id, claimed.run_id, claimed.key, claimed.payload, claimed.attempts,
       claimed.retry_base, 0::bigint
FROM claimed;
