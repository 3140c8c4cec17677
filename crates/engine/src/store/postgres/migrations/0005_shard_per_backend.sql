-- idempipe schema, version 5 (PostgreSQL): a counter shard per backend.
-- docs/schema.md describes the tables.

-- The counter triggers wrote to shard `pg_backend_pid() % 16`, so two sessions could share
-- a shard row. A transaction that records outcomes and then claims (one commit per item at
-- concurrency 1) takes its shard's `completed` and `running` rows, then `pending`; a plain
-- claim on the same shard takes `pending`, then `running`: the two deadlocked. Now each
-- session writes to its own shard (its backend pid, unique among live sessions), so no two
-- open transactions ever touch the same counter row, whatever their order. Shards of
-- sessions that ended are folded into shard 0 by maintenance (`stage_counts_fold`);
-- shard 0 is never a live backend's. Existing rows (shards 0-15) stay valid: a count is
-- still the sum over shards.
CREATE OR REPLACE FUNCTION idempipe_count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stage_counts AS c (run_id, stage, status, shard, n)
    SELECT d.run_id, d.stage, d.st, pg_backend_pid(), sum(d.n)
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
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = c.n + excluded.n;

    INSERT INTO stage_completions AS c (run_id, stage, second, shard, n)
    SELECT d.run_id, d.stage, d.second, pg_backend_pid(), sum(d.n)
    FROM (
        SELECT run_id, stage, completed_at / 1000 AS second, -1 AS n
        FROM idempipe_old WHERE status = 'completed'
        UNION ALL
        SELECT run_id, stage, completed_at / 1000, 1
        FROM idempipe_new WHERE status = 'completed'
    ) d
    GROUP BY d.run_id, d.stage, d.second HAVING sum(d.n) <> 0
    ON CONFLICT (run_id, stage, second, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION idempipe_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stage_counts AS c (run_id, stage, status, shard, n)
    SELECT run_id, stage,
           CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' ELSE status END AS st,
           pg_backend_pid(), count(*)
    FROM idempipe_new
    GROUP BY 1, 2, 3
    ON CONFLICT (run_id, stage, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;
