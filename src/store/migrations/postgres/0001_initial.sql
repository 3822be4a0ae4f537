-- baton's state on PostgreSQL, schema version 1: the same tables as SQLite's versions 1 and 2,
-- plus the leadership lease. Times are RFC 3339 text in UTC (they sort as text); records are JSON
-- text (`record::jsonb` queries them), archived records deflated JSON.

-- Pipeline definitions, stored once and named by the digest of their JSON.
CREATE TABLE definitions (
    digest     text PRIMARY KEY,
    pipeline   text NOT NULL,
    definition text NOT NULL
);

-- Pipeline runs the leader holds in memory: unfinished, and finished within memory_window.
CREATE TABLE pipeline_runs (
    id           text PRIMARY KEY,
    pipeline     text NOT NULL,
    logical_date text NOT NULL,
    state        text NOT NULL,
    started_at   text,
    finished_at  text,
    definition   text NOT NULL REFERENCES definitions (digest),
    record       text NOT NULL
);

-- Finished runs the leader archived: read back only when asked for.
CREATE TABLE run_history (
    id           text PRIMARY KEY,
    pipeline     text NOT NULL,
    logical_date text NOT NULL,
    state        text NOT NULL,
    started_at   text,
    finished_at  text NOT NULL,
    attempts     bigint NOT NULL,
    definition   text NOT NULL REFERENCES definitions (digest),
    record       bytea NOT NULL
);
CREATE INDEX run_history_by_pipeline ON run_history (pipeline, logical_date, state, finished_at, id);
CREATE INDEX run_history_by_finished_at ON run_history (finished_at);

CREATE TABLE schedule_cursors (
    pipeline text PRIMARY KEY,
    cursor   text NOT NULL
);

CREATE TABLE backfills (
    id       text PRIMARY KEY,
    backfill text NOT NULL
);

-- Written now and then so that a commit which must be durable has something to write.
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Job references resolved by name through dbt Cloud's jobs list.
CREATE TABLE resolved_jobs (
    reference text PRIMARY KEY,
    job_id    bigint NOT NULL
);

-- The leadership lease (src/ha/lease.rs; the elector also creates it when it starts first).
CREATE TABLE IF NOT EXISTS baton_leadership (
    id         smallint PRIMARY KEY CHECK (id = 1),
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    advertise  text NOT NULL DEFAULT ''
);
