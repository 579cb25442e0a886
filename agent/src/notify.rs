//! systemd integration: readiness, status lines and the watchdog (pure-Rust `libsystemd`).
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::time::Duration;

use libsystemd::daemon::{self, NotifyState};

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = daemon::notify(false, states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

pub fn status(line: &str) {
    send(&[NotifyState::Status(line.to_string())]);
}

pub fn ready(line: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(line.to_string())]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd expects, when `WATCHDOG_USEC` is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    daemon::watchdog_enabled(false)
}

/// Feed the watchdog at half its interval until `shutdown` resolves.
pub async fn feed_watchdog(interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(interval / 2);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            () = &mut shutdown => return,
        }
    }
}
