-- Half-open circuit breaker of limiters: openings since the circuit last closed (the
-- cool-down doubles with each), and which caller's call is the one probe let through.
ALTER TABLE limiters ADD COLUMN open_streak  BIGINT NOT NULL DEFAULT 0;
ALTER TABLE limiters ADD COLUMN probe_holder BIGINT NOT NULL DEFAULT 0;
ALTER TABLE limiters ADD COLUMN probe_until  BIGINT NOT NULL DEFAULT 0;
