-- idempipe schema, version 2 (SQLite): worker liveness. Times are milliseconds since the
-- Unix epoch. docs/schema.md describes the table.

-- One row per live worker, renewed by its heartbeat and deleted when it stops cleanly; a
-- row whose alive_until has passed belongs to a worker that died (killed, crashed).
CREATE TABLE workers (
    name         TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    run_id       INTEGER,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    alive_until  INTEGER NOT NULL
);
