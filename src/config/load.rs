//! Reading a config file: TOML into raw structures (unknown keys refused), then resolved into the
//! model with defaults filled in and every range checked. Errors name the file, line and key.

use super::lint::pattern_warnings;
use super::values::*;
use super::{BadLimit, Config, DatasetSpec, OnKey, Policy, Retention, WatchSettings, DEFAULT_ROOT};
use crate::discover::{Rules, DEFAULT_IGNORE};
use crate::exit::ExitError;
use crate::format::fixed::{Field, Layout};
use crate::format::{json::pointer_segments, Format, FormatOptions};
use crate::spool::Spool;
use crate::store::Location;
use crate::typed::{self, ColType, ColumnSpec, Value};
use globset::Glob;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Bounds of numeric settings: a value outside is a config error, not a crash later.
const MAX_WORKERS: usize = 256;
/// Each writer holds a connection of its own; more than this only crowds the server.
const MAX_STORE_WRITERS: usize = 16;
const MAX_ATTEMPTS: u32 = 100;
const DAY: Duration = Duration::from_secs(86_400);
/// Fixed-width layouts: the most header or trailer lines skipped (they are held in memory), and
/// the furthest position a column may end at.
const MAX_SKIP_LINES: usize = 1000;
const MAX_LINE_UNITS: usize = 1 << 30;

impl Config {
    /// Resolves the configuration from the command line's `--root`, `--config` and `--store`.
    pub fn load(
        root: Option<&Path>,
        config: Option<&Path>,
        store: Option<&str>,
    ) -> Result<Config, ExitError> {
        let file = match config {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let r = root
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
                // Present means used: a `ferry.toml` that is a folder (or a FIFO) is an error,
                // never silently skipped.
                Some(r.join("ferry.toml")).filter(|p| p.symlink_metadata().is_ok())
            }
        };
        let (raw, text) = match &file {
            Some(p) => read_raw(p)?,
            None => (RawConfig::default(), String::new()),
        };
        Config::from_raw(raw, &text, file, root, store)
    }

    /// A configuration from the text of a `ferry.toml` alone (for the config fuzz target).
    #[cfg(feature = "fuzzing")]
    pub fn from_text(text: &str) -> Result<Config, ExitError> {
        let raw = parse_raw(text).map_err(ExitError::Usage)?;
        Config::from_raw(raw, text, None, Some(Path::new("/nonexistent/ferry")), None)
    }

    fn from_raw(
        raw: RawConfig,
        text: &str,
        file: Option<PathBuf>,
        root: Option<&Path>,
        store: Option<&str>,
    ) -> Result<Config, ExitError> {
        let at = Where { file: &file };
        let root_named = root.is_some() || raw.root.is_some();
        let root = absolute(
            &root
                .map(Path::to_path_buf)
                .or(raw.root.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        );
        let incoming = raw.incoming.as_ref().map(|i| absolute(&root.join(i)));
        let unpack = Arc::new(match &raw.unpack {
            Some(u) => u
                .apply(&super::Unpack::default())
                .map_err(|e| at.bad("unpack", e))?,
            None => super::Unpack::default(),
        });
        let datasets = datasets(&raw, text, &at, &unpack)?;
        let spool = Spool::new(&root, incoming.as_deref());
        let store = store_location(&raw, store, &spool, &at)?;
        let mut warnings = pattern_warnings(&datasets);
        if matches!(store, Location::Sqlite(_)) {
            if raw.store.schema.as_deref().is_some_and(|s| !s.is_empty()) {
                warnings.push(
                    "store.schema applies to a PostgreSQL store only; with SQLite (no store.url, \
                     --store or FERRY_STORE) it is not used"
                        .into(),
                );
            }
            if raw.store.writers.is_some_and(|w| w > 1) {
                warnings.push(
                    "store.writers applies to a PostgreSQL store only; SQLite lets one \
                     transaction write at a time, so ferry runs one writer"
                        .into(),
                );
            }
        }
        Ok(Config {
            store,
            spool,
            rules: rules(&raw, &at)?,
            workers: workers(raw.workers, &at)?,
            max_attempts: max_attempts(raw.max_attempts, &at)?,
            small_file: 4 << 20,
            watch: watch(&raw, &at)?,
            retention: retention(&raw.retention, &at)?,
            root_named,
            strict_datasets: raw.strict_datasets.unwrap_or(false),
            warnings,
            datasets,
            sources: super::sources::resolve(&raw.sources, &at.show())?
                .into_iter()
                .map(Arc::new)
                .collect(),
            targets: super::sources::resolve_targets(&raw.targets, &at.show())?
                .into_iter()
                .map(Arc::new)
                .collect(),
            notify: notify(&raw.notify, &at)?,
            unpack,
            file,
        })
    }
}

