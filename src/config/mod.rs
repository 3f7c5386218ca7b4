//! The resolved configuration: everything a command needs, decided once.
//!
//! Sources, strongest first: command-line flags, the TOML file (`--config`, else
//! `<root>/ferry.toml` if present), built-in defaults. Values that can be wrong (durations, globs,
//! delimiters, encodings) are checked while the TOML is read, so an error names the file, line
//! and key. `--help` never gets here: clap answers it before any file is touched.
//!
//! This file is the model; `load` reads and resolves the TOML, `values` parses its values,
//! `lint` finds what is valid but probably not meant.

mod lint;
mod load;
mod sources;
mod unpack;
mod values;

pub use sources::{remote_url, same_server, shown_url, After, S3Spec, Scheme, SourceSpec};
pub use values::parse_duration;

#[cfg(test)]
pub mod tests_support {
    pub use super::sources::sftp_source;
}

use crate::discover::Rules;
use crate::format::FormatOptions;
use crate::spool::{RelPath, Spool};
use crate::typed::ColumnSpec;
use globset::GlobMatcher;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the spool is by default.
pub const DEFAULT_ROOT: &str = "./ferry-data";

/// A dataset, as configured (or implied by a folder name, with no config).
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    /// Which files it takes, matched against the path relative to the incoming folder.
    pub pattern: Option<String>,
    pub(crate) matcher: Option<GlobMatcher>,
    pub options: FormatOptions,
    /// JSON pointer split into segments.
    pub pointer: Vec<String>,
    /// Declared columns; empty for an untyped dataset (columns taken from the files).
    pub columns: Vec<ColumnSpec>,
    /// Columns whose values identify a record across files (R-record-key); may be empty.
    pub key: Vec<String>,
    /// What a record whose key is already stored does.
    pub on_key: OnKey,
    /// With `on_key = "update"`: the declared column whose greater value wins.
    pub version: Option<String>,
    /// The table it stores into, when the config names one (else one named after it).
    pub table: Option<String>,
    pub max_bad: BadLimit,
    /// A file column the dataset does not have yet.
    pub on_new_column: Policy,
    /// A dataset column the file does not have.
    pub on_missing_column: Policy,
    /// Where a receipt for each finished file of the dataset goes (`receipts`).
    pub receipts: Option<Receipts>,
    /// How archives and OpenPGP files this dataset's rules match are opened (`None`: the
    /// top-level `[unpack]`).
    pub unpack: Option<Arc<Unpack>>,
}

/// How containers are opened (`[unpack]`, or the same keys on a `[[dataset]]`): archives
/// (zip, tar, tar.gz) and OpenPGP files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpack {
    /// `archive_members = "each"`: each member is its own unit (default: the archive is one).
    pub each: bool,
    /// The most bytes an archive's members (or a decrypted file) may hold together.
    pub max_bytes: u64,
    /// The greatest expansion over the container's own size (above `RATIO_FLOOR`).
    pub max_ratio: u64,
    /// The most members an archive may have.
    pub max_members: usize,
    /// The key OpenPGP files are decrypted with, and where its passphrase is.
    pub pgp_secret_key: Option<PathBuf>,
    pub pgp_passphrase_env: Option<String>,
    /// The partner's public key: a valid signature by it is required.
    pub pgp_verify_key: Option<PathBuf>,
}

impl Default for Unpack {
    fn default() -> Unpack {
        Unpack {
            each: false,
            max_bytes: 16 << 30,
            max_ratio: 1000,
            max_members: 10_000,
            pgp_secret_key: None,
            pgp_passphrase_env: None,
            pgp_verify_key: None,
        }
    }
}

/// `receipts = "<folder or URL>"` (and `receipt_rejects = "csv"`) of a dataset or a source: a
/// `<file>.<sha256 prefix>.receipt.json` for every file it finishes, delivered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    /// A local folder (relative: to the spool's root), or an sftp://, ftp(s)://, s3:// URL.
    pub to: String,
    /// The rejected records beside each receipt, as CSV.
    pub rejects_csv: bool,
}

/// `[notify]`: a webhook POSTed the receipt of every finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// `http(s)://…`.
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 key of the signature header.
    pub secret_env: Option<String>,
    /// Certificates of a private CA trusted instead of the public roots (https).
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl DatasetSpec {
    /// The zero-config dataset for a folder name (R-zero-config).
    pub fn implied(name: &str) -> DatasetSpec {
        DatasetSpec {
            name: name.to_string(),
            pattern: None,
            matcher: None,
            options: FormatOptions::default(),
            pointer: Vec::new(),
            columns: Vec::new(),
            key: Vec::new(),
            on_key: OnKey::Skip,
            version: None,
            table: None,
            max_bad: BadLimit::Count(0),
            on_new_column: Policy::Add,
            on_missing_column: Policy::Ignore,
            receipts: None,
            unpack: None,
        }
    }

    /// Whether the dataset declares its columns.
    pub fn typed(&self) -> bool {
        !self.columns.is_empty()
    }
}

