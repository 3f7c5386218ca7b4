//! One module per subcommand, each the same shape: `run(cfg, args) -> Result<Outcome>`.

pub mod config;
pub mod explain;
pub mod export;
pub mod files;
pub mod prune;
pub mod quarantine;
pub mod rekey;
pub mod run;
pub mod status;
pub mod watch;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Config;
use crate::events::Summary;
use crate::exit::ExitError;
use crate::report::{self, Waiting};
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// Finished, but some files were quarantined (exit 3).
    Quarantined,
    /// Finished, but some files were left where they are: they could not be read, or their
    /// outcome is recorded but they could not be put in their place (exit 5). The next run
    /// takes them up again; an operator should look (permissions, disk space).
    Left,
    /// Stopped by SIGINT/SIGTERM before everything was done (exit 130). Files in flight were
    /// finished; the rest is taken by the next run.
    Interrupted,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Quarantined => 3,
            Outcome::Left => 5,
            Outcome::Interrupted => 130,
        }
    }
}

/// Prints what a pipeline run did; the outcome says what needs attention.
fn report_run(
    source: &Path,
    started: Instant,
    summary: Summary,
    waiting: Vec<Waiting>,
    interrupted: Option<u64>,
    json: bool,
    dry_run: bool,
) -> Result<Outcome> {
    let report = report::RunReport {
        dry_run,
        source: source.display().to_string(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        interrupted: interrupted.is_some(),
        not_taken: interrupted.unwrap_or(0),
        summary,
        waiting,
    };
    report::print(&report, json)?;
    let s = &report.summary;
    Ok(if report.interrupted {
        Outcome::Interrupted
    } else if s.left + s.unplaced > 0 {
        Outcome::Left
    } else if s.quarantined > 0 {
        Outcome::Quarantined
    } else {
        Outcome::Done
    })
}

/// Reporting commands read a spool; a root that is not one is a mistake (a mistyped `--root`)
/// to say, not an empty spool to report.
fn require_spool(cfg: &Config) -> Result<()> {
    if cfg.spool.exists() {
        return Ok(());
    }
    Err(ExitError::Usage(format!(
        "there is no ferry spool at {} (no ferry.db, no incoming/); check --root, or create one \
         with `ferry run --init` or `ferry watch --init`",
        cfg.spool.root.display()
    ))
    .into())
}

/// `run` and `watch` create a spool only where it is expected: at the default root, or when
/// asked (`--init`). A named root that is not a spool is refused, naming the path.
pub fn open_or_create_spool(cfg: &Config, init: bool) -> Result<()> {
    if cfg.spool.exists() {
        return Ok(());
    }
    if cfg.root_named && !init {
        return Err(ExitError::Usage(format!(
            "there is no ferry spool at {} (no ferry.db, no incoming/); check --root, or create \
             it with --init",
            cfg.spool.root.display()
        ))
        .into());
    }
    let created = cfg.spool.ensure()?;
    // The store is set up before the spool counts as created: a store that cannot be set up
    // (unreachable, a schema holding tables of ferry's names) leaves no spool behind.
    if let Err(e) = crate::store::open(&cfg.store) {
        cfg.spool.undo_ensure(&created);
        return Err(e);
    }
    eprintln!("ferry: created a new spool at {}", cfg.spool.root.display());
    Ok(())
}

pub fn dispatch(cli: &Cli) -> Result<Outcome> {
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut cmd, "ferry", &mut std::io::stdout());
        return Ok(Outcome::Done);
    }
    if let Command::Man { command } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        let page = match command {
            None => cmd,
            Some(name) => {
                let sub = cmd.find_subcommand(name).cloned().ok_or_else(|| {
                    ExitError::Usage(format!("no subcommand {name:?} (see ferry --help)"))
                })?;
                // Named as ferry(1)'s SUBCOMMANDS section refers to it.
                sub.clone().name(format!("ferry-{}", sub.get_name()))
            }
        };
        clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
        return Ok(Outcome::Done);
    }
    let config = match (&cli.command, &cli.config) {
        (Command::Config(ConfigCommand::Check { file: Some(f), .. }), Some(c)) if f != c => {
            return Err(ExitError::Usage(format!(
                "two config files named: {} (argument) and {} (--config or FERRY_CONFIG)",
                f.display(),
                c.display()
            ))
            .into())
        }
        (Command::Config(ConfigCommand::Check { file: Some(f), .. }), _) => Some(f.as_path()),
        _ => cli.config.as_deref(),
    };
    let cfg = Config::load(cli.root.as_deref(), config, cli.store.as_deref())?;
    if matches!(
        cli.command,
        Command::Status(_)
            | Command::Files(_)
            | Command::Quarantine(_)
            | Command::Export(_)
            | Command::Prune(_)
            | Command::Rekey(_)
    ) {
        require_spool(&cfg)?;
    }
    match &cli.command {
        Command::Run(a) => run::run(&cfg, a),
        Command::Watch(a) => watch::run(&cfg, a, &|| {
            Ok(Config::load(
                cli.root.as_deref(),
                config,
                cli.store.as_deref(),
            )?)
        }),
        Command::Export(a) => export::run(&cfg, a),
        Command::Status(a) => status::run(&cfg, a),
        Command::Files(a) => files::run(&cfg, a),
        Command::Quarantine(q) => quarantine::run(&cfg, q),
        Command::Config(c) => config::run(&cfg, c),
        Command::Prune(a) => prune::run(&cfg, a),
        Command::Rekey(a) => rekey::run(&cfg, a),
        Command::Explain { path, json } => explain::run(&cfg, path, *json),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}