/// `receipts` and `receipt_rejects` of a dataset or source, checked.
pub(super) fn receipts(
    to: Option<&str>,
    rejects: Option<&str>,
) -> Result<Option<super::Receipts>, String> {
    let rejects_csv = match rejects {
        None => false,
        Some("csv") => true,
        Some(other) => {
            return Err(format!(
                "receipt_rejects = {other:?}: the one format is \"csv\""
            ))
        }
    };
    let Some(to) = to.map(str::trim) else {
        if rejects_csv {
            return Err("receipt_rejects needs receipts = \"<folder or URL>\"".into());
        }
        return Ok(None);
    };
    if to.is_empty() || to.contains('\0') {
        return Err("receipts: a folder, or an sftp://, ftp://, ftps:// or s3:// URL".into());
    }
    if to.contains("://") && super::remote_url(to).is_none() {
        return Err(format!(
            "receipts = {to:?}: a folder, or an sftp://, ftp://, ftps:// or s3:// URL"
        ));
    }
    Ok(Some(super::Receipts {
        to: to.to_string(),
        rejects_csv,
    }))
}

/// `[notify]`, checked.
fn notify(raw: &Option<RawNotify>, at: &Where) -> Result<Option<super::Notify>, ExitError> {
    let Some(n) = raw else {
        return Ok(None);
    };
    let url = n.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(at.bad(
            "notify.url",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    if let Some(v) = &n.secret_env {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(at.bad(
                "notify.secret_env",
                "the name of an environment variable".into(),
            ));
        }
    }
    if n.secret.is_some() {
        return Err(at.bad(
            "notify.secret",
            "secrets are never read from ferry.toml; name an environment variable: \
             secret_env = \"FERRY_WEBHOOK_SECRET\""
                .into(),
        ));
    }
    let timeout = n
        .timeout
        .map_or(std::time::Duration::from_secs(10), |d| d.0);
    Ok(Some(super::Notify {
        url: url.to_string(),
        secret_env: n.secret_env.clone(),
        ca_file: n.ca_file.clone(),
        timeout,
    }))
}

/// Where a setting came from, for messages.
struct Where<'a> {
    file: &'a Option<PathBuf>,
}

impl Where<'_> {
    fn show(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "configuration".to_string(), |p| p.display().to_string())
    }

    fn bad(&self, key: &str, why: String) -> ExitError {
        ExitError::Usage(format!("{}: {key}: {why}", self.show()))
    }

    fn within(
        &self,
        key: &str,
        d: Duration,
        lo: Duration,
        hi: Duration,
    ) -> Result<Duration, ExitError> {
        if d < lo || d > hi {
            Err(self.bad(key, format!("{d:?} is not between {lo:?} and {hi:?}")))
        } else {
            Ok(d)
        }
    }
}

fn rules(raw: &RawConfig, at: &Where) -> Result<Rules, ExitError> {
    let ignore: Vec<String> = match &raw.ready.ignore {
        Some(list) => list.iter().map(|p| p.0.clone()).collect(),
        None => DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
    };
    let settle = raw.ready.settle.map_or(Duration::from_secs(1), |d| d.0);
    at.within("ready.settle", settle, Duration::ZERO, DAY)?;
    let marker = raw.ready.done_marker.clone().filter(|m| !m.is_empty());
    Rules::new(&ignore, marker, settle).map_err(|e| at.bad("ready.ignore", e.to_string()))
}

fn datasets(
    raw: &RawConfig,
    text: &str,
    at: &Where,
    unpack: &Arc<super::Unpack>,
) -> Result<Vec<Arc<DatasetSpec>>, ExitError> {
    let mut datasets = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut tables = std::collections::HashMap::new();
    for d in &raw.datasets {
        let line = line_of(text, d.span().start);
        let d = d.get_ref();
        let here = |e: String| {
            ExitError::Usage(format!(
                "{}: line {line}: dataset {:?}: {e}",
                at.show(),
                d.name.0
            ))
        };
        if !names.insert(d.name.0.to_lowercase()) {
            return Err(here("a dataset with this name is already defined".into()));
        }
        let mut spec = d.resolve(text).map_err(here)?;
        let own = d.unpack();
        if own.any() {
            spec.unpack = Some(Arc::new(own.apply(unpack).map_err(here)?));
        }
        if let Some(t) = &spec.table {
            if let Some(other) = tables.insert(t.to_lowercase(), spec.name.clone()) {
                return Err(here(format!(
                    "table {t:?} is dataset {other:?}'s already; two datasets never share a table"
                )));
            }
        }
        datasets.push(Arc::new(spec));
    }
    Ok(datasets)
}

fn workers(raw: Option<usize>, at: &Where) -> Result<usize, ExitError> {
    match raw {
        None | Some(0) => Ok(std::thread::available_parallelism().map_or(2, |n| n.get())),
        Some(w) if w <= MAX_WORKERS => Ok(w),
        Some(w) => Err(at.bad(
            "workers",
            format!("{w} is more than {MAX_WORKERS} (0 means one per CPU)"),
        )),
    }
}

fn max_attempts(raw: Option<u32>, at: &Where) -> Result<u32, ExitError> {
    match raw {
        None => Ok(5),
        Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => Ok(n),
        Some(n) => Err(at.bad(
            "max_attempts",
            format!("{n} is not between 1 and {MAX_ATTEMPTS}"),
        )),
    }
}

