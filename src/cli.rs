//! Command-line types: what was typed, validated for shape only.
//!
//! Nothing here touches the disk; `Config::load` resolves paths and files afterwards, so
//! `--help` and `--version` work anywhere.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "File-transfer batch ingestion: every file that lands is loaded once, or set aside with a reason.",
    propagate_version = true,
    after_help = "Environment:\n  FERRY_LOG     log filter, overriding -v/-q: a level (error, warn, info, debug, trace) or \
                  directives such as \"ferry=debug\"\n  FERRY_ROOT, FERRY_CONFIG, FERRY_STORE, \
                  FERRY_LOG_FORMAT   as the flags of the same name\n  PGPASSWORD, PGUSER   \
                  for a PostgreSQL store\n\nDurations take a unit: 500ms, 5s, 2m, 1h, 1d.\n\n\
                  Exit codes:\n  0    done\n  1    fatal error (the store or the disk failed; \
                  nothing half done)\n  2    bad usage or config (a --root that is not a spool \
                  included)\n  3    done, but files were quarantined\n  4    refused: another \
                  export to the same target is running\n  5    done, but files were left where \
                  they are (unreadable, or recorded but not moved; the next run takes them up)\n  \
                  130  interrupted (Ctrl-C or SIGTERM): files in flight finished, the rest left"
)]
pub struct Cli {
    /// Spool root [default: ./ferry-data, or `root` in the config]
    #[arg(long, global = true, env = "FERRY_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Config file [default: <root>/ferry.toml if present]
    #[arg(long, global = true, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where ferry keeps its state: postgres://user@host:port/db [default: <root>/ferry.db, or
    /// `[store] url` in the config]. A password may come from PGPASSWORD
    #[arg(
        long,
        global = true,
        env = "FERRY_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERRY_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// More log detail: -v logs every file, -vv debug
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process what is ready in the incoming folder once, then exit
    Run(RunArgs),
    /// The daemon: watch the incoming folder and take each file as soon as it is ready
    Watch(WatchArgs),
    /// Write a dataset's new records as batch files for a downstream system, exactly once
    Export(ExportArgs),
    /// Files by state, records per dataset, quarantine, waiting files and why
    Status(StatusArgs),
    /// The ledger: one row per file (and per attempt)
    Files(FilesArgs),
    /// Quarantined files: list them, show why, send them through again
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Check a configuration file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Remove archived and quarantined files older than [retention] keeps them, each only after
    /// checking it still has the content the ledger recorded; forget old ledger rows
    Prune(PruneArgs),
    /// Key a dataset's stored records as its `key` says now: after the key changed, or to
    /// resolve records the new key cannot tell apart (`--keep`)
    Rekey(RekeyArgs),
    /// What ferry would do with a file, without loading it: dataset, what holds it back, table,
    /// columns
    Explain {
        /// The file (in the incoming folder or anywhere else)
        path: PathBuf,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): `ferry man > ferry.1`, `ferry man watch > ferry-watch.1`
    Man {
        /// A subcommand's page (ferry-COMMAND(1)) instead of ferry(1)
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A folder to process, or files [default: <root>/incoming]. A file's dataset comes from
    /// its path under the incoming folder, or, outside it, from the folder it is in (as if that
    /// folder were in incoming/)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Leave the files where they are; only content identity decides what is new
    #[arg(long)]
    pub keep: bool,

    /// Take files from a folder outside the spool into it (they leave that folder for the
    /// spool's archive/ or quarantine/); without it or --keep, such a folder is refused
    #[arg(long = "move", conflicts_with_all = ["keep", "dry_run"])]
    pub move_in: bool,

    /// Say what would become of each ready file — its dataset, ingested with how many records,
    /// a duplicate, or quarantined and why — reading every file through the same checks, and
    /// change nothing (the exit code is the one the run would have)
    #[arg(long, conflicts_with = "keep")]
    pub dry_run: bool,

    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,

    /// Pull only this `[[source]]` (and not the local incoming folder); without it, a run
    /// pulls every source once and takes what is ready in incoming/
    #[arg(long, value_name = "NAME", conflicts_with_all = ["keep", "dry_run", "paths"])]
    pub source: Option<String>,

    /// No progress bar, even on a terminal
    #[arg(long)]
    pub no_progress: bool,

    /// Create the spool if the root named by --root (or the config) is not one yet
    #[arg(long)]
    pub init: bool,

    /// When the run ends, write its metrics (Prometheus text: files and records by outcome,
    /// each dataset's last success from the ledger, the run's time, length and exit code) to
    /// this file, atomically — for node-exporter's textfile collector (name it *.prom)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The dataset (from the config)
    pub dataset: String,
    /// Of records that share a key under the new definition, keep one — the first stored, or
    /// the latest (the greatest `version`, else the last stored) — and remove the others
    #[arg(long, value_enum)]
    pub keep: Option<KeepArg>,
    /// Say what re-keying would find and do, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepArg {
    First,
    Latest,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Say what would be removed, and remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Ingested,
    Duplicate,
    Quarantined,
}

#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Only files in this state
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,

