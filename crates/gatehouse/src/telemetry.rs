//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info` for
//! the server, `warn` for the one-shot commands, whose output is their
//! result on stdout and, on failure, one line on stderr).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` is unset; a second call is a no-op.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