fn watch(raw: &RawConfig, at: &Where) -> Result<WatchSettings, ExitError> {
    let rescan = raw.watch.rescan.map_or(Duration::from_secs(30), |d| d.0);
    at.within("watch.rescan", rescan, Duration::from_millis(100), DAY)?;
    let poll = raw.watch.poll.map(|d| d.0).filter(|d| !d.is_zero());
    if let Some(p) = poll {
        at.within("watch.poll", p, Duration::from_millis(10), DAY)?;
    }
    let metrics = match raw.watch.metrics.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(m.parse().map_err(|e| {
            at.bad(
                "watch.metrics",
                format!("{m:?} is not an address like 127.0.0.1:9464 ({e})"),
            )
        })?),
    };
    Ok(WatchSettings {
        rescan,
        poll,
        metrics,
    })
}

/// The most days a retention setting may name (a hundred years; 0 keeps forever).
const MAX_RETENTION_DAYS: i64 = 36_500;

fn retention(raw: &RawRetention, at: &Where) -> Result<Retention, ExitError> {
    let days = |key: &str, v: Option<i64>| match v.unwrap_or(0) {
        d @ 0..=MAX_RETENTION_DAYS => Ok(d as u32),
        d => Err(at.bad(
            key,
            format!(
                "{d} is not a number of days between 0 (keep forever) and {MAX_RETENTION_DAYS}"
            ),
        )),
    };
    Ok(Retention {
        archive_days: days("retention.archive_days", raw.archive_days)?,
        quarantine_days: days("retention.quarantine_days", raw.quarantine_days)?,
        ledger_days: days("retention.ledger_days", raw.ledger_days)?,
    })
}

/// Where the spool's state is kept: `--store` (or `FERRY_STORE`), else `[store] url`, else the
/// spool's SQLite file.
fn store_location(
    raw: &RawConfig,
    flag: Option<&str>,
    spool: &Spool,
    at: &Where,
) -> Result<Location, ExitError> {
    let schema = raw.store.schema.clone().filter(|s| !s.is_empty());
    let url = match flag.filter(|u| !u.is_empty()) {
        Some(u) => Some((u.to_string(), "--store")),
        None => raw
            .store
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|u| (u, "store.url")),
    };
    let lease = match raw.store.lease {
        Some(d) => Some(at.within(
            "store.lease",
            d.0,
            Duration::from_secs(2),
            Duration::from_secs(3600),
        )?),
        None => None,
    };
    let writers = match raw.store.writers {
        Some(w) if (1..=MAX_STORE_WRITERS).contains(&w) => Some(w),
        Some(w) => {
            return Err(at.bad(
                "store.writers",
                format!("{w} is not between 1 and {MAX_STORE_WRITERS}"),
            ))
        }
        None => None,
    };
    match url {
        // `schema`, `lease` and `writers` are PostgreSQL's; one config may serve both stores.
        None => Ok(Location::of(spool)),
        Some((url, key)) => {
            let mut t = crate::store::postgres::Target::parse(&url, schema).map_err(|why| {
                if key == "--store" {
                    ExitError::Usage(format!("--store: {why}"))
                } else {
                    at.bad(key, why)
                }
            })?;
            if let Some(l) = lease {
                t.lease = l;
            }
            if let Some(w) = writers {
                t.writers = w;
            }
            Ok(Location::Postgres(Box::new(t)))
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p))
    }
}

