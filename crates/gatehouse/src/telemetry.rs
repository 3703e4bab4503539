//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info` for
//! the server, `warn` for the one-shot commands, whose output is their
//! result on stdout and, on failure, one line on stderr), as text lines or
//! one JSON object a line (`log_format`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` is unset; a second call is a no-op.
pub fn init(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Each line: timestamp, level, target, the event's fields (message
        // included) at the top level, and the request's span (its id,
        // method and route) when the event happened inside one.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
