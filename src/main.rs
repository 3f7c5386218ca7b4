//! The `ferry` binary: parse arguments, set up logging, run a command, map its outcome to an
//! exit code (0 done, 1 fatal error, 2 bad usage or config, 3 done but files were quarantined,
//! 4 refused because another process holds the lock, e.g. an export to the same target,
//! 5 done but files were left where they are (unreadable, or not placed), 130 interrupted).

use clap::Parser;
use ferry::cli::Cli;
use ferry::exit::ExitError;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SIGPIPE stays ignored (Rust's default): a write to a connection the other end closed —
    // an FTP, SFTP, S3 or PostgreSQL server going away — is an error to handle, never the end
    // of the process (TLS writes with `writev`, which raises the signal). Reports printed into
    // a closed pipe (`ferry files | head`) end quietly (`report::print`). Only the commands that
    // print with clap's writers and open no connection take the signal's default, so they end
    // quietly too.
    if matches!(
        cli.command,
        ferry::cli::Command::Completions { .. } | ferry::cli::Command::Man { .. }
    ) {
        // SAFETY: setting a signal disposition at startup, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The daemon's log is its record of what happened: one line per file by default. One-shot
    // commands print a summary instead and log only what needs attention.
    let default_level = match cli.command {
        ferry::cli::Command::Watch(_) => "info",
        _ => "warn",
    };
    ferry::logging::init(cli.log_format, default_level, cli.verbose, cli.quiet);
    match ferry::cmd::dispatch(&cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            // The whole chain, always: "looking up the dataset: no dataset named …".
            eprintln!("ferry: error: {e:#}");
            ExitCode::from(e.downcast_ref::<ExitError>().map_or(1, ExitError::code))
        }
    }
}