fn read_raw(path: &Path) -> Result<(RawConfig, String), ExitError> {
    let text = crate::fsio::open_regular(path)
        .and_then(std::io::read_to_string)
        .map_err(|e| ExitError::Usage(format!("cannot read the config: {e}")))?;
    let raw = parse_raw(&text).map_err(|e| ExitError::Usage(format!("{}: {e}", path.display())))?;
    Ok((raw, text))
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses config text; errors say line, column and key.
pub(super) fn parse_raw(text: &str) -> Result<RawConfig, String> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let msg = e.message().trim_end().to_string();
        match line {
            Some(l) => format!("line {l}: {msg}\n{e}"),
            None => msg,
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    root: Option<PathBuf>,
    incoming: Option<PathBuf>,
    workers: Option<usize>,
    max_attempts: Option<u32>,
    strict_datasets: Option<bool>,
    #[serde(default)]
    ready: RawReady,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default, rename = "dataset")]
    pub(super) datasets: Vec<Spanned<RawDataset>>,
    #[serde(default, rename = "source")]
    sources: Vec<super::sources::RawSource>,
    #[serde(default, rename = "target")]
    targets: Vec<super::sources::RawSource>,
    notify: Option<RawNotify>,
    unpack: Option<super::unpack::RawUnpack>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: String,
    secret_env: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Option<Dur>,
    // Refused with the reason (never read).
    secret: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    settle: Option<Dur>,
    ignore: Option<Vec<Pattern>>,
    done_marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    schema: Option<String>,
    lease: Option<Dur>,
    writers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    archive_days: Option<i64>,
    quarantine_days: Option<i64>,
    ledger_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    rescan: Option<Dur>,
    poll: Option<Dur>,
    metrics: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataset {
    name: DatasetName,
    #[serde(rename = "match")]
    pattern: Option<Pattern>,
    format: Option<FormatName>,
    delimiter: Option<Delimiter>,
    quote: Option<QuoteChar>,
    header: Option<bool>,
    /// Column names for files without a header row.
    names: Option<Vec<String>>,
    json_pointer: Option<Pointer>,
    encoding: Option<EncodingName>,
    /// `strict` (RFC 4180, the default) or `lenient` (stray quotes read as text, as csv-core reads them).
    quotes: Option<QuotesName>,
    records: Option<RecordsName>,
    /// The longest record accepted: bytes (`16777216`) or a size (`"16MiB"`).
    max_line_bytes: Option<Size>,
    /// Keep NUL characters instead of refusing the file.
    allow_nul: Option<bool>,
    /// XML: the path of the record elements (`/orders/order`).
    record_path: Option<String>,
    /// Workbooks: the sheet to read, and the row that names the columns.
    sheet: Option<String>,
    header_row: Option<u32>,
    /// Fixed-width: `chars` (default) or `bytes`.
    unit: Option<UnitName>,
    line_length: Option<usize>,
    pad_short_lines: Option<bool>,
    trim: Option<bool>,
    skip_header: Option<usize>,
    skip_trailer: Option<usize>,
    trailer_prefix: Option<String>,
    trailer_count: Option<RawSpan>,
    #[serde(default)]
    columns: Vec<Spanned<RawColumn>>,
    key: Option<Vec<String>>,
    /// What a record whose key is already stored does: skip (default), update, reject.
    on_key: Option<OnKeyName>,
    /// With `on_key = "update"`: a declared int, decimal, date or datetime column; the record
    /// with the greater value wins.
    version: Option<String>,
    /// The dataset's table, when it is not to be named after the dataset (an existing table is
    /// adopted when it fits).
    table: Option<String>,
    max_bad_records: Option<BadLimitRaw>,
    on_new_column: Option<PolicyName>,
    on_missing_column: Option<PolicyName>,
    /// A folder or URL a receipt for each finished file goes to.
    receipts: Option<String>,
    /// `"csv"`: the rejected records beside each receipt.
    receipt_rejects: Option<String>,
    // How its archives and OpenPGP files are opened (`[unpack]`'s keys).
    archive_members: Option<String>,
    max_archive_bytes: Option<toml::Value>,
    max_archive_ratio: Option<u64>,
    max_archive_members: Option<usize>,
    pgp_secret_key: Option<PathBuf>,
    pgp_passphrase_env: Option<String>,
    pgp_verify_key: Option<PathBuf>,
    pgp_passphrase: Option<toml::Value>,
}

impl RawDataset {
    fn unpack(&self) -> super::unpack::RawUnpack {
        super::unpack::RawUnpack {
            archive_members: self.archive_members.clone(),
            max_archive_bytes: self.max_archive_bytes.clone(),
            max_archive_ratio: self.max_archive_ratio,
            max_archive_members: self.max_archive_members,
            pgp_secret_key: self.pgp_secret_key.clone(),
            pgp_passphrase_env: self.pgp_passphrase_env.clone(),
            pgp_verify_key: self.pgp_verify_key.clone(),
            pgp_passphrase: self.pgp_passphrase.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    ty: Option<TypeName>,
    /// The header name (or JSON key) in the files, when it differs from `name`.
    from: Option<String>,
    #[serde(default)]
    required: bool,
    allowed: Option<Vec<toml::Value>>,
    trim: Option<bool>,
    case: Option<CaseName>,
    formats: Option<Vec<String>>,
    timezone: Option<Zone>,
    scale: Option<u32>,
    decimal_separator: Option<String>,
    thousands_separator: Option<String>,
    /// Fixed-width: the column's first position (1-based) and width.
    start: Option<usize>,
    width: Option<usize>,
}

/// A range of a fixed-width line: 1-based start and width.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpan {
    start: usize,
    width: usize,
}

impl RawDataset {
    pub(super) fn resolve(&self, text: &str) -> Result<DatasetSpec, String> {
        let options = self.options();
        let pointer = self
            .json_pointer
            .as_ref()
            .map(|p| pointer_segments(&p.0).expect("validated when read"))
            .unwrap_or_default();
        if !options.header && options.names.is_empty() && self.columns.is_empty() {
            return Err("header = false needs `names` (or `columns`) to name the columns".into());
        }

        let mut columns = self.columns(text)?;
        let mut options = options;
        self.format_specific(&mut options, &columns)?;
        // Without a header, the declared columns name the file's columns in order.
        if !options.header && options.names.is_empty() {
            options.names = columns.iter().map(|c| c.source.clone()).collect();
        }

        let key = self.key(&columns)?;
        let (on_key, version) = self.on_key(&key, &columns)?;
        // A record without a version cannot be ordered against the stored one.
        if let Some(v) = &version {
            if let Some(c) = columns.iter_mut().find(|c| &c.name == v) {
                c.required = true;
            }
        }
        let typed = !columns.is_empty();
        let on_new_column = self
            .on_new_column
            .map_or(if typed { Policy::Fail } else { Policy::Add }, |p| p.0);
        let on_missing_column = match self.on_missing_column.map(|p| p.0) {
            Some(Policy::Add) => return Err(
                "on_missing_column: \"add\" does not apply to a missing column (fail or ignore)"
                    .into(),
            ),
            Some(p) => p,
            None if typed => Policy::Fail,
            None => Policy::Ignore,
        };
        Ok(DatasetSpec {
            name: self.name.0.clone(),
            pattern: self.pattern.as_ref().map(|p| p.0.clone()),
            matcher: self.pattern.as_ref().map(|p| {
                Glob::new(&p.0)
                    .expect("validated when read")
                    .compile_matcher()
            }),
            options,
            pointer,
            columns,
            key,
            on_key,
            version,
            table: self.table()?,
            max_bad: self.max_bad_records.map_or(BadLimit::Count(0), |b| b.0),
            on_new_column,
            on_missing_column,
            receipts: receipts(self.receipts.as_deref(), self.receipt_rejects.as_deref())?,
            unpack: None,
        })
    }

