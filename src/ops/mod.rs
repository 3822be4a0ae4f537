//! Running baton as a production service: systemd readiness and watchdog (`systemd`), Prometheus
//! metrics (`metrics`), the dbt Cloud webhook receiver (`webhook`), failure and success
//! notifications (`notify`) and the read-only status pages (`status_page` at `/`, `pipeline_page` at
//! `/pipelines/{name}`, built from `run_history`'s views, drawn by `svg`, sharing `html`). Each part is
//! self-contained: the HTTP server merges the routers, `serve()` spawns the tasks.
//!
//! How `serve()` puts them together, in order:
//!
//! 1. After `Daemon::new` and `daemon.handle()`, before the loop runs: build `Metrics::new()`,
//!    `metrics.set_budget(client.budget().clone())`, and spawn `metrics.clone().run(handle, token)`
//!    and, when `config.notifications` is not empty, `Notifier::new(targets, Default::default())?
//!    .run(handle, token)` (targets from `notify::Target::from_config`). Both subscribe when
//!    called, so nothing the first plan reports is lost.
//! 2. Merge into the HTTP app: `status_page::router(handle)` (`/` and `/pipelines/{name}`), `metrics::router(metrics)`
//!    (`/metrics`) and, when `config.webhooks` is set, `webhook::router_with_stats(secret, handle)`
//!    (`/webhooks/dbt-cloud`, then `metrics.set_webhook_stats(stats)`). These three stay outside
//!    the bearer-token layer: dbt Cloud signs its deliveries instead, and Prometheus scrapes
//!    without a token.
//! 3. With webhooks on, `EngineConfig::poll_interval` is `webhooks.poll_interval` when set.
//! 4. Once the listener is bound: `SdNotifier::from_env().ready_listening(addr)`, and, when
//!    `systemd::watchdog_interval()` is `Some(i)`, spawn `systemd::watchdog_for(notifier, i,
//!    handle, token)`.
//! 5. On SIGHUP: `reloading()`, reload, then `ready()` whatever the outcome. On SIGTERM/SIGINT:
//!    `stopping()` before the loop drains.

pub mod html;
pub mod metrics;
pub mod notify;
pub mod pipeline_page;
pub mod run_history;
pub mod sample_history;
pub mod status_page;
pub mod svg;
pub mod systemd;
pub mod webhook;
