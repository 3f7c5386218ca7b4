//! The resolved configuration: everything a command needs, decided once.
//!
//! Sources, strongest first: command-line flags, the TOML file (`--config`, else
//! `<root>/ferry.toml` if present), built-in defaults. Values that can be wrong (durations, globs,
//! delimiters, encodings) are checked while the TOML is read, so an error names the file, line
//! and key. `--help` never gets here: clap answers it before any file is touched.

use crate::discover::{Rules, DEFAULT_IGNORE};
use crate::exit::ExitError;
use crate::format::{json::pointer_segments, text, Format, FormatOptions};
use crate::schema::{self, Case, ColType, ColumnSpec, Value};
use crate::spool::{RelPath, Spool};
use globset::{Glob, GlobMatcher};
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Where the spool is by default.
pub const DEFAULT_ROOT: &str = "./ferry-data";

/// A dataset, as configured (or implied by a folder name, with no config).
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    /// Which files it takes, matched against the path relative to the incoming folder.
    pub pattern: Option<String>,
    matcher: Option<GlobMatcher>,
    pub options: FormatOptions,
    /// JSON pointer split into segments.
    pub pointer: Vec<String>,
    /// Declared columns; empty for an untyped dataset (columns taken from the files).
    pub columns: Vec<ColumnSpec>,
    /// Columns whose values identify a record across files (R-record-key); may be empty.
    pub key: Vec<String>,
    pub max_bad: BadLimit,
    /// A file column the dataset does not have yet.
    pub on_new_column: Policy,
    /// A dataset column the file does not have.
    pub on_missing_column: Policy,
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
            max_bad: BadLimit::Count(0),
            on_new_column: Policy::Add,
            on_missing_column: Policy::Ignore,
        }
    }

    /// Whether the dataset declares its columns.
    pub fn typed(&self) -> bool {
        !self.columns.is_empty()
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
    pub rules: Rules,
    /// Parallel workers (hash, parse, validate). The writer is one more thread.
    pub workers: usize,
    /// Attempts for failures outside a file's content before it is quarantined.
    pub max_attempts: u32,
    pub datasets: Vec<Arc<DatasetSpec>>,
    /// Files up to this size are read into memory in one go (one read for hash and parse).
    pub small_file: u64,
    /// `ferry watch` settings (flags override them).
    pub watch: WatchSettings,
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

/// Bounds of numeric settings: a value outside is a config error, not a crash later.
const MAX_WORKERS: usize = 256;
const MAX_ATTEMPTS: u32 = 100;

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
    /// Resolves the configuration from the command line's `--root` and `--config`.
    pub fn load(root: Option<&Path>, config: Option<&Path>) -> Result<Config, ExitError> {
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
        let root_named = root.is_some() || raw.root.is_some();
        let root = root
            .map(Path::to_path_buf)
            .or(raw.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let root = absolute(&root);
        let incoming = raw.incoming.as_ref().map(|i| absolute(&root.join(i)));
        let spool = Spool::new(&root, incoming.as_deref());

        let ignore: Vec<String> = match &raw.ready.ignore {
            Some(list) => list.iter().map(|p| p.0.clone()).collect(),
            None => DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        };
        let settle = raw.ready.settle.map_or(Duration::from_secs(1), |d| d.0);
        let marker = raw.ready.done_marker.clone().filter(|m| !m.is_empty());
        let rules = Rules::new(&ignore, marker, settle)
            .map_err(|e| ExitError::Usage(format!("{}: ready.ignore: {e}", show(&file))))?;

        let mut datasets = Vec::new();
        let mut names = std::collections::HashSet::new();
        for d in &raw.datasets {
            let line = line_of(&text, d.span().start);
            let d = d.get_ref();
            let at = |e: String| {
                ExitError::Usage(format!(
                    "{}: line {line}: dataset {:?}: {e}",
                    show(&file),
                    d.name.0
                ))
            };
            if !names.insert(d.name.0.to_lowercase()) {
                return Err(at("a dataset with this name is already defined".into()));
            }
            datasets.push(Arc::new(d.resolve(&text).map_err(at)?));
        }

        let bad =
            |key: &str, why: String| ExitError::Usage(format!("{}: {key}: {why}", show(&file)));
        let workers = match raw.workers {
            None | Some(0) => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(w) if w <= MAX_WORKERS => w,
            Some(w) => {
                return Err(bad(
                    "workers",
                    format!("{w} is more than {MAX_WORKERS} (0 means one per CPU)"),
                ))
            }
        };
        let max_attempts = match raw.max_attempts {
            None => 5,
            Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => n,
            Some(n) => {
                return Err(bad(
                    "max_attempts",
                    format!("{n} is not between 1 and {MAX_ATTEMPTS}"),
                ))
            }
        };
        let within = |key: &str, d: Duration, lo: Duration, hi: Duration| {
            if d < lo || d > hi {
                Err(bad(key, format!("{d:?} is not between {lo:?} and {hi:?}")))
            } else {
                Ok(d)
            }
        };
        let day = Duration::from_secs(86_400);
        within("ready.settle", settle, Duration::ZERO, day)?;
        let rescan = raw.watch.rescan.map_or(Duration::from_secs(30), |d| d.0);
        within("watch.rescan", rescan, Duration::from_millis(100), day)?;
        let poll = raw.watch.poll.map(|d| d.0).filter(|d| !d.is_zero());
        if let Some(p) = poll {
            within("watch.poll", p, Duration::from_millis(10), day)?;
        }
        let watch = WatchSettings {
            rescan,
            poll,
            metrics: match raw.watch.metrics.as_deref().filter(|m| !m.is_empty()) {
                None => None,
                Some(m) => Some(m.parse().map_err(|e| {
                    ExitError::Usage(format!(
                        "{}: watch.metrics: {m:?} is not an address like 127.0.0.1:9464 ({e})",
                        show(&file)
                    ))
                })?),
            },
        };
        let warnings = pattern_warnings(&datasets);
        Ok(Config {
            file,
            spool,
            rules,
            workers,
            max_attempts,
            datasets,
            small_file: 4 << 20,
            watch,
            root_named,
            strict_datasets: raw.strict_datasets.unwrap_or(false),
            warnings,
        })
    }

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

    /// What holds a file back for config reasons: no dataset takes it (`strict_datasets`).
    pub fn hold(&self, rel: &RelPath) -> Option<crate::discover::Hold> {
        self.dataset_for(rel)
            .is_none()
            .then_some(crate::discover::Hold::NoDataset)
    }
}

/// Globs that look like regular expressions, and datasets whose files an earlier dataset takes.
fn pattern_warnings(datasets: &[Arc<DatasetSpec>]) -> Vec<String> {
    let mut out = Vec::new();
    for (j, d) in datasets.iter().enumerate() {
        if let Some(p) = &d.pattern {
            if looks_like_regex(p) {
                out.push(format!(
                    "dataset {:?}: match = {p:?} looks like a regular expression, but match is a \
                     glob (`*` any name, `**` any folders, `?` one character, `{{a,b}}` either): \
                     for example \"orders/**/*.csv\"",
                    d.name
                ));
            }
        }
        let samples = sample_paths(d);
        if samples.is_empty() {
            continue;
        }
        for earlier in &datasets[..j] {
            let Some(m) = &earlier.matcher else { continue };
            if samples.iter().all(|s| m.is_match(s)) {
                out.push(format!(
                    "dataset {:?} can never take a file: dataset {:?} comes first and its match \
                     = {:?} takes every path that {} (put the more specific dataset first)",
                    d.name,
                    earlier.name,
                    earlier.pattern.as_deref().unwrap_or(""),
                    match &d.pattern {
                        Some(p) => format!("match = {p:?} takes"),
                        None => format!("the folder {:?} holds", d.name),
                    }
                ));
                break;
            }
        }
    }
    out
}

/// Whether a glob reads like a regular expression (anchors, escapes, `+`, alternation).
fn looks_like_regex(p: &str) -> bool {
    p.starts_with('^')
        || p.ends_with('$')
        || [
            "\\d", "\\w", "\\s", "\\.", ".+", ".*$", "(?", ")*", ")+", "]+", "]*",
        ]
        .iter()
        .any(|s| p.contains(s))
        || (p.contains('(') && p.contains('|'))
}

/// Paths a dataset's files could have: its glob with wildcards filled in, or its folder.
fn sample_paths(d: &DatasetSpec) -> Vec<String> {
    match &d.pattern {
        None => ["csv", "json", "ndjson", "tsv", "csv.gz", "txt"]
            .iter()
            .flat_map(|ext| {
                [
                    format!("{}/f.{ext}", d.name),
                    format!("{}/sub/f.{ext}", d.name),
                ]
            })
            .collect(),
        Some(p) => expand_glob(p, 64),
    }
}

/// Concrete paths a glob matches (a few per wildcard), at most `max`.
fn expand_glob(p: &str, max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        let options: Vec<String> = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    vec![String::new(), "a/".into(), "a/b/".into()]
                } else {
                    vec!["x".into(), "a/x".into()]
                }
            }
            '*' => vec!["x".into(), "data.2".into()],
            '?' => vec!["x".into()],
            '[' => {
                let mut class = String::new();
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() {
                        break;
                    }
                    class.push(c);
                }
                match class.strip_prefix(['!', '^']) {
                    Some(_) => vec!["\u{1}".into()],
                    None => vec![class.chars().next().unwrap_or('x').to_string()],
                }
            }
            '{' => {
                let mut alt = String::new();
                let mut depth = 1;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    alt.push(c);
                }
                alt.split(',').map(String::from).collect()
            }
            '\\' => vec![chars.next().map(String::from).unwrap_or_default()],
            c => vec![c.to_string()],
        };
        out = out
            .iter()
            .flat_map(|prefix| options.iter().map(move |o| format!("{prefix}{o}")))
            .take(max)
            .collect();
    }
    out.retain(|s| !s.is_empty() && Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(s)));
    out
}