    /// The table the dataset names, checked: a name ferry can give a table on every store.
    fn table(&self) -> Result<Option<String>, String> {
        let Some(t) = &self.table else {
            return Ok(None);
        };
        let t = t.trim();
        if t.is_empty() || t.len() > crate::store::names::MAX_NAME || t.contains('\0') {
            return Err(format!(
                "table {t:?}: a table name is 1 to {} bytes",
                crate::store::names::MAX_NAME
            ));
        }
        if crate::store::names::reserved_table(&t.to_lowercase()) {
            return Err(format!(
                "table {t:?} is a name ferry or the store keeps for itself (ferry's own tables, \
                 and names starting with ferry_, sqlite_ or pg_)"
            ));
        }
        Ok(Some(t.to_string()))
    }

    /// How the dataset's files are read.
    fn options(&self) -> FormatOptions {
        FormatOptions {
            format: self.format.map(|f| f.0),
            delimiter: self.delimiter.and_then(|d| d.0),
            quote: self.quote.map_or(b'"', |q| q.0),
            header: self.header.unwrap_or(true),
            names: self.names.clone().unwrap_or_default(),
            json_pointer: self.json_pointer.as_ref().map(|p| p.0.clone()),
            encoding: self.encoding.map(|e| e.0),
            strict_quotes: self.quotes.is_none_or(|q| q.0),
            max_record: self
                .max_line_bytes
                .map_or(crate::format::DEFAULT_MAX_RECORD, |s| s.0),
            allow_nul: self.allow_nul.unwrap_or(false),
            json_records: self.records.map_or(Default::default(), |r| r.0),
            xml: Default::default(),
            fixed: None,
            excel: Default::default(),
        }
    }

    /// The XML, workbook and fixed-width options, each refused on a dataset of another format.
    fn format_specific(
        &self,
        options: &mut FormatOptions,
        columns: &[ColumnSpec],
    ) -> Result<(), String> {
        let format = options.format;
        let only = |set: bool, key: &str, f: Format| -> Result<(), String> {
            if set && format.is_some_and(|g| g != f) {
                return Err(format!("{key} applies to format = {:?}", f.id()));
            }
            Ok(())
        };
        only(self.record_path.is_some(), "record_path", Format::Xml)?;
        if let Some(p) = &self.record_path {
            options.xml.record_path = Some(crate::format::xml::path_segments(p)?);
        }
        // Markup is no value of a declared type.
        options.xml.nested_as_text = columns.is_empty();
        only(self.sheet.is_some(), "sheet", Format::Excel)?;
        only(self.header_row.is_some(), "header_row", Format::Excel)?;
        options.excel.sheet = self.sheet.clone();
        if let Some(r) = self.header_row {
            if r == 0 {
                return Err("header_row counts from 1 (the sheet's first row)".into());
            }
            options.excel.header_row = r;
        }
        if format == Some(Format::Fixed) {
            options.fixed = Some(self.layout(columns, options)?);
            return Ok(());
        }
        let fixed_only = [
            ("unit", self.unit.is_some()),
            ("line_length", self.line_length.is_some()),
            ("pad_short_lines", self.pad_short_lines.is_some()),
            ("trim", self.trim.is_some()),
            ("skip_header", self.skip_header.is_some()),
            ("skip_trailer", self.skip_trailer.is_some()),
            ("trailer_prefix", self.trailer_prefix.is_some()),
            ("trailer_count", self.trailer_count.is_some()),
        ];
        let from_columns = self
            .columns
            .iter()
            .any(|c| c.get_ref().start.is_some() || c.get_ref().width.is_some());
        for (key, set) in fixed_only
            .into_iter()
            .chain([("start/width", from_columns)])
        {
            if set {
                return Err(format!("{key} applies to format = \"fixed\""));
            }
        }
        Ok(())
    }

