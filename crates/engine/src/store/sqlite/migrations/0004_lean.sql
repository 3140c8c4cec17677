-- idempipe schema, version 4 (SQLite): lean writes on the hot path.
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
SELECT NULL, i.id, i.run_id, i.attempts, i.worker, i.claimed_at, i.completed_at,
       i.external_call_at, 'completed', NULL
FROM items i
WHERE i.status = 'completed'
  AND NOT EXISTS (SELECT 1 FROM attempt_log a
                  WHERE a.item_id = i.id AND a.attempt = i.attempts AND a.outcome = 'completed');

-- The token of the attempt whose outcome was recorded last: a retried flush whose first
-- commit did happen knows its outcome is in.
ALTER TABLE items ADD COLUMN last_token INTEGER;

-- Run reads use the counters below instead of these indexes, which every claim and
-- completion had to update.
DROP INDEX items_by_run;
DROP INDEX items_completed;

-- Items per run, stage and status (`waiting`: pending with waiting_on > 0), kept by the
-- triggers below in the transaction that changes the items. `shard` is always 0 here
-- (SQLite has one writer); PostgreSQL spreads concurrent writers over shards.
CREATE TABLE stage_counts (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT    NOT NULL,
    status TEXT    NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (run_id, stage, status, shard)
) WITHOUT ROWID;
-- Completed items per run, stage and second of completed_at (throughput windows).
CREATE TABLE stage_completions (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT    NOT NULL,
    second INTEGER NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (run_id, stage, second, shard)
) WITHOUT ROWID;

INSERT INTO stage_counts (run_id, stage, status, shard, n)
SELECT run_id, stage, CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END,
       0, count(*)
FROM items GROUP BY 1, 2, 3;
INSERT INTO stage_completions (run_id, stage, second, shard, n)
SELECT run_id, stage, completed_at / 1000, 0, count(*)
FROM items WHERE status = 'completed' GROUP BY 1, 2, 3;

-- SQLite has no statement triggers, and a trigger per row costs more than the rest of a
-- claim or completion. So the two hot statements keep the counters themselves, once per
-- batch (`item_claim_count`, `stage_counts_add` and `stage_completions_add` in
-- queries.sql, same transaction), and
-- these row triggers count every other change: claims are the only change into
-- `running`; a recorded outcome is the only change out of `running` that sets
-- `last_token` to the lease token (a claim clears it).
CREATE TRIGGER items_count_insert AFTER INSERT ON items BEGIN
    INSERT INTO stage_counts (run_id, stage, status, shard, n)
    VALUES (new.run_id, new.stage,
            CASE WHEN new.status = 'pending' AND new.waiting_on > 0 THEN 'waiting' ELSE new.status END,
            0, 1)
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_count_update AFTER UPDATE OF status, waiting_on ON items
WHEN (CASE WHEN old.status = 'pending' AND old.waiting_on > 0 THEN 'waiting' ELSE old.status END)
  <> (CASE WHEN new.status = 'pending' AND new.waiting_on > 0 THEN 'waiting' ELSE new.status END)
  AND new.status <> 'running'
  AND NOT (old.status = 'running' AND new.last_token IS old.lease_token)
BEGIN
    UPDATE stage_counts SET n = n - 1
    WHERE run_id = old.run_id AND stage = old.stage AND shard = 0
      AND status = (CASE WHEN old.status = 'pending' AND old.waiting_on > 0 THEN 'waiting'
                         ELSE old.status END);
    INSERT INTO stage_counts (run_id, stage, status, shard, n)
    VALUES (new.run_id, new.stage,
            CASE WHEN new.status = 'pending' AND new.waiting_on > 0 THEN 'waiting' ELSE new.status END,
            0, 1)
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = n + 1;
END;

-- Only a recorded outcome completes an item (counted by `stage_completions_add`); a redo
-- takes a completed item back.
CREATE TRIGGER items_count_uncompleted AFTER UPDATE OF status ON items
WHEN old.status = 'completed' AND new.status <> 'completed'
BEGIN
    UPDATE stage_completions SET n = n - 1
    WHERE run_id = old.run_id AND stage = old.stage AND second = old.completed_at / 1000 AND shard = 0;
END;
