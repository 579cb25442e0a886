//! Logging: to journald when its socket exists, to stderr otherwise.
//!
//! Without journald, `tracing-journald` cannot connect and a message would be lost silently,
//! so the socket is checked first and stderr used when it is absent.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("WARDBOX_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    if std::path::Path::new(JOURNAL_SOCKET).exists()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry.with(journald.with_syslog_identifier("wardbox".into())).try_init();
        return;
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init();
}
