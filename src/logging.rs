//! Log output: human-readable for terminals or JSON lines for journald and log shippers, filtered
//! by `RUST_LOG` (default `info`).

use crate::config::daemon::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at level `info`. Safe to call twice (the second call does nothing).
pub fn init(format: LogFormat) {
    init_at(format, "info");
}

/// As `init`, with another level when `RUST_LOG` is unset (`warn` for the demo's clean output).
pub fn init_at(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
