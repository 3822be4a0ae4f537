//! baton's integration tests, one binary: each module covers one area, `support` holds the
//! harnesses they share. Slow tests run only with `BATON_SLOW_TESTS=1` (see `support::slow`).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests unwrap and report on stderr

mod support;

mod accounts;
mod api_refusals;
mod api_routes;
mod api_why;
mod backfill_rolling;
mod backfill_runs;
mod bench_pages;
mod bench_smoke;
mod cli_commands;
mod cli_control_commands;
mod cli_demo;
mod client_emulator;
mod client_fixtures;
mod client_logs;
mod client_observer;
mod client_trigger;
mod crash_sigkill;
mod daemon_archive;
mod daemon_concurrency;
mod daemon_dag;
mod daemon_scale;
mod deadlines;
mod emulator_api;
mod emulator_artifacts;
mod emulator_cli;
mod emulator_conformance;
mod emulator_faults;
mod emulator_lifecycle;
mod emulator_thirdparty;
mod emulator_webhooks;
mod fuzz_client;
mod fuzz_pipeline;
mod fuzz_schedule;
mod fuzz_untrusted;
mod ha_cli;
mod ha_failover;
mod ha_lease;
mod ha_tls;
mod job_names;
mod ops_grafana;
mod ops_metrics;
mod ops_notify;
mod ops_pipeline_page;
mod ops_status_page;
mod ops_systemd;
mod ops_webhook;
mod pg_cluster;
mod restart_catchup;
mod restart_reconcile;
mod restart_reload;
mod restart_shutdown;
mod restart_store;
mod restart_timers;
mod schedule_dst;
mod schedule_props;
mod soak;
mod store_cli;
mod validate_invalid;
mod validate_templates;
mod validate_valid;
