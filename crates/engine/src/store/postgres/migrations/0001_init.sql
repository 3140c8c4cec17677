-- idempipe schema, version 1 (PostgreSQL). Times are milliseconds since the Unix epoch.
-- JSON columns are jsonb.
-- docs/schema.md describes every table and gives example queries.

CREATE TABLE runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    input       TEXT    NOT NULL,
    params      JSONB   NOT NULL DEFAULT '{}',
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    paused      BOOLEAN NOT NULL DEFAULT FALSE,
    summary     JSONB,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX runs_by_fingerprint ON runs (pipeline, fingerprint, id);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE stage_policies (
    stage           TEXT PRIMARY KEY,
    max_attempts    BIGINT NOT NULL,
    backoff_base_ms BIGINT NOT NULL,
    backoff_cap_ms  BIGINT NOT NULL,
    on_unknown      TEXT    NOT NULL CHECK (on_unknown IN ('retry', 'park')),
    updated_at      BIGINT NOT NULL
);

CREATE TABLE stage_pauses (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage  TEXT    NOT NULL,
    PRIMARY KEY (run_id, stage)
);

CREATE TABLE items (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    group_name       TEXT,
    payload          JSONB   NOT NULL DEFAULT 'null',
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                       'dead', 'unknown', 'cancelled')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    retry_base       BIGINT NOT NULL DEFAULT 0,
    waiting_on       BIGINT NOT NULL DEFAULT 0,
    has_waiters      BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_at  BIGINT NOT NULL,
    lease_token      BIGINT,
    lease_expires_at BIGINT,
    worker           TEXT,
    claimed_at       BIGINT,
    external_call_at BIGINT,
    result           JSONB,
    last_error       JSONB,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    completed_at     BIGINT,
    UNIQUE (run_id, stage, key)
);
-- The claim reads only this index: due, released items of one stage, oldest first.
CREATE INDEX items_due ON items (stage, next_attempt_at, id)
    WHERE status IN ('pending', 'failed') AND waiting_on = 0;
CREATE INDEX items_leased ON items (lease_expires_at) WHERE status = 'running';
CREATE INDEX items_by_run ON items (run_id, stage, status);
CREATE INDEX items_completed ON items (run_id, stage, completed_at) WHERE status = 'completed';

CREATE TABLE attempts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id          BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    run_id           BIGINT NOT NULL,
    attempt          BIGINT NOT NULL,
    worker           TEXT,
    started_at       BIGINT NOT NULL,
    ended_at         BIGINT NOT NULL,
    external_call_at BIGINT,
    outcome          TEXT    NOT NULL,
    error            JSONB
);
CREATE INDEX attempts_by_item ON attempts (item_id, attempt);

-- Fan-in, counted: each row is one missing input of a waiting item.
CREATE TABLE item_waits (
    input_id  BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    waiter_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    PRIMARY KEY (input_id, waiter_id)
);

CREATE TABLE groups (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name      TEXT    NOT NULL,
    remaining BIGINT NOT NULL,
    total     BIGINT NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE group_waits (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    group_name TEXT    NOT NULL,
    waiter_id  BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    released   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, group_name, waiter_id)
);

CREATE TABLE limiters (
    name              TEXT PRIMARY KEY,
    config            JSONB   NOT NULL,
    current_rate      DOUBLE PRECISION    NOT NULL,
    tokens            DOUBLE PRECISION    NOT NULL,
    refilled_at       BIGINT NOT NULL,
    paused_until      BIGINT NOT NULL DEFAULT 0,
    circuit_open_until BIGINT NOT NULL DEFAULT 0,
    failure_streak    BIGINT NOT NULL DEFAULT 0,
    throttles         BIGINT NOT NULL DEFAULT 0,
    circuit_opens     BIGINT NOT NULL DEFAULT 0
);

-- A held concurrency slot; it frees itself at expires_at if its worker dies.
CREATE TABLE limiter_slots (
    limiter    TEXT    NOT NULL REFERENCES limiters (name) ON DELETE CASCADE,
    holder     BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (limiter, holder)
);
