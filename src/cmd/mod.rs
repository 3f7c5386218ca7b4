//! One module per subcommand, each the same shape: `run(cfg, args) -> Result<Outcome>`.

pub mod config;
pub mod export;
pub mod files;
pub mod quarantine;
pub mod run;
pub mod status;
pub mod watch;

use crate::cli::{Cli, Command};
use crate::config::Config;
use anyhow::Result;

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// Finished, but some files were quarantined (exit 3).
    Quarantined,
    /// Refused: another process holds the lock this needs (exit 4).
    Busy,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Quarantined => 3,
            Outcome::Busy => 4,
        }
    }
}

pub fn dispatch(cli: &Cli) -> Result<Outcome> {
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut cmd, "ferry", &mut std::io::stdout());
        return Ok(Outcome::Done);
    }
    let cfg = Config::load(cli.root.as_deref(), cli.config.as_deref())?;
    match &cli.command {
        Command::Run(a) => run::run(&cfg, a),
        Command::Watch(a) => watch::run(&cfg, a),
        Command::Export(a) => export::run(&cfg, a),
        Command::Status(a) => status::run(&cfg, a),
        Command::Files(a) => files::run(&cfg, a),
        Command::Quarantine(q) => quarantine::run(&cfg, q),
        Command::Config(c) => config::run(&cfg, c),
        Command::Completions { .. } => unreachable!("handled above"),
    }
}
