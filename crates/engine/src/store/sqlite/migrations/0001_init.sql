-- idempipe schema, version 1 (SQLite). Times are milliseconds since the Unix epoch.
-- JSON columns hold JSON text; read them with json_extract / ->> .
-- docs/schema.md describes every table and gives example queries.

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    input       TEXT    NOT NULL,
    params      TEXT    NOT NULL DEFAULT '{}',
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    paused      INTEGER NOT NULL DEFAULT 0,
    summary     TEXT,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX runs_by_fingerprint ON runs (pipeline, fingerprint, id);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE stage_policies (
    stage           TEXT PRIMARY KEY,
    max_attempts    INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_cap_ms  INTEGER NOT NULL,
    on_unknown      TEXT    NOT NULL CHECK (on_unknown IN ('retry', 'park')),
    updated_at      INTEGER NOT NULL
);

CREATE TABLE stage_pauses (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT    NOT NULL,
    PRIMARY KEY (run_id, stage)
);

CREATE TABLE items (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    group_name       TEXT,
    payload          TEXT    NOT NULL DEFAULT 'null',
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                       'dead', 'unknown', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry_base       INTEGER NOT NULL DEFAULT 0,
    waiting_on       INTEGER NOT NULL DEFAULT 0,
    has_waiters      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    worker           TEXT,
    claimed_at       INTEGER,
    external_call_at INTEGER,
    result           TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    UNIQUE (run_id, stage, key)
);
-- The claim reads only this index: due, released items of one stage, oldest first.
CREATE INDEX items_due ON items (stage, next_attempt_at, id)
    WHERE status IN ('pending', 'failed') AND waiting_on = 0;
CREATE INDEX items_leased ON items (lease_expires_at) WHERE status = 'running';
CREATE INDEX items_by_run ON items (run_id, stage, status);
CREATE INDEX items_completed ON items (run_id, stage, completed_at) WHERE status = 'completed';

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    item_id          INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    run_id           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    worker           TEXT,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER NOT NULL,
    external_call_at INTEGER,
    outcome          TEXT    NOT NULL,
    error            TEXT
);
CREATE INDEX attempts_by_item ON attempts (item_id, attempt);

-- Fan-in, counted: each row is one missing input of a waiting item.
CREATE TABLE item_waits (
    input_id  INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    waiter_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    PRIMARY KEY (input_id, waiter_id)
);

CREATE TABLE groups (
    run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name      TEXT    NOT NULL,
    remaining INTEGER NOT NULL,
    total     INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE group_waits (
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    group_name TEXT    NOT NULL,
    waiter_id  INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    released   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, group_name, waiter_id)
);

CREATE TABLE limiters (
    name              TEXT PRIMARY KEY,
    config            TEXT    NOT NULL,
    current_rate      REAL    NOT NULL,
    tokens            REAL    NOT NULL,
    refilled_at       INTEGER NOT NULL,
    paused_until      INTEGER NOT NULL DEFAULT 0,
    circuit_open_until INTEGER NOT NULL DEFAULT 0,
    failure_streak    INTEGER NOT NULL DEFAULT 0,
    throttles         INTEGER NOT NULL DEFAULT 0,
    circuit_opens     INTEGER NOT NULL DEFAULT 0
);

-- A held concurrency slot; it frees itself at expires_at if its worker dies.
CREATE TABLE limiter_slots (
    limiter    TEXT    NOT NULL REFERENCES limiters (name) ON DELETE CASCADE,
    holder     INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (limiter, holder)
);
