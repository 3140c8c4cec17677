-- SQLite statements of the store, paired by name with ../postgres/queries.sql.
-- Parameters are $1, $2, ... in both dialects. JSON parameters are JSON text; bulk
-- statements take a JSON array and read it with json_each (PostgreSQL: jsonb_to_recordset).

-- name: stage_register
INSERT INTO stage_policies (stage, max_attempts, backoff_base_ms, backoff_cap_ms, on_unknown, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (stage) DO UPDATE SET max_attempts = excluded.max_attempts,
    backoff_base_ms = excluded.backoff_base_ms, backoff_cap_ms = excluded.backoff_cap_ms,
    on_unknown = excluded.on_unknown, updated_at = excluded.updated_at;

-- name: run_insert
INSERT INTO runs (pipeline, fingerprint, input, params, created_at)
VALUES ($1, $2, $3, $4, $5) RETURNING id;

-- name: run_get
SELECT id, pipeline, fingerprint, input, params, status, paused, summary, created_at, finished_at
FROM runs WHERE id = $1;

-- name: run_find
SELECT id, pipeline, fingerprint, input, params, status, paused, summary, created_at, finished_at
FROM runs WHERE pipeline = $1 AND fingerprint = $2 ORDER BY id DESC LIMIT 1;

-- name: run_list
SELECT id, pipeline, fingerprint, input, params, status, paused, summary, created_at, finished_at
FROM runs ORDER BY id DESC LIMIT $1;

-- name: run_set_summary
UPDATE runs SET summary = $2 WHERE id = $1;

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
       COALESCE((SELECT sum(c.n) FROM stage_counts c WHERE c.run_id = r.id AND c.status = 'dead'), 0)
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
VALUES ($1, $2, $3, $4, $5, $6, $6, $6)
ON CONFLICT (run_id, stage, key) DO NOTHING RETURNING id;

-- name: item_insert_many
-- $3: JSON array of {stage, key, group?, payload} without dependencies. WHERE true keeps
-- SQLite's parser from reading ON CONFLICT as a join constraint.
INSERT INTO items (run_id, stage, key, group_name, payload, next_attempt_at, created_at, updated_at)
SELECT $1, value ->> 'stage', value ->> 'key', value ->> 'group', value -> 'payload', $2, $2, $2
FROM json_each($3) WHERE true
ON CONFLICT (run_id, stage, key) DO NOTHING RETURNING group_name;

-- name: group_add
INSERT INTO groups (run_id, name, remaining, total) VALUES ($1, $2, $3, $3)
ON CONFLICT (run_id, name) DO UPDATE SET remaining = remaining + $3, total = total + $3;

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
ON CONFLICT (run_id, name) DO UPDATE SET remaining = remaining + 1, total = total + 1;

-- name: group_remaining
SELECT remaining FROM groups WHERE run_id = $1 AND name = $2;

-- name: group_wait_insert
INSERT INTO group_waits (run_id, group_name, waiter_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING;

-- name: item_insert_spawned
-- SQLite only: the writer thread (hot.rs) inserts a completion's spawned items, with or
-- without dependencies, in one statement ($3 as item_insert_many's) and links the new
-- ones to their groups and inputs with the *_many statements below. Existing keys are
-- skipped, as by item_insert.
INSERT INTO items (run_id, stage, key, group_name, payload, next_attempt_at, created_at, updated_at)
SELECT $1, value ->> 'stage', value ->> 'key', value ->> 'group', value -> 'payload', $2, $2, $2
FROM json_each($3) WHERE true
ON CONFLICT (run_id, stage, key) DO NOTHING RETURNING id, stage, key, group_name;

-- name: group_add_many
-- SQLite only. $2: JSON array of [group, members joining].
INSERT INTO groups (run_id, name, remaining, total)
SELECT $1, value ->> 0, value ->> 1, value ->> 1 FROM json_each($2) WHERE true
ON CONFLICT (run_id, name) DO UPDATE
SET remaining = remaining + excluded.remaining, total = total + excluded.total;

-- name: item_lookup_many
-- SQLite only. $2: JSON array of [stage, key]; the items of run $1 among them.
SELECT i.stage, i.key, i.id, i.status
FROM json_each($2) j JOIN items i
  ON i.run_id = $1 AND i.stage = j.value ->> 0 AND i.key = j.value ->> 1;

-- name: group_remaining_many
-- SQLite only. $2: JSON array of group names.
SELECT name, remaining FROM groups
WHERE run_id = $1 AND name IN (SELECT value FROM json_each($2));

-- name: item_wait_insert_many
-- SQLite only. $1: JSON array of [input id, waiter id]; marks the inputs as waited for.
INSERT INTO item_waits (input_id, waiter_id)
SELECT value ->> 0, value ->> 1 FROM json_each($1) WHERE true ON CONFLICT DO NOTHING;

-- name: item_set_has_waiters_many
-- SQLite only. $1: JSON array of item ids.
UPDATE items SET has_waiters = TRUE WHERE id IN (SELECT value FROM json_each($1));

-- name: group_wait_insert_many
-- SQLite only. $2: JSON array of [group, waiter id].
INSERT INTO group_waits (run_id, group_name, waiter_id)
SELECT $1, value ->> 0, value ->> 1 FROM json_each($2) WHERE true ON CONFLICT DO NOTHING;

-- name: item_add_waiting_many
-- SQLite only. $1: JSON array of [item id, inputs it waits for].
UPDATE items SET waiting_on = waiting_on + (w.value ->> 1)
FROM json_each($1) w WHERE items.id = w.value ->> 0;

-- name: item_claim
-- SQLite has one writer at a time (the transaction is BEGIN IMMEDIATE), so there is no
-- SKIP LOCKED: the subquery picks, the UPDATE takes, and no other claim can interleave.
UPDATE items SET status = 'running', attempts = attempts + 1, lease_token = $4,
    lease_expires_at = $5, worker = $6, claimed_at = $2, external_call_at = NULL,
    last_token = NULL, updated_at = $2
WHERE id IN (
    SELECT i.id FROM items i
    WHERE i.stage = $1 AND i.status IN ('pending', 'failed') AND i.waiting_on = 0
      AND i.next_attempt_at <= $2
      -- $7: the one run this worker serves, or NULL for every run.
      AND ($7 IS NULL OR i.run_id = $7)
      AND EXISTS (SELECT 1 FROM runs r WHERE r.id = i.run_id AND r.status = 'running' AND NOT r.paused)
      AND NOT EXISTS (SELECT 1 FROM stage_pauses p WHERE p.run_id = i.run_id AND p.stage = i.stage)
    ORDER BY i.next_attempt_at, i.id
    LIMIT $3)
RETURNING id, run_id, key, payload, attempts, retry_base;

-- name: item_heartbeat
UPDATE items SET lease_expires_at = $3
WHERE id IN (SELECT value FROM json_each($1)) AND lease_token = $2 AND status = 'running'
RETURNING id;

-- name: item_mark_external
UPDATE items SET external_call_at = $3 WHERE id = $1 AND lease_token = $2 AND status = 'running';

-- name: item_record
-- $1: JSON array of {id, token, status, result?, error?, next_at?}; fenced by the lease
-- token. last_token remembers whose outcome this is.
UPDATE items SET status = o.status,
    result = o.result,
    last_error = COALESCE(o.error, items.last_error),
    next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
    completed_at = CASE WHEN o.status = 'completed' THEN $2 END,
    lease_token = NULL, lease_expires_at = NULL, last_token = o.token, updated_at = $2
FROM (SELECT value ->> 'id' AS id, value ->> 'token' AS token, value ->> 'status' AS status,
             value -> 'result' AS result, value -> 'error' AS error, value ->> 'next_at' AS next_at
      FROM json_each($1)) AS o
WHERE items.id = o.id AND items.lease_token = o.token AND items.status = 'running'
RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
    items.external_call_at, items.group_name, items.has_waiters, items.status, items.stage;

-- name: item_rescue
-- As item_record, but only for leases that really expired (a heartbeat may have won).
UPDATE items SET status = o.status,
    last_error = o.error,
    next_attempt_at = COALESCE(o.next_at, items.next_attempt_at),
    lease_token = NULL, lease_expires_at = NULL, updated_at = $2
FROM (SELECT value ->> 'id' AS id, value ->> 'token' AS token, value ->> 'status' AS status,
             value -> 'error' AS error, value ->> 'next_at' AS next_at
      FROM json_each($1)) AS o
WHERE items.id = o.id AND items.lease_token = o.token AND items.status = 'running'
  AND items.lease_expires_at <= $2
RETURNING items.id, items.run_id, items.attempts, items.worker, items.claimed_at,
    items.external_call_at, items.group_name, items.has_waiters, items.status;

-- name: attempt_insert_many
-- Failed, dead and rescued attempts only: a success is read from its item row.
INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
SELECT value ->> 'item_id', value ->> 'run_id', value ->> 'attempt', value ->> 'worker',
       value ->> 'started_at', $2, value ->> 'external_call_at', value ->> 'outcome', value -> 'error'
FROM json_each($1);

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
UPDATE items SET status = CASE WHEN attempts - 1 > retry_base THEN 'failed' ELSE 'pending' END,
    attempts = attempts - 1, lease_token = NULL, lease_expires_at = NULL,
    next_attempt_at = $3, updated_at = $3
WHERE id IN (SELECT value FROM json_each($1)) AND lease_token = $2 AND status = 'running'
  AND external_call_at IS NULL;

-- name: item_defer
-- An item whose endpoint's limiter is paused or has its circuit open goes back, its attempt
-- not counted, due again when the limiter may let it through ($3), instead of holding a
-- worker's slot until then.
UPDATE items SET status = CASE WHEN attempts - 1 > retry_base THEN 'failed' ELSE 'pending' END,
    attempts = attempts - 1, lease_token = NULL, lease_expires_at = NULL,
    next_attempt_at = $3, updated_at = $4
WHERE id IN (SELECT value FROM json_each($1)) AND lease_token = $2 AND status = 'running'
  AND external_call_at IS NULL;

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
WHERE run_id = $1 AND ($2 IS NULL OR stage = $2)
  AND status IN (SELECT value FROM json_each($3)) AND status IN ('failed', 'dead', 'unknown');

-- name: item_get
SELECT id, run_id, stage, key, group_name, payload, status, attempts, waiting_on, next_attempt_at,
       worker, lease_expires_at, result, last_error, created_at, completed_at
FROM items WHERE run_id = $1 AND stage = $2 AND key = $3;

-- name: item_list
SELECT id, run_id, stage, key, group_name, payload, status, attempts, waiting_on, next_attempt_at,
       worker, lease_expires_at, result, last_error, created_at, completed_at
FROM items
WHERE run_id = $1 AND ($2 IS NULL OR stage = $2) AND status IN (SELECT value FROM json_each($3))
  AND id > $4
ORDER BY id LIMIT $5;

-- name: item_counts
-- From the counters (`waiting`: pending with waiting_on > 0).
SELECT stage, status, sum(n) FROM stage_counts WHERE run_id = $1
GROUP BY stage, status HAVING sum(n) <> 0 ORDER BY stage, status;

-- name: attempt_list
-- The view: stored attempts and the current success, read from the item row.
SELECT item_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error
FROM attempts WHERE item_id = $1 ORDER BY attempt, id IS NULL, id;

-- name: stage_completed_since
-- Whole seconds: a second that ends after $3 counts entirely.
SELECT COALESCE(sum(n), 0) FROM stage_completions
WHERE run_id = $1 AND stage = $2 AND second * 1000 + 999 > $3;

-- name: stage_remaining
SELECT COALESCE(sum(n), 0) FROM stage_counts
WHERE run_id = $1 AND stage = $2 AND status IN ('pending', 'waiting', 'running', 'failed', 'unknown');

-- name: history_prune
DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1;

-- name: limiter_upsert
INSERT INTO limiters (name, config, current_rate, tokens, refilled_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET config = excluded.config,
    current_rate = min(limiters.current_rate, excluded.current_rate),
    tokens = min(limiters.tokens, excluded.tokens);

-- name: limiter_get
-- SQLite: the caller's BEGIN IMMEDIATE already holds the write lock (PostgreSQL: FOR UPDATE).
SELECT name, config, current_rate, tokens, refilled_at, paused_until, circuit_open_until,
       failure_streak, throttles, circuit_opens,
       (SELECT count(*) FROM limiter_slots s WHERE s.limiter = l.name AND s.expires_at > $2)
       , open_streak, probe_holder, probe_until
FROM limiters l WHERE name = $1;

-- name: limiter_list
SELECT name, config, current_rate, tokens, refilled_at, paused_until, circuit_open_until,
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

-- name: run_set_params
UPDATE runs SET params = $2 WHERE id = $1;

-- name: run_reopen_finished
UPDATE runs SET status = 'running', finished_at = NULL
WHERE id = $1 AND status IN ('failed', 'completed');

-- name: item_redo_unfinished
-- item_redo: failed, dead and unknown items of the stages ($2, JSON array) are due now
-- with a fresh budget (as item_retry).
UPDATE items SET status = 'failed', next_attempt_at = $3, retry_base = attempts, updated_at = $3
WHERE run_id = $1 AND stage IN (SELECT value FROM json_each($2))
  AND status IN ('failed', 'dead', 'unknown');

-- name: item_redo_completed
-- item_redo: completed items of the stages become pending with a fresh budget; their
-- result is cleared, their attempts stay.
UPDATE items SET status = 'pending', next_attempt_at = $3, retry_base = attempts, result = NULL,
    completed_at = NULL, updated_at = $3
WHERE run_id = $1 AND stage IN (SELECT value FROM json_each($2)) AND status = 'completed'
RETURNING id, group_name;

-- name: item_rearm_waiters
-- item_redo: whoever waited for a reopened item ($1, JSON array of ids) waits for it
-- again, once per reopened input (every waiter, as its completion releases every waiter).
UPDATE items SET waiting_on = waiting_on + (
    SELECT count(*) FROM item_waits w
    WHERE w.waiter_id = items.id AND w.input_id IN (SELECT value FROM json_each($1)))
WHERE id IN (SELECT waiter_id FROM item_waits WHERE input_id IN (SELECT value FROM json_each($1)));

-- name: group_reopen
-- item_redo: $3 members of the group are not done any more; returns the count before.
UPDATE groups SET remaining = remaining + $3 WHERE run_id = $1 AND name = $2
RETURNING remaining - $3;

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
WHERE r.id IN (SELECT value FROM json_each($1)) AND r.status = 'running';

-- name: item_start
-- A prefetched item's handler starts: its lease moves from the claim-ahead token ($2,
-- negative) to the attempt's token ($3) with a full lease ($4). Until then a lapsed lease
-- gives it back without counting the attempt (item_unstarted_expired).
UPDATE items SET lease_token = $3, lease_expires_at = $4
WHERE id IN (SELECT value FROM json_each($1)) AND lease_token = $2 AND status = 'running'
RETURNING id;

-- name: item_unstarted_expired
-- Prefetched items whose worker stopped before their handler started (a negative token
-- marks them): item_release gives them back without counting the attempt.
SELECT id, lease_token FROM items
WHERE status = 'running' AND lease_expires_at <= $1 AND lease_token < 0
ORDER BY lease_expires_at LIMIT $2;

-- name: item_mark_external_many
-- item_mark_external for many attempts at once: $1 is a JSON array of {id, token}.
UPDATE items SET external_call_at = $2
FROM (SELECT value ->> 'id' AS id, value ->> 'token' AS token FROM json_each($1)) AS m
WHERE items.id = m.id AND items.lease_token = m.token AND items.status = 'running'
RETURNING items.id;

-- name: item_recorded_before
-- Of the (id, token) pairs ($1, JSON array of {id, token}), those whose outcome is in:
-- a retried flush after a commit whose answer was lost finds its own commit here.
SELECT i.id FROM items i
JOIN json_each($1) AS o ON i.id = o.value ->> 'id' AND i.last_token = o.value ->> 'token';

-- name: attempt_keep_completed
-- item_redo: before completed items of the stages ($2, JSON array) reopen, their success,
-- until now read from the item row, is stored as an attempt row.
INSERT INTO attempt_log (item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error)
SELECT i.id, i.run_id, i.attempts, i.worker, i.claimed_at, i.completed_at, i.external_call_at, 'completed', NULL
FROM items i
WHERE i.run_id = $1 AND i.stage IN (SELECT value FROM json_each($2)) AND i.status = 'completed'
  AND NOT EXISTS (SELECT 1 FROM attempt_log a
                  WHERE a.item_id = i.id AND a.attempt = i.attempts AND a.outcome = 'completed');

-- name: item_claim_count
-- Runs just before item_claim, in its transaction, with its parameters: moves the items
-- it is about to claim (the same rows: same query, same total order, no writer between)
-- to `running` in the counters, one upsert per batch (the row triggers skip claims).
WITH picked AS MATERIALIZED (
    SELECT run_id, stage, status, count(*) AS n FROM (
        SELECT i.run_id, i.stage, i.status FROM items i
        WHERE i.stage = $1 AND i.status IN ('pending', 'failed') AND i.waiting_on = 0
          AND i.next_attempt_at <= $2
          AND ($7 IS NULL OR i.run_id = $7)
          AND EXISTS (SELECT 1 FROM runs r WHERE r.id = i.run_id AND r.status = 'running' AND NOT r.paused)
          AND NOT EXISTS (SELECT 1 FROM stage_pauses p WHERE p.run_id = i.run_id AND p.stage = i.stage)
        ORDER BY i.next_attempt_at, i.id
        LIMIT $3)
    GROUP BY run_id, stage, status)
INSERT INTO stage_counts (run_id, stage, status, shard, n)
SELECT run_id, stage, status, 0, -n FROM picked
UNION ALL
SELECT run_id, stage, 'running', 0, n FROM picked WHERE true
ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = n + excluded.n;

-- name: stage_counts_add
-- Adds to the counters what a batch of outcomes changed ($1: JSON array of
-- [run_id, stage, status, delta]), computed from item_record's rows (the row triggers
-- skip recorded outcomes).
INSERT INTO stage_counts (run_id, stage, status, shard, n)
SELECT value ->> 0, value ->> 1, value ->> 2, 0, value ->> 3 FROM json_each($1) WHERE true
ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = n + excluded.n;

-- name: stage_completions_add
-- As stage_counts_add for completions ($1: JSON array of [run_id, stage, second, delta]).
INSERT INTO stage_completions (run_id, stage, second, shard, n)
SELECT value ->> 0, value ->> 1, value ->> 2, 0, value ->> 3 FROM json_each($1) WHERE true
ON CONFLICT (run_id, stage, second, shard) DO UPDATE SET n = n + excluded.n;