fn show(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map_or_else(|| "configuration".to_string(), |p| p.display().to_string())
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
fn parse_raw(text: &str) -> Result<RawConfig, String> {
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
struct RawConfig {
    root: Option<PathBuf>,
    incoming: Option<PathBuf>,
    workers: Option<usize>,
    max_attempts: Option<u32>,
    strict_datasets: Option<bool>,
    #[serde(default)]
    ready: RawReady,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default, rename = "dataset")]
    datasets: Vec<Spanned<RawDataset>>,
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
struct RawWatch {
    rescan: Option<Dur>,
    poll: Option<Dur>,
    metrics: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
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
    /// `strict` (RFC 4180, the default) or `lenient` (stray quotes read as csv-core reads them).
    quotes: Option<QuotesName>,
    /// The longest record accepted: bytes (`16777216`) or a size (`"16MiB"`).
    max_line_bytes: Option<Size>,
    /// Keep NUL characters instead of refusing the file.
    allow_nul: Option<bool>,
    #[serde(default)]
    columns: Vec<Spanned<RawColumn>>,
    key: Option<Vec<String>>,
    max_bad_records: Option<BadLimitRaw>,
    on_new_column: Option<PolicyName>,
    on_missing_column: Option<PolicyName>,
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
}

impl RawDataset {
    fn resolve(&self, text: &str) -> Result<DatasetSpec, String> {
        let options = FormatOptions {
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
        };
        let pointer = self
            .json_pointer
            .as_ref()
            .map(|p| pointer_segments(&p.0).expect("validated when read"))
            .unwrap_or_default();
        if !options.header && options.names.is_empty() && self.columns.is_empty() {
            return Err("header = false needs `names` (or `columns`) to name the columns".into());
        }

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
        // Without a header, the declared columns name the file's columns in order.
        let mut options = options;
        if !options.header && options.names.is_empty() {
            options.names = columns.iter().map(|c| c.source.clone()).collect();
        }

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
            max_bad: self.max_bad_records.map_or(BadLimit::Count(0), |b| b.0),
            on_new_column,
            on_missing_column,
        })
    }
}