/// What a record whose key is already stored does (R-record-key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnKey {
    /// The first stored record wins; later ones are counted as duplicate keys.
    #[default]
    Skip,
    /// The latest record wins (or the one with the greater `version`).
    Update,
    /// A record whose key is stored is a bad record (`record.key_exists`).
    Reject,
}

impl OnKey {
    pub fn id(self) -> &'static str {
        match self {
            OnKey::Skip => "skip",
            OnKey::Update => "update",
            OnKey::Reject => "reject",
        }
    }
}

/// What to do when a file's columns differ from the dataset's (R-drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Reject the file (`schema.new_column` / `schema.missing_column`).
    Fail,
    /// New columns: add them to the table (as TEXT in a typed dataset).
    Add,
    /// New columns: drop their values. Missing columns: store NULL.
    Ignore,
}

impl Policy {
    pub fn id(self) -> &'static str {
        match self {
            Policy::Fail => "fail",
            Policy::Add => "add",
            Policy::Ignore => "ignore",
        }
    }
}

/// How many bad records a file may have and still be loaded (R-bad-records).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadLimit {
    Count(u64),
    /// A share of the file's records, in percent.
    Percent(f64),
}

impl BadLimit {
    /// Whether `bad` of `total` records is over the limit.
    pub fn exceeded(self, bad: u64, total: u64) -> bool {
        match self {
            BadLimit::Count(n) => bad > n,
            BadLimit::Percent(p) => bad as f64 > p / 100.0 * total as f64,
        }
    }

    /// Whether `bad` already exceeds the limit whatever the rest of the file holds.
    pub fn exceeded_early(self, bad: u64) -> bool {
        match self {
            BadLimit::Count(n) => bad > n,
            BadLimit::Percent(_) => false,
        }
    }
}

impl fmt::Display for BadLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLimit::Count(n) => write!(f, "{n}"),
            BadLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The config file used, if any.
    pub file: Option<PathBuf>,
    pub spool: Spool,
    /// Where the spool's state is kept: its SQLite file, or a PostgreSQL database.
    pub store: crate::store::Location,
    pub rules: Rules,
    /// Parallel workers (hash, parse, validate). The writer is one more thread.
    pub workers: usize,
    /// Attempts for failures outside a file's content before it is quarantined.
    pub max_attempts: u32,
    pub datasets: Vec<Arc<DatasetSpec>>,
    /// Remote places files are pulled from (`[[source]]`).
    pub sources: Vec<Arc<SourceSpec>>,
    /// Remote places batches are exported to (`[[target]]`), resolved as sources are (their
    /// folder-walking and pulling settings unused).
    pub targets: Vec<Arc<SourceSpec>>,
    /// A webhook told of every finished file (`[notify]`).
    pub notify: Option<Notify>,
    /// How containers are opened where a dataset says nothing else (`[unpack]`).
    pub unpack: Arc<Unpack>,
    /// Files up to this size are read into memory in one go (one read for hash and parse).
    pub small_file: u64,
    /// `ferry watch` settings (flags override them).
    pub watch: WatchSettings,
    /// How long archived and quarantined files, and ledger rows, are kept (`ferry prune`).
    pub retention: Retention,
    /// Whether the spool root was named (flag, environment, config) rather than the default: a
    /// named root that is not a spool is a mistake to report, not a spool to create.
    pub root_named: bool,
    /// Files that match no configured dataset wait with a reason instead of becoming datasets
    /// of their own (`strict_datasets = true`).
    pub strict_datasets: bool,
    /// Things in the config that are valid but probably not what was meant (a `match` that
    /// looks like a regex, a dataset no file can reach). `config check` prints them; `run` and
    /// `watch` log them.
    pub warnings: Vec<String>,
}

/// How long ferry keeps what it has finished with, in days (0: forever, the default). Only
/// `ferry prune` (and `watch`, once a day) acts on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Archived files (ingested and duplicates), counted from when they were finished.
    pub archive_days: u32,
    /// Quarantined files, whether discarded or not.
    pub quarantine_days: u32,
    /// Ledger rows of duplicates and quarantined files whose file is gone. An ingested file's
    /// row is kept whatever this says: it is what keeps a re-sent file from loading twice.
    pub ledger_days: u32,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.archive_days + self.quarantine_days + self.ledger_days > 0
    }
}

