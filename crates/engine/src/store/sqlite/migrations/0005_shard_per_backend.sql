-- idempipe schema, version 5 (SQLite): no change. PostgreSQL's version 5 gives each
-- session a counter shard of its own; SQLite has one writer and keeps writing shard 0.
-- The version exists so both backends count their schemas alike.
SELECT 1;
