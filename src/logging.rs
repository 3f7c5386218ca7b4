//! Logging setup: tracing to stderr, as text or JSON lines.
//!
//! Levels: ERROR means an operator must act, WARN means ferry recovered or set a file aside,
//! INFO is one line per file. `FERRY_LOG` (an env-filter directive such as `ferry=debug`)
//! overrides the flags.

use crate::cli::LogFormat;
use tracing_subscriber::EnvFilter;

/// `default` is the level when neither `-v`/`-q` nor `FERRY_LOG` says otherwise.
pub fn init(format: LogFormat, default: &str, verbose: u8, quiet: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => default,
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