/// The daemon's discovery and operations settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// Full rescan interval, the backstop for missed events.
    pub rescan: Duration,
    /// Scan every this often and use no OS events (network filesystems).
    pub poll: Option<Duration>,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Config {
    /// The dataset a file belongs to: the first configured dataset whose `match` glob matches
    /// its path, else the dataset named after its first folder (`default` at the top): the
    /// configured one of that name, or a zero-config one — unless `strict_datasets`, where a
    /// file no configured dataset takes has none (`None`).
    pub fn dataset_for(&self, rel: &RelPath) -> Option<Arc<DatasetSpec>> {
        let path = rel.display();
        for d in &self.datasets {
            if d.matcher.as_ref().is_some_and(|m| m.is_match(&path)) {
                return Some(d.clone());
            }
        }
        let name = rel.first_dir().unwrap_or_else(|| "default".to_string());
        match self.datasets.iter().find(|d| d.name == name) {
            Some(d) => Some(d.clone()),
            None if self.strict_datasets => None,
            None => Some(Arc::new(DatasetSpec::implied(&name))),
        }
    }

    /// How a container found at `rel` (pulled from the `[[source]]` named `source`, if it
    /// was) is opened: the source's keys over the settings of the dataset its path names, else
    /// over `[unpack]`'s.
    pub fn unpack_for(&self, rel: &RelPath, source: Option<&str>) -> Arc<Unpack> {
        let base = self
            .dataset_for(rel)
            .and_then(|d| d.unpack.clone())
            .unwrap_or_else(|| self.unpack.clone());
        let own = source
            .and_then(|name| self.sources.iter().find(|s| s.name == name))
            .and_then(|s| s.unpack.as_ref());
        match own.map(|raw| raw.apply(&base)) {
            Some(Ok(u)) => Arc::new(u),
            // Checked when the config was read.
            _ => base,
        }
    }

    /// Every container setting the config makes, named for messages: `[unpack]`, each
    /// dataset's own, each source's own (over `[unpack]`).
    pub fn unpack_settings(&self) -> Vec<(String, Arc<Unpack>)> {
        let mut out = vec![("[unpack]".to_string(), self.unpack.clone())];
        for d in &self.datasets {
            if let Some(u) = &d.unpack {
                out.push((format!("dataset {:?}", d.name), u.clone()));
            }
        }
        for s in &self.sources {
            if let Some(Ok(u)) = s.unpack.as_ref().map(|raw| raw.apply(&self.unpack)) {
                out.push((format!("source {:?}", s.name), Arc::new(u)));
            }
        }
        out
    }

    /// What holds a file back for config reasons: no dataset takes it (`strict_datasets`).
    pub fn hold(&self, rel: &RelPath) -> Option<crate::discover::Hold> {
        // A container's members are judged by their own paths (an archive named as one is
        // taken even when no dataset's match takes its own path).
        (self.dataset_for(rel).is_none() && !crate::container::named(rel.file_name()))
            .then_some(crate::discover::Hold::NoDataset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn datasets_match_by_glob_then_folder() {
        let raw = load::parse_raw(
            "[[dataset]]\nname = \"vehicles\"\nmatch = \"fleet/**/*.csv\"\ndelimiter = \";\"\n",
        )
        .unwrap();
        let cfg = Config {
            datasets: raw
                .datasets
                .iter()
                .map(|d| Arc::new(d.get_ref().resolve("").unwrap()))
                .collect(),
            ..Config::load(Some(Path::new("/nonexistent-root")), None, None).unwrap()
        };
        let rel = |p: &str| RelPath::from_relative(Path::new(p)).unwrap();
        let d = cfg.dataset_for(&rel("fleet/2026/a.csv")).unwrap();
        assert_eq!(d.name, "vehicles");
        assert_eq!(d.options.delimiter, Some(b';'));
        assert_eq!(cfg.dataset_for(&rel("sales/a.csv")).unwrap().name, "sales");
        assert_eq!(cfg.dataset_for(&rel("a.csv")).unwrap().name, "default");
        let strict = Config {
            strict_datasets: true,
            ..cfg
        };
        assert!(strict.dataset_for(&rel("sales/a.csv")).is_none());
        assert!(strict.dataset_for(&rel("fleet/x/a.csv")).is_some());
    }
}