    /// Only files of this dataset
    #[arg(long)]
    pub dataset: Option<String>,

    /// Only the newest N rows
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Only files finished since then: a duration ago (`2h`, `7d`) or a time (`2026-12-01`,
    /// `2026-12-01T08:00:00Z`)
    #[arg(long, value_name = "WHEN", value_parser = since)]
    pub since: Option<String>,

    /// Print as JSON (an array of objects)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Files in quarantine that have not been retried
    List {
        /// Print as JSON (an array of ledger rows)
        #[arg(long)]
        json: bool,
    },
    /// Why a file was quarantined: its reason, first rejected records and attempts
    Show {
        /// Ledger id (from `ferry quarantine list`)
        id: i64,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Send quarantined files through the pipeline again, under the current config
    Retry(RetryArgs),
    /// Give up on a quarantined file that will never load: it leaves the quarantine list, the
    /// ledger records why, and retention removes it with the rest of the quarantine
    Discard {
        /// Ledger id (from `ferry quarantine list`)
        id: i64,
        /// Why it will never load (recorded in the ledger)
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Ledger ids to retry
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<i64>,
    /// Retry every file in quarantine
    #[arg(long)]
    pub all: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the datasets as resolved (exit 2 if invalid)
    Check {
        /// The config file to check [default: --config, else <root>/ferry.toml]
        file: Option<PathBuf>,

        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Use no OS events; scan the folder every INTERVAL (for network filesystems)
    /// [default: watch.poll]
    #[arg(long, value_name = "INTERVAL", value_parser = duration)]
    pub poll: Option<std::time::Duration>,

    /// Full rescan interval, the backstop for missed events [default: watch.rescan, 30s]
    #[arg(long, value_name = "INTERVAL", value_parser = duration)]
    pub rescan: Option<std::time::Duration>,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464)
    /// [default: watch.metrics]
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Create the spool if the root named by --root (or the config) is not one yet
    #[arg(long)]
    pub init: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The dataset to export
    #[arg(required_unless_present_any = ["list", "all"])]
    pub dataset: Option<String>,

    /// Target folder, or sftp://, ftp://, ftps://, s3://bucket/prefix URL (a [[target]] with
    /// that URL lends its settings) [default: <root>/outgoing/<DATASET>]
    #[arg(long, value_name = "DIR|URL")]
    pub to: Option<PathBuf>,

    /// Batch file format
    #[arg(long, value_enum, default_value_t = crate::export::BatchFormat::Csv)]
    pub format: crate::export::BatchFormat,

    /// Compress batch files with gzip (csv and ndjson)
    #[arg(long)]
    pub gzip: bool,

    /// Compression of Parquet pages [default: zstd]
    #[arg(long, value_enum, value_name = "CODEC")]
    pub compression: Option<crate::export::parquet::Compression>,

    /// Most records per batch file
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows: u64,

    /// The target's name, which owns its own watermark; the name of a [[target]] exports to it
    /// [default: the target folder's path, or the URL]
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// List every dataset with records to export — its targets with their watermarks and
    /// pending records, and datasets never exported — and export nothing
    #[arg(long, conflicts_with_all = ["dataset", "to", "gzip", "target", "all"])]
    pub list: bool,

    /// Export every dataset with pending records: to each of its targets, or (never exported)
    /// to <root>/outgoing/<DATASET>, with the --format, --gzip and --max-rows given
    #[arg(long, conflicts_with_all = ["dataset", "to", "target"])]
    pub all: bool,

    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `--since`: a duration ago or a date/time, as ledger time (RFC 3339, UTC, milliseconds).
fn since(s: &str) -> Result<String, String> {
    use chrono::{NaiveDate, SecondsFormat, Utc};
    let t = s.trim();
    if let Ok(d) = crate::config::parse_duration(t) {
        let ago = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return Ok((Utc::now() - ago).to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let at = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        return Ok(at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        })
        .map_err(|_| {
            format!(
                "{s:?} is neither a duration (2h, 7d) nor a date (2026-12-01) or time (RFC 3339)"
            )
        })
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}