    /// A fixed-width dataset's layout: every column placed, none overlapping.
    fn layout(&self, columns: &[ColumnSpec], options: &FormatOptions) -> Result<Layout, String> {
        if columns.is_empty() {
            return Err("format = \"fixed\" needs columns, each with start and width".into());
        }
        let mut fields = Vec::with_capacity(columns.len());
        for (spec, raw) in columns.iter().zip(&self.columns) {
            let raw = raw.get_ref();
            let (Some(start), Some(width)) = (raw.start, raw.width) else {
                return Err(format!(
                    "column {:?}: a fixed-width column needs start and width",
                    spec.name
                ));
            };
            if start == 0 || width == 0 || start.saturating_add(width) > MAX_LINE_UNITS {
                return Err(format!(
                    "column {:?}: start counts from 1, width is at least 1, and the column ends \
                     within {MAX_LINE_UNITS} positions",
                    spec.name
                ));
            }
            if raw.from.is_some() {
                return Err(format!(
                    "column {:?}: a fixed-width column is placed by start and width; `from`                      does not apply",
                    spec.name
                ));
            }
            fields.push(Field {
                name: spec.source.clone(),
                start: start - 1,
                width,
            });
        }
        let mut sorted: Vec<&Field> = fields.iter().collect();
        sorted.sort_by_key(|f| f.start);
        for w in sorted.windows(2) {
            if w[0].start + w[0].width > w[1].start {
                return Err(format!(
                    "columns {:?} and {:?} overlap (positions {}..{} and {}..{})",
                    w[0].name,
                    w[1].name,
                    w[0].start + 1,
                    w[0].start + w[0].width,
                    w[1].start + 1,
                    w[1].start + w[1].width
                ));
            }
        }
        let end = Layout::end(&fields);
        let line_length = self.line_length.unwrap_or(end);
        if line_length > MAX_LINE_UNITS {
            return Err(format!("line_length is at most {MAX_LINE_UNITS}"));
        }
        if line_length < end {
            return Err(format!(
                "line_length {line_length} ends before the last column (position {end})"
            ));
        }
        let bytes = match (self.unit.map(|u| u.0), options.encoding) {
            (Some(true), Some(enc)) if enc.is_single_byte() => false,
            (Some(true), Some(enc)) if !enc.is_utf8() => {
                return Err(format!(
                    "unit = \"bytes\" counts UTF-8 or single-byte text; {} is neither",
                    enc.name()
                ))
            }
            (unit, _) => unit.unwrap_or(false),
        };
        let skip_header = self.skip_header.unwrap_or(0);
        let trailer_prefix = self.trailer_prefix.clone();
        if trailer_prefix.as_deref().is_some_and(str::is_empty) {
            return Err("trailer_prefix: name what trailer lines start with".into());
        }
        // A prefix names a trailer: one line unless skip_trailer says more.
        let skip_trailer = self
            .skip_trailer
            .unwrap_or(usize::from(trailer_prefix.is_some()));
        if trailer_prefix.is_some() && skip_trailer == 0 {
            return Err("trailer_prefix names trailer lines: skip_trailer cannot be 0".into());
        }
        if skip_header.max(skip_trailer) > MAX_SKIP_LINES {
            return Err(format!(
                "skip_header and skip_trailer are at most {MAX_SKIP_LINES} lines"
            ));
        }
        let trailer_count = match self.trailer_count {
            None => None,
            Some(_) if skip_trailer == 0 => {
                return Err("trailer_count reads the trailer line: set skip_trailer".into())
            }
            Some(RawSpan { start, width }) if start == 0 || width == 0 || width > 19 => {
                return Err("trailer_count: start counts from 1, width is 1 to 19 digits".into())
            }
            Some(RawSpan { start, width }) => Some((start - 1, width)),
        };
        Ok(Layout {
            fields,
            bytes,
            line_length,
            pad: self.pad_short_lines.unwrap_or(false),
            trim: self.trim.unwrap_or(true),
            skip_header,
            skip_trailer,
            trailer_prefix,
            trailer_count,
            max_record: options.max_record,
        })
    }

    /// The declared columns, each checked, none declared or read twice.
    fn columns(&self, text: &str) -> Result<Vec<ColumnSpec>, String> {
        let mut columns: Vec<ColumnSpec> = Vec::new();
        for c in &self.columns {
            let line = line_of(text, c.span().start);
            let spec = c
                .get_ref()
                .resolve()
                .map_err(|e| format!("column {:?} (line {line}): {e}", c.get_ref().name))?;
            let clash = |a: &str| {
                columns
                    .iter()
                    .any(|o: &ColumnSpec| o.name.eq_ignore_ascii_case(a))
            };
            if clash(&spec.name) {
                return Err(format!(
                    "column {:?} (line {line}) is declared twice",
                    spec.name
                ));
            }
            if columns
                .iter()
                .any(|o| o.source.eq_ignore_ascii_case(&spec.source))
            {
                return Err(format!(
                    "column {:?} (line {line}): two columns read the same file column {:?}",
                    spec.name, spec.source
                ));
            }
            columns.push(spec);
        }
        Ok(columns)
    }