impl RawColumn {
    fn resolve(&self) -> Result<ColumnSpec, String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("a column needs a name".into());
        }
        if crate::format::SYSTEM_COLUMNS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
        {
            return Err(format!("{name:?} is a name ferry keeps for itself"));
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
                schema::check_format(f)?;
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
        if let Some(allowed) = &self.allowed {
            let mut canon = Vec::new();
            for v in allowed {
                let raw = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => return Err(format!("allowed value {other} is not a plain value")),
                };
                // Allowed values go through the same conversion as the data, so `case` and
                // number formats apply to both sides alike.
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
            c.allowed = canon;
        }
        Ok(c)
    }
}

/// Parses a value from a string, failing with a message serde attaches to the key's position.
fn from_str_with<'de, D, T>(d: D, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    f(&s).map_err(de::Error::custom)
}

/// A duration like `500ms`, `1s`, `2m`, `1h`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| parse_duration(s).map(Dur))
    }
}

/// Parses `500ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try \"500ms\", \"1s\", \"2m\")"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in duration {s:?} (use ms, s, m, h, d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone)]
struct Pattern(String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            Glob::new(s)
                .map(|_| Pattern(s.to_string()))
                .map_err(|e| format!("{s:?} is not a valid glob: {e}"))
        })
    }
}

