-- idempipe schema, version 4 (PostgreSQL): lean writes on the hot path.
-- docs/schema.md describes the tables.

-- A plain success writes no history row: the completed item row already holds its worker,
-- claim time, completion time and outside-call mark. Stored attempts (failures, rescues,
-- and successes an `item_redo` reopened) move to `attempt_log`; the view `attempts`
-- shows the full history, the current success synthesised from its item row. Rows an
-- older version wrote for a success are kept and not shown twice.
ALTER TABLE attempts RENAME TO attempt_log;
CREATE VIEW attempts AS
SELECT id, item_id, run_id, attempt, worker, started_at, ended_at, external_call_at, outcome, error
FROM attempt_log
UNION ALL
SELECT NULL::bigint, i.id, i.run_id, i.attempts, i.worker, i.claimed_at, i.completed_at,
       i.external_call_at, 'completed', NULL::jsonb
FROM items i
WHERE i.status = 'completed'
  AND NOT EXISTS (SELECT 1 FROM attempt_log a
                  WHERE a.item_id = i.id AND a.attempt = i.attempts AND a.outcome = 'completed');

-- The token of the attempt whose outcome was recorded last: a retried flush whose first
-- commit did happen (the connection dropped before the answer) knows its outcome is in.
ALTER TABLE items ADD COLUMN last_token BIGINT;

-- Run reads use the counters below instead of these indexes, which every claim and
-- completion had to update.
DROP INDEX items_by_run;
DROP INDEX items_completed;
-- Room on each page so that an update touching no indexed column stays on its page (HOT).
ALTER TABLE items SET (fillfactor = 85);
-- An item holds a lease token exactly while it runs (every statement already kept this).
-- Fenced writes match on the token alone, so their plans need no status predicate, whose
-- selectivity the planner cannot know without statistics.
ALTER TABLE items ADD CONSTRAINT items_token_while_running
    CHECK ((status = 'running') = (lease_token IS NOT NULL));

-- Items per run, stage and status (`waiting`: pending with waiting_on > 0), kept by the
-- statement triggers below in the transaction that changes the items, one upsert per
-- statement. `shard` spreads concurrent writers over rows (the backend's pid modulo 16):
-- a count is the sum over shards.
CREATE TABLE stage_counts (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT   NOT NULL,
    status TEXT   NOT NULL,
    shard  INT    NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (run_id, stage, status, shard)
);
-- Completed items per run, stage and second of completed_at (throughput windows).
CREATE TABLE stage_completions (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT   NOT NULL,
    second BIGINT NOT NULL,
    shard  INT    NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (run_id, stage, second, shard)
);

INSERT INTO stage_counts (run_id, stage, status, shard, n)
SELECT run_id, stage, CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END,
       0, count(*)
FROM items GROUP BY 1, 2, 3;
INSERT INTO stage_completions (run_id, stage, second, shard, n)
SELECT run_id, stage, completed_at / 1000, 0, count(*)
FROM items WHERE status = 'completed' GROUP BY 1, 2, 3;

-- Adds (+1 for new rows, -1 for old rows) to both counter tables. Keys are written in
-- order, so two transactions on the same shard cannot deadlock on them.
CREATE FUNCTION idempipe_count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stage_counts AS c (run_id, stage, status, shard, n)
    SELECT d.run_id, d.stage, d.st, pg_backend_pid() % 16, sum(d.n)
    FROM (
        SELECT run_id, stage,
               CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END AS st,
               -1 AS n
        FROM idempipe_old
        UNION ALL
        SELECT run_id, stage,
               CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END,
               1
        FROM idempipe_new
    ) d
    GROUP BY d.run_id, d.stage, d.st HAVING sum(d.n) <> 0
    ORDER BY d.run_id, d.stage, d.st
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = c.n + excluded.n;

    INSERT INTO stage_completions AS c (run_id, stage, second, shard, n)
    SELECT d.run_id, d.stage, d.second, pg_backend_pid() % 16, sum(d.n)
    FROM (
        SELECT run_id, stage, completed_at / 1000 AS second, -1 AS n
        FROM idempipe_old WHERE status = 'completed'
        UNION ALL
        SELECT run_id, stage, completed_at / 1000, 1
        FROM idempipe_new WHERE status = 'completed'
    ) d
    GROUP BY d.run_id, d.stage, d.second HAVING sum(d.n) <> 0
    ORDER BY d.run_id, d.stage, d.second
    ON CONFLICT (run_id, stage, second, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;

-- An INSERT has no old rows: an empty relation of the same shape stands in for them.
CREATE FUNCTION idempipe_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stage_counts AS c (run_id, stage, status, shard, n)
    SELECT run_id, stage,
           CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END AS st,
           pg_backend_pid() % 16, count(*)
    FROM idempipe_new
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER items_count_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS idempipe_old NEW TABLE AS idempipe_new
    FOR EACH STATEMENT EXECUTE FUNCTION idempipe_count_items();
CREATE TRIGGER items_count_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS idempipe_new
    FOR EACH STATEMENT EXECUTE FUNCTION idempipe_count_inserted();
