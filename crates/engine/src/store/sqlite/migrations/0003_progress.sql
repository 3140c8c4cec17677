-- Half-open circuit breaker of limiters: openings since the circuit last closed (the
-- cool-down doubles with each), and which caller's call is the one probe let through.
ALTER TABLE limiters ADD COLUMN open_streak  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE limiters ADD COLUMN probe_holder INTEGER NOT NULL DEFAULT 0;
ALTER TABLE limiters ADD COLUMN probe_until  INTEGER NOT NULL DEFAULT 0;