#[derive(Debug, Clone)]
struct DatasetName(String);

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.trim().is_empty() || s.contains('/') || s.starts_with('.') {
                Err(format!(
                    "{s:?} is not a dataset name (non-empty, no '/', not starting with '.')"
                ))
            } else {
                Ok(DatasetName(s.to_string()))
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct FormatName(Format);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Ok(FormatName(Format::Csv)),
            "ndjson" | "jsonl" => Ok(FormatName(Format::Ndjson)),
            "json" => Ok(FormatName(Format::Json)),
            _ => Err(format!("unknown format {s:?} (csv, tsv, ndjson, json)")),
        })
    }
}

/// `","`, `";"`, `"\t"` (or `"tab"`), `"|"`, any single ASCII character, or `"auto"`.
#[derive(Debug, Clone, Copy)]
struct Delimiter(Option<u8>);

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s {
            "auto" => Ok(Delimiter(None)),
            "tab" | "\\t" => Ok(Delimiter(Some(b'\t'))),
            _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
                Ok(Delimiter(Some(s.as_bytes()[0])))
            }
            _ => Err(format!(
                "{s:?} is not a delimiter (one ASCII character, \"tab\" or \"auto\")"
            )),
        })
    }
}

/// `quotes = "strict" | "lenient"`; true for strict.
#[derive(Debug, Clone, Copy)]
struct QuotesName(bool);

impl<'de> Deserialize<'de> for QuotesName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(QuotesName(true)),
            "lenient" => Ok(QuotesName(false)),
            _ => Err(format!("unknown quotes {s:?} (strict, lenient)")),
        })
    }
}

/// A size in bytes: a count (`65536`) or with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`, also
/// `KB`/`MB`/`GB` as powers of 1000). Between 1 KiB and 1 GiB.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub usize);

/// Parses a size like `16MiB`; see `Size`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 65536, \"64KiB\", \"16MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit {u:?} in size {s:?} (use KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = n.saturating_mul(mult);
    if !(1024..=1 << 30).contains(&bytes) {
        return Err(format!("size {s:?} must be between 1KiB and 1GiB"));
    }
    Ok(bytes as usize)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Count(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Count(n) => parse_size(&n.to_string()).map(Size),
            Either::Text(s) => parse_size(&s).map(Size),
        }
        .map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy)]
struct QuoteChar(u8);

impl<'de> Deserialize<'de> for QuoteChar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" {
                Ok(QuoteChar(s.as_bytes()[0]))
            } else {
                Err(format!(
                    "{s:?} is not a quote character (one ASCII character)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Pointer(String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| pointer_segments(s).map(|_| Pointer(s.to_string())))
    }
}

#[derive(Clone, Copy)]
struct EncodingName(text::Encoding);

impl fmt::Debug for EncodingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for EncodingName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            text::encoding_for_label(s)
                .map(EncodingName)
                .ok_or_else(|| {
                    format!("unknown encoding {s:?} (e.g. utf-8, latin1, windows-1252, utf-16le)")
                })
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct TypeName(ColType);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            ColType::from_id(&s.to_ascii_lowercase())
                .map(TypeName)
                .ok_or_else(|| {
                    format!(
                        "unknown type {s:?} ({})",
                        ColType::ALL.map(|t| t.id()).join(", ")
                    )
                })
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct CaseName(Case);

impl<'de> Deserialize<'de> for CaseName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "lower" => Ok(CaseName(Case::Lower)),
            "upper" => Ok(CaseName(Case::Upper)),
            "keep" => Ok(CaseName(Case::Keep)),
            _ => Err(format!("unknown case {s:?} (lower, upper, keep)")),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct PolicyName(Policy);

impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(PolicyName(Policy::Fail)),
            "add" => Ok(PolicyName(Policy::Add)),
            "ignore" => Ok(PolicyName(Policy::Ignore)),
            _ => Err(format!("unknown policy {s:?} (fail, add, ignore)")),
        })
    }
}

