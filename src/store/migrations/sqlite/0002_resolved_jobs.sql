-- Job references resolved by name through dbt Cloud's jobs list, kept so that a dbt Cloud outage
-- at a restart does not stop scheduling.
CREATE TABLE resolved_jobs (
    reference TEXT PRIMARY KEY,
    job_id    INTEGER NOT NULL
) STRICT;