    /// The key columns: each named once, and among the declared columns (if any).
    fn key(&self, columns: &[ColumnSpec]) -> Result<Vec<String>, String> {
        let key = self.key.clone().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for k in &key {
            if !seen.insert(k.to_lowercase()) {
                return Err(format!("key: column {k:?} is named twice"));
            }
            if !columns.is_empty() && !columns.iter().any(|c| c.name.eq_ignore_ascii_case(k)) {
                return Err(format!(
                    "key: {k:?} is not one of the dataset's columns ({})",
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if self.key.as_ref().is_some_and(Vec::is_empty) {
            return Err("key: name at least one column, or leave `key` out".into());
        }
        Ok(key)
    }
}

impl RawDataset {
    /// `on_key` and `version`: they need a key; `version` needs `on_key = "update"` and names a
    /// declared column of an ordered type that is not part of the key.
    fn on_key(
        &self,
        key: &[String],
        columns: &[ColumnSpec],
    ) -> Result<(OnKey, Option<String>), String> {
        let on_key = self.on_key.map_or(OnKey::Skip, |o| o.0);
        if key.is_empty() && self.on_key.is_some() {
            return Err("on_key applies to a dataset with a `key`".into());
        }
        let Some(v) = &self.version else {
            return Ok((on_key, None));
        };
        if on_key != OnKey::Update {
            return Err(format!(
                "version applies to on_key = \"update\" (this dataset's on_key is {:?})",
                on_key.id()
            ));
        }
        let Some(col) = columns.iter().find(|c| c.name.eq_ignore_ascii_case(v)) else {
            return Err(format!(
                "version: {v:?} is not one of the dataset's declared columns{}",
                if columns.is_empty() {
                    " (declare it with a type: int, decimal, date or datetime)"
                } else {
                    ""
                }
            ));
        };
        use crate::typed::ColType as T;
        if !matches!(col.ty, T::Int | T::Decimal | T::Date | T::DateTime) {
            return Err(format!(
                "version: column {:?} is of type {}; a version is an int, decimal, date or \
                 datetime",
                col.name,
                col.ty.id()
            ));
        }
        if key.iter().any(|k| k.eq_ignore_ascii_case(v)) {
            return Err(format!(
                "version: column {:?} is part of the key; a version is another column",
                col.name
            ));
        }
        Ok((on_key, Some(col.name.clone())))
    }
}

impl RawColumn {
    fn resolve(&self) -> Result<ColumnSpec, String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("a column needs a name".into());
        }
        if let Some(who) = crate::store::names::reserved_column(name) {
            return Err(format!(
                "{name:?} is a name {who} keeps for {}; name the column otherwise and read the \
                 file's column with `from = {name:?}`",
                if who == "ferry" {
                    "itself"
                } else {
                    "its own use"
                }
            ));
        }
        let ty = self.ty.map_or(ColType::String, |t| t.0);
        let mut c = ColumnSpec::new(name, ty);
        c.source = self.from.clone().unwrap_or_else(|| name.to_string());
        c.required = self.required;
        c.trim = self.trim.unwrap_or(false);
        if self.trim.is_some() && ty != ColType::String {
            return Err(format!(
                "trim applies to string columns ({} values are always read without surrounding spaces)",
                ty.id()
            ));
        }
        if let Some(case) = self.case {
            if ty != ColType::String {
                return Err("case applies to string columns".into());
            }
            c.case = case.0;
        }
        if let Some(formats) = &self.formats {
            if !matches!(ty, ColType::Date | ColType::DateTime) {
                return Err("formats apply to date and datetime columns".into());
            }
            if formats.is_empty() {
                return Err("formats: name at least one format, or leave it out".into());
            }
            for f in formats {
                typed::check_format(f)?;
            }
            c.formats = formats.clone();
        }
        if let Some(z) = self.timezone {
            if ty != ColType::DateTime {
                return Err("timezone applies to datetime columns".into());
            }
            c.timezone = z.0;
        }
        if let Some(scale) = self.scale {
            if ty != ColType::Decimal {
                return Err("scale applies to decimal columns".into());
            }
            if scale > 30 {
                return Err(format!("scale {scale} is more than 30 digits"));
            }
            c.scale = Some(scale);
        }
        if let Some(sep) = &self.decimal_separator {
            if !matches!(ty, ColType::Float | ColType::Decimal) {
                return Err("decimal_separator applies to float and decimal columns".into());
            }
            c.decimal_separator = match sep.as_str() {
                "." => '.',
                "," => ',',
                _ => return Err(format!("decimal_separator {sep:?} must be \".\" or \",\"")),
            };
        }
        if let Some(sep) = &self.thousands_separator {
            c.thousands_separator = Some(thousands_separator(sep, ty, c.decimal_separator)?);
        }
        if let Some(allowed) = &self.allowed {
            c.allowed = allowed_values(&c, allowed)?;
        }
        Ok(c)
    }
}

/// A column's `thousands_separator`, checked against its type and decimal separator.
fn thousands_separator(sep: &str, ty: ColType, decimal: char) -> Result<char, String> {
    if !matches!(ty, ColType::Int | ColType::Float | ColType::Decimal) {
        return Err("thousands_separator applies to int, float and decimal columns".into());
    }
    let c = match sep {
        "." => '.',
        "," => ',',
        "'" => '\'',
        " " => ' ',
        "\u{a0}" => '\u{a0}',
        "\u{202f}" => '\u{202f}',
        _ => {
            return Err(format!(
                "thousands_separator {sep:?} must be \".\", \",\", \"'\", \" \" or a no-break \
                 space (\"\\u00a0\", \"\\u202f\")"
            ))
        }
    };
    if c == decimal && ty != ColType::Int {
        return Err(format!(
            "thousands_separator {sep:?} is the decimal separator too; set decimal_separator = \
             \"{}\"",
            if c == ',' { "." } else { "," }
        ));
    }
    Ok(c)
}

/// A column's allowed values, canonical: through the same conversion as the data, so `case`
/// and number formats apply to both sides alike.
fn allowed_values(c: &ColumnSpec, allowed: &[toml::Value]) -> Result<Vec<Value<'static>>, String> {
    let mut canon = Vec::new();
    for v in allowed {
        let raw = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(format!("allowed value {other} is not a plain value")),
        };
        let mut probe = c.clone();
        probe.required = false;
        probe.decimal_separator = '.';
        match probe.convert(Some(&raw)) {
            Ok(Value::Null) => return Err("an allowed value cannot be empty".into()),
            Ok(v) => canon.push(v.into_owned()),
            Err(e) => return Err(format!("allowed value: {e}")),
        }
    }
    if canon.is_empty() {
        return Err("allowed: list at least one value, or leave it out".into());
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse_raw("root = \"x\"\n[ready]\nsettle = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
        let e = parse_raw("[[dataset]]\nname = \"a\"\ncolour = \"red\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = parse_raw("[[dataset]]\nname = \"a\"\ndelimiter = \";;\"\n").unwrap_err();
        assert!(e.contains("not a delimiter"), "{e}");
    }

    #[test]
    fn store_writers_are_bounded_and_for_postgres_only() {
        let resolve = |text: &str, store: Option<&str>| {
            let root = Path::new("/nonexistent/ferry-spool");
            Config::from_raw(parse_raw(text).unwrap(), text, None, Some(root), store)
        };
        let url = Some("postgres://ferry@localhost:5432/ferry");
        assert_eq!(resolve("", url).unwrap().store.writers(), 2);
        assert_eq!(
            resolve("[store]\nwriters = 3\n", url)
                .unwrap()
                .store
                .writers(),
            3
        );
        for bad in [0, 17] {
            let e = resolve(&format!("[store]\nwriters = {bad}\n"), url).unwrap_err();
            assert!(e.to_string().contains("store.writers"), "{e}");
        }
        let sqlite = resolve("[store]\nwriters = 3\n", None).unwrap();
        assert_eq!(sqlite.store.writers(), 1);
        assert!(
            sqlite.warnings.iter().any(|w| w.contains("store.writers")),
            "{:?}",
            sqlite.warnings
        );
    }

    /// Resolves the one dataset of a config text.
    fn dataset(text: &str) -> Result<DatasetSpec, String> {
        parse_raw(text)?.datasets[0].get_ref().resolve(text)
    }

    #[test]
    fn fixed_width_layouts_are_checked_before_any_file_is_read() {
        let fixed = |extra: &str, cols: &str| {
            dataset(&format!(
                "[[dataset]]\nname = \"f\"\nformat = \"fixed\"\n{extra}\ncolumns = [{cols}]\n"
            ))
        };
        let ok = fixed(
            "skip_trailer = 1\ntrailer_count = { start = 1, width = 5 }",
            "{ name = \"a\", start = 1, width = 3 }, { name = \"b\", start = 5, width = 2 }",
        )
        .unwrap();
        let layout = ok.options.fixed.unwrap();
        assert_eq!(
            (layout.line_length, layout.trailer_count),
            (6, Some((0, 5)))
        );
        for (extra, cols, why) in [
            (
                "",
                "{ name = \"a\", start = 1, width = 3 }, { name = \"b\", start = 3, width = 2 }",
                "overlap",
            ),
            ("", "{ name = \"a\", start = 1 }", "needs start and width"),
            (
                "",
                "{ name = \"a\", start = 0, width = 1 }",
                "counts from 1",
            ),
            (
                "",
                "{ name = \"a\", start = 1, width = 9999999999 }",
                "ends within",
            ),
            (
                "skip_trailer = 1000000000",
                "{ name = \"a\", start = 1, width = 1 }",
                "at most 1000",
            ),
            (
                "trailer_count = { start = 1, width = 5 }",
                "{ name = \"a\", start = 1, width = 1 }",
                "set skip_trailer",
            ),
            (
                "line_length = 2",
                "{ name = \"a\", start = 1, width = 3 }",
                "ends before",
            ),
            (
                "encoding = \"shift_jis\"\nunit = \"bytes\"",
                "{ name = \"a\", start = 1, width = 1 }",
                "neither",
            ),
            (
                "",
                "{ name = \"a\", from = \"x\", start = 1, width = 1 }",
                "`from`",
            ),
        ] {
            let e = fixed(extra, cols).unwrap_err();
            assert!(e.contains(why), "{extra} {cols}: {e}");
        }
        // Options of one format on a dataset of another are refused, not ignored.
        let e =
            dataset("[[dataset]]\nname = \"c\"\nformat = \"csv\"\nskip_header = 1\n").unwrap_err();
        assert!(
            e.contains("skip_header applies to format = \"fixed\""),
            "{e}"
        );
        let e = dataset("[[dataset]]\nname = \"c\"\nformat = \"json\"\nrecord_path = \"/a/b\"\n")
            .unwrap_err();
        assert!(e.contains("record_path"), "{e}");
        let e = dataset(
            "[[dataset]]\nname = \"c\"\ncolumns = [{ name = \"a\", start = 1, width = 2 }]\n",
        )
        .unwrap_err();
        assert!(e.contains("start/width"), "{e}");
    }
}