/// A zone for datetimes written without one: `UTC`, `Z`, or a fixed offset like `+02:00`.
#[derive(Debug, Clone, Copy)]
struct Zone(chrono::FixedOffset);

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            let bad = || format!("{s:?} is not a timezone (UTC, or an offset like \"+02:00\")");
            if s.eq_ignore_ascii_case("utc") || s == "Z" {
                return Ok(Zone(chrono::FixedOffset::east_opt(0).expect("zero")));
            }
            let (sign, rest) = match s.as_bytes().first() {
                Some(b'+') => (1, &s[1..]),
                Some(b'-') => (-1, &s[1..]),
                _ => return Err(bad()),
            };
            let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
            let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .map(Zone)
                .ok_or_else(bad)
        })
    }
}

/// `max_bad_records`: a count (`10`) or a share of the file (`"5%"`).
#[derive(Debug, Clone, Copy)]
struct BadLimitRaw(BadLimit);

impl<'de> Deserialize<'de> for BadLimitRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Count(i64),
            Text(String),
        }
        let msg = |s: &str| {
            format!("max_bad_records {s} is not a count (e.g. 10) or a percentage (e.g. \"5%\")")
        };
        match Either::deserialize(d)? {
            Either::Count(n) if n >= 0 => Ok(BadLimitRaw(BadLimit::Count(n as u64))),
            Either::Count(n) => Err(de::Error::custom(msg(&n.to_string()))),
            Either::Text(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(p) if (0.0..=100.0).contains(&p) => {
                            Ok(BadLimitRaw(BadLimit::Percent(p)))
                        }
                        _ => Err(de::Error::custom(msg(&format!("{s:?}")))),
                    }
                } else {
                    t.parse::<u64>()
                        .map(|n| BadLimitRaw(BadLimit::Count(n)))
                        .map_err(|_| de::Error::custom(msg(&format!("{s:?}"))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

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
    fn datasets_match_by_glob_then_folder() {
        let raw = parse_raw(
            "[[dataset]]\nname = \"vehicles\"\nmatch = \"fleet/**/*.csv\"\ndelimiter = \";\"\n",
        )
        .unwrap();
        let cfg = Config {
            datasets: raw
                .datasets
                .iter()
                .map(|d| Arc::new(d.get_ref().resolve("").unwrap()))
                .collect(),
            ..Config::load(Some(Path::new("/nonexistent-root")), None).unwrap()
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

    #[test]
    fn regex_looking_and_shadowed_patterns_are_warned_about() {
        let raw = parse_raw(
            "[[dataset]]\nname = \"all\"\nmatch = \"**/*.csv\"\n\n\
             [[dataset]]\nname = \"orders\"\nmatch = \"orders/*.csv\"\n\n\
             [[dataset]]\nname = \"re\"\nmatch = \"^orders_.*\\\\.json$\"\n\n\
             [[dataset]]\nname = \"json\"\nmatch = \"**/*.{json,ndjson}\"\n\n\
             [[dataset]]\nname = \"vehicles\"\n",
        )
        .unwrap();
        let datasets: Vec<Arc<DatasetSpec>> = raw
            .datasets
            .iter()
            .map(|d| Arc::new(d.get_ref().resolve("").unwrap()))
            .collect();
        let w = pattern_warnings(&datasets);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("\"orders\" can never take a file"),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains("\"re\"") && w[1].contains("regular expression"),
            "{}",
            w[1]
        );
        // A folder-named dataset is shadowed only if every kind of file in it is taken.
        assert!(!w.iter().any(|x| x.contains("\"vehicles\"")));
        for glob in ["*.csv", "orders.*", "data/{a,b}/*.json", "x[0-9]?.tsv"] {
            assert!(!looks_like_regex(glob), "{glob}");
        }
        for re in ["^a.csv", r"a\.csv", "a.csv$", "(a|b).csv", "a.+"] {
            assert!(looks_like_regex(re), "{re}");
        }
    }
}
