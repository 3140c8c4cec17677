-- idempipe schema, version 2 (PostgreSQL): worker liveness. Times are milliseconds since
-- the Unix epoch. docs/schema.md describes the table.

-- One row per live worker, renewed by its heartbeat and deleted when it stops cleanly; a
-- row whose alive_until has passed belongs to a worker that died (killed, crashed).
CREATE TABLE workers (
    name         TEXT   PRIMARY KEY,
    host         TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    run_id       BIGINT,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    alive_until  BIGINT NOT NULL
);
