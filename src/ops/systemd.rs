//! The systemd notification protocol (sd_notify): READY, STOPPING, RELOADING then READY again,
//! STATUS lines, and a watchdog that pings only while the scheduler loop demonstrably turns.

use crate::runtime::{DaemonHandle, LoopStopped, Progress};
use sd_notify::NotifyState;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Sends datagrams to the service manager's notification socket. Without a socket (not started by
/// systemd, or a unit of another type) every call is a no-op, so callers never branch on it.
#[derive(Debug, Clone, Default)]
pub struct SdNotifier {
    socket: Option<PathBuf>,
}

impl SdNotifier {
    /// The socket systemd names in `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var_os("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    /// A notifier writing to `socket` (tests bind one in a temporary directory).
    pub fn at(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: Some(socket.into()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { socket: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// State is loaded and the API listens.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&[NotifyState::Ready, NotifyState::Status("scheduling")])
    }

    /// `ready`, naming where the API listens (`systemctl status` shows it). Taking the bound
    /// address is the reminder: READY goes only after the listener is bound.
    pub fn ready_listening(&self, api: std::net::SocketAddr) -> io::Result<()> {
        let status = format!("scheduling; API on http://{api}");
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)])
    }

    /// Shutdown began: systemd waits for the exit instead of counting it as a crash.
    pub fn stopping(&self) -> io::Result<()> {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining calls in flight"),
        ])
    }

    /// A reload (SIGHUP) began; call `ready` when it is done, whether it succeeded or not.
    /// `MONOTONIC_USEC` lets systemd 253+ match the READY that ends it.
    pub fn reloading(&self) -> io::Result<()> {
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("reloading pipelines"),
        ];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states)
    }

    /// A free-form status line for `systemctl status`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&[NotifyState::Status(text)])
    }

    /// One keep-alive.
    pub fn watchdog_ping(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        send_datagram(socket, message.as_bytes())
    }
}

fn send_datagram(socket: &Path, message: &[u8]) -> io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let text = socket.as_os_str().as_encoded_bytes();
    // systemd may name a socket in the abstract namespace, written with a leading `@`.
    #[cfg(target_os = "linux")]
    if let Some(name) = text.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(message, &addr)?;
        return Ok(());
    }
    let _ = text;
    let sent = sock.send_to(message, socket)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "incomplete notification datagram",
        ));
    }
    Ok(())
}

/// The interval systemd expects pings at (`WatchdogSec=`), when it watches this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // WATCHDOG_PID, when set, names the process meant; a child must not ping for its parent.
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog every half `interval` while the scheduler loop is alive: its `iterations`
/// advanced since the last look, or, when idle, `probe` (an inspect round trip) answered within a
/// quarter of the interval. A stuck loop neither advances nor answers, so the pings stop and
/// systemd restarts the service. Returns on `shutdown` or when the loop has stopped.
pub async fn watchdog<P, F>(
    notifier: SdNotifier,
    interval: Duration,
    mut progress: watch::Receiver<Progress>,
    probe: P,
    shutdown: CancellationToken,
) where
    P: Fn() -> F,
    F: Future<Output = Result<(), LoopStopped>>,
{
    let period = interval / 2;
    let probe_timeout = interval / 4;
    let mut last_seen = progress.borrow_and_update().iterations;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now_seen = progress.borrow_and_update().iterations;
        let alive = if now_seen != last_seen {
            true
        } else {
            match tokio::time::timeout(probe_timeout, probe()).await {
                Ok(Ok(())) => true,
                Ok(Err(LoopStopped)) => {
                    tracing::warn!("watchdog: the scheduler loop has stopped; no more pings");
                    return;
                }
                Err(_) => false,
            }
        };
        last_seen = now_seen;
        if alive {
            if let Err(e) = notifier.watchdog_ping() {
                tracing::warn!(error = %e, "watchdog: cannot notify systemd");
            }
        } else {
            tracing::error!(
                probe_timeout_ms = probe_timeout.as_millis() as u64,
                "watchdog: the scheduler loop did not answer; withholding the ping"
            );
        }
    }
}

/// `watchdog` for a running daemon: its progress, and an empty inspect as the probe.
pub async fn watchdog_for(
    notifier: SdNotifier,
    interval: Duration,
    handle: DaemonHandle,
    shutdown: CancellationToken,
) {
    let progress = handle.progress();
    let probe = move || {
        let handle = handle.clone();
        async move { handle.inspect(|_, _| ()).await }
    };
    watchdog(notifier, interval, progress, probe, shutdown).await;
}
