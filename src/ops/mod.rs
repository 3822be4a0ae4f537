//! Running baton as a production service: systemd readiness and watchdog (`systemd`), Prometheus
//! metrics (`metrics`), the dbt Cloud webhook receiver (`webhook`), failure and success
//! notifications (`notify`) and the read-only status page (`status_page`). Each part is
//! self-contained: the HTTP server merges the routers, `serve()` spawns the tasks.

pub mod metrics;
pub mod notify;
pub mod status_page;
pub mod systemd;
pub mod webhook;
