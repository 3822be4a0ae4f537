-- baton's state, schema version 1. Readable with the sqlite3 shell: every table has plain
-- columns for what an operator looks for, and the full record as JSON (run_history: deflated JSON).

-- Pipeline definitions, stored once and named by the digest of their JSON.
CREATE TABLE definitions (
    digest     TEXT PRIMARY KEY,
    pipeline   TEXT NOT NULL,
    definition TEXT NOT NULL
) STRICT;

-- Pipeline runs the daemon holds in memory: unfinished, and finished within memory_window.
CREATE TABLE pipeline_runs (
    id           TEXT PRIMARY KEY,
    pipeline     TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    state        TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    definition   TEXT NOT NULL REFERENCES definitions (digest),
    record       TEXT NOT NULL
) STRICT;

-- Finished runs the daemon archived: read back only when asked for.
CREATE TABLE run_history (
    id           TEXT NOT NULL UNIQUE,
    pipeline     TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    state        TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    definition   TEXT NOT NULL REFERENCES definitions (digest),
    record       BLOB NOT NULL
) STRICT;
-- The archive's small index: start-up reads it (never the records), the API reads a pipeline's
-- newest runs through it.
CREATE INDEX run_history_by_pipeline ON run_history (pipeline, logical_date, state, finished_at, id);

CREATE TABLE schedule_cursors (
    pipeline TEXT PRIMARY KEY,
    cursor   TEXT NOT NULL
) STRICT;

CREATE TABLE backfills (
    id       TEXT PRIMARY KEY,
    backfill TEXT NOT NULL
) STRICT;

-- Written now and then so that a commit which must be durable has something to write.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
