//! `ferry config check`: the configuration as ferry resolved it, defaults filled in, each
//! dataset with the table it has (or will get), and warnings about what looks unintended.

use super::Report;
use crate::config::{After, Config, DatasetSpec, Scheme, SourceSpec};
use crate::remote::pull::Survey;
use crate::store::Location;
use crate::typed::{Case, ColumnSpec};
use serde::Serialize;
use std::fmt::Write;

impl ConfigView {
    /// The view of a config; `tables`: per configured dataset, its table and whether it exists.
    /// `store_ready`: whether the store was reached and is set up.
    pub fn of(
        cfg: &Config,
        tables: Vec<TableView>,
        (sources, targets): (Vec<SourceView>, Vec<TargetView>),
        store_ready: bool,
    ) -> ConfigView {
        let lease = match &cfg.store {
            Location::Postgres(t) => Some(t.lease.as_millis() as u64),
            Location::Sqlite(_) => None,
        };
        let store_writers = cfg.store.writers();
        ConfigView {
            file: cfg.file.as_ref().map(|f| f.display().to_string()),
            root: cfg.spool.root.display().to_string(),
            store: cfg.store.describe(),
            store_ready,
            store_lease_ms: lease,
            store_writers,
            incoming: cfg.spool.incoming.display().to_string(),
            workers: cfg.workers,
            max_attempts: cfg.max_attempts,
            settle_ms: cfg.rules.settle.as_millis() as u64,
            done_marker: cfg.rules.done_marker.clone(),
            watch_rescan_ms: cfg.watch.rescan.as_millis() as u64,
            watch_poll_ms: cfg.watch.poll.map(|d| d.as_millis() as u64),
            watch_metrics: cfg.watch.metrics.map(|a| a.to_string()),
            strict_datasets: cfg.strict_datasets,
            warnings: cfg.warnings.clone(),
            datasets: cfg
                .datasets
                .iter()
                .zip(tables)
                .map(|(d, t)| DatasetView::of(d, t))
                .collect(),
            sources,
            targets,
        }
    }
}

/// An export target (`[[target]]`) as `config check` shows it: reached, or why not.
#[derive(Serialize)]
pub struct TargetView {
    pub name: String,
    pub url: String,
    pub reached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A remote source as `config check` shows it: its settings (never a secret: only where each
/// comes from) and what one listing found.
#[derive(Serialize)]
pub struct SourceView {
    name: String,
    url: String,
    into: String,
    #[serde(rename = "match")]
    matches: Option<String>,
    after: String,
    poll_ms: u64,
    connections: usize,
    /// How it logs in: `identity_file …`, `password from $VAR`.
    login: Vec<String>,
    /// How the server is checked: the SSH host key, or TLS and what it trusts.
    host_key_check: String,
    /// Reached and listed.
    reached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    listed: usize,
    ready: Vec<String>,
    loaded: usize,
    problems: Vec<(String, String)>,
    /// Files that wait (a temp or hidden name, no done marker yet): path and rule.
    waiting: Vec<(String, String)>,
}

impl SourceView {
    pub fn of(s: &SourceSpec, survey: anyhow::Result<Survey>) -> SourceView {
        let mut login = Vec::new();
        if let Some(k) = &s.identity_file {
            let mut l = format!("identity_file {}", k.display());
            if let Some(v) = &s.identity_passphrase_env {
                l.push_str(&format!(" (passphrase from ${v})"));
            }
            login.push(l);
        }
        if let Some(v) = &s.password_env {
            login.push(format!("password from ${v}"));
        }
        if let Some(s3) = &s.s3 {
            login.push(format!(
                "access key from ${}, secret from ${} (session token from ${} when set)",
                s3.access_key_env, s3.secret_key_env, s3.session_token_env
            ));
        }
        let tls = |plain: bool| match (&s.ca_file, plain) {
            (_, true) => "none: plain text (no TLS)".to_string(),
            (Some(ca), false) => format!("TLS, certificates of ca_file {}", ca.display()),
            (None, false) => "TLS, public root certificates".to_string(),
        };
        let host_key_check = match (s.scheme, &s.host_key, &s.known_hosts) {
            (Scheme::Sftp, Some(k), _) => format!("host_key {k}"),
            (Scheme::Sftp, None, Some(f)) => format!("known_hosts {}", f.display()),
            (Scheme::Sftp, None, None) => "none (refused)".into(),
            (Scheme::Ftp, ..) => tls(true),
            (Scheme::Ftps, ..) => tls(false),
            (Scheme::S3, ..) => {
                let s3 = s.s3.as_ref().map(|v| v.endpoint.as_str()).unwrap_or("");
                format!("{} ({s3})", tls(s3.starts_with("http://")))
            }
        };
        if s.scheme == Scheme::Ftp && s.password_env.is_none() {
            login.push("anonymous".into());
        }
        let (reached, error, survey) = match survey {
            Ok(v) => (true, None, Some(v)),
            Err(e) => (false, Some(format!("{e:#}")), None),
        };
        SourceView {
            name: s.name.clone(),
            url: s.url.clone(),
            into: s.into.clone(),
            matches: s.pattern.clone(),
            after: match &s.after {
                After::Keep => "keep".into(),
                After::Delete => "delete".into(),
                After::Move(to) => format!("move:{to}"),
            },
            poll_ms: s.poll.as_millis() as u64,
            connections: s.connections,
            login,
            host_key_check,
            reached,
            error,
            listed: survey.as_ref().map_or(0, |v| v.listed),
            loaded: survey.as_ref().map_or(0, |v| v.loaded),
            ready: survey.as_ref().map_or_else(Vec::new, |v| v.ready.clone()),
            waiting: survey.as_ref().map_or_else(Vec::new, |v| {
                v.held
                    .iter()
                    .map(|(p, h)| (p.clone(), h.to_string()))
                    .collect()
            }),
            problems: survey.map_or_else(Vec::new, |v| v.problems),
        }
    }
}

/// One source as `config check` shows it.
fn source(o: &mut String, s: &SourceView) {
    let _ = writeln!(o);
    let _ = writeln!(o, "source {}  ({})", s.name, s.url);
    let _ = writeln!(o, "  into               incoming/{}", s.into);
    let _ = writeln!(
        o,
        "  match              {}",
        s.matches.as_deref().unwrap_or("(every file)")
    );
    let _ = writeln!(o, "  after              {}", s.after);
    let _ = writeln!(
        o,
        "  poll               every {}, {} connection(s)",
        super::duration_ms(s.poll_ms),
        s.connections
    );
    let _ = writeln!(o, "  login              {}", s.login.join("; "));
    let _ = writeln!(o, "  server check       {}", s.host_key_check);
    match &s.error {
        Some(e) => {
            let _ = writeln!(o, "  REFUSED            {e}");
        }
        None => {
            let _ = writeln!(
                o,
                "  listed             {} file(s): {} ready, {} loaded before",
                s.listed,
                s.ready.len(),
                s.loaded
            );
            for r in s.ready.iter().take(20) {
                let _ = writeln!(o, "    ready            {r}");
            }
            for (p, why) in s.waiting.iter().take(20) {
                let _ = writeln!(o, "    waiting          {p}: {why}");
            }
            for (p, why) in s.problems.iter().take(20) {
                let _ = writeln!(o, "    not fetched      {p}: {why}");
            }
        }
    }
}

impl Report for ConfigView {
    fn table(&self) -> String {
        let mut o = String::new();
        match &self.file {
            Some(f) => {
                let _ = writeln!(o, "{f}: valid");
            }
            None => {
                let _ = writeln!(o, "no config file: built-in defaults");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(o, "  warning: {w}");
        }
        if self.strict_datasets {
            let _ = writeln!(
                o,
                "  strict_datasets  files no dataset takes wait in incoming/"
            );
        }
        let _ = writeln!(o, "  root          {}", self.root);
        let _ = writeln!(o, "  incoming      {}", self.incoming);
        let state = if self.store_ready {
            "reached, set up"
        } else {
            "not set up yet: the first run or watch sets it up"
        };
        let _ = writeln!(o, "  store         {} ({state})", self.store);
        if let Some(l) = self.store_lease_ms {
            let _ = writeln!(
                o,
                "  owner lease   {} (a dead host's claims are recovered after it)",
                super::duration_ms(l)
            );
        }
        let _ = writeln!(o, "  workers       {}", self.workers);
        let _ = writeln!(o, "  writers       {}", self.store_writers);
        let _ = writeln!(o, "  max_attempts  {}", self.max_attempts);
        let _ = writeln!(o, "  settle        {}", super::duration_ms(self.settle_ms));
        if let Some(m) = &self.done_marker {
            let _ = writeln!(o, "  done_marker   {m}");
        }
        match self.watch_poll_ms {
            Some(p) => {
                let _ = writeln!(o, "  watch         poll every {}", super::duration_ms(p));
            }
            None => {
                let _ = writeln!(
                    o,
                    "  watch         file events, full rescan every {}",
                    super::duration_ms(self.watch_rescan_ms)
                );
            }
        }
        if let Some(m) = &self.watch_metrics {
            let _ = writeln!(o, "  metrics       http://{m}/metrics");
        }
        if self.datasets.is_empty() {
            let _ = writeln!(
                o,
                "  datasets      none configured: one per top-level folder, columns from the \
                 files"
            );
        }
        for d in &self.datasets {
            dataset(&mut o, d);
        }
        for s in &self.sources {
            source(&mut o, s);
        }
        for t in &self.targets {
            let _ = writeln!(o);
            let _ = writeln!(o, "target {}  ({})", t.name, t.url);
            match &t.error {
                None => {
                    let _ = writeln!(o, "  reached");
                }
                Some(e) => {
                    let _ = writeln!(o, "  not reached: {e}");
                }
            }
        }
        o
    }
}

/// One dataset as `config check` shows it.
fn dataset(o: &mut String, d: &DatasetView) {
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "dataset {}  (table {}, {})",
        d.name, d.table, d.table_state
    );
    if let Some(n) = &d.table_note {
        let _ = writeln!(o, "  table              {n}");
    }
    let _ = writeln!(
        o,
        "  match              {}",
        d.matches.as_deref().unwrap_or("(its folder name)")
    );
    let _ = writeln!(o, "  format             {}", d.format);
    if let Some(e) = &d.encoding {
        let _ = writeln!(o, "  encoding           {e}");
    }
    let _ = writeln!(
        o,
        "  key                {}",
        if d.key.is_empty() {
            "-".into()
        } else {
            d.key.join(", ")
        }
    );
    if !d.key.is_empty() {
        let _ = writeln!(
            o,
            "  on_key             {}{}",
            d.on_key,
            match &d.version {
                Some(v) => format!(" (the greater {v} wins)"),
                None if d.on_key == "update" => " (the file stored last wins)".into(),
                None => String::new(),
            }
        );
    }
    let _ = writeln!(o, "  max_bad_records    {}", d.max_bad_records);
    let _ = writeln!(o, "  on_new_column      {}", d.on_new_column);
    let _ = writeln!(o, "  on_missing_column  {}", d.on_missing_column);
    if d.columns.is_empty() {
        let _ = writeln!(o, "  columns            from the files (untyped)");
    }
    for c in &d.columns {
        column(o, c);
    }
}

/// One declared column: name, type, SQL type and what is set beyond the defaults.
fn column(o: &mut String, c: &ColumnView) {
    let mut extra = Vec::new();
    if c.required {
        extra.push("required".to_string());
    }
    if c.from != c.name {
        extra.push(format!("from {:?}", c.from));
    }
    if !c.allowed.is_empty() {
        extra.push(format!("allowed {}", c.allowed.join("|")));
    }
    if c.trim {
        extra.push("trim".into());
    }
    if let Some(case) = &c.case {
        extra.push(format!("case {case}"));
    }
    if !c.formats.is_empty() {
        extra.push(format!("formats {}", c.formats.join(" | ")));
    }
    if let Some(tz) = &c.timezone {
        extra.push(format!("timezone {tz}"));
    }
    if let Some(s) = c.scale {
        extra.push(format!("scale {s}"));
    }
    if let Some(s) = &c.decimal_separator {
        extra.push(format!("decimal_separator {s:?}"));
    }
    if let Some(s) = &c.thousands_separator {
        extra.push(format!("thousands_separator {s:?}"));
    }
    let _ = writeln!(
        o,
        "  column {:<18} {:<9} {:<8} {}",
        c.name,
        c.r#type,
        c.sql_type,
        extra.join(", ")
    );
}

#[derive(Serialize)]
pub struct ConfigView {
    file: Option<String>,
    root: String,
    /// The store's location (a PostgreSQL URL never shows a password).
    store: String,
    /// Reached and set up; `false`: the first `run`/`watch` sets it up.
    store_ready: bool,
    /// How long a PostgreSQL owner lease lasts without a heartbeat.
    store_lease_ms: Option<u64>,
    /// Writer threads, each with its own connection (always 1 for SQLite).
    store_writers: usize,
    incoming: String,
    workers: usize,
    max_attempts: u32,
    settle_ms: u64,
    done_marker: Option<String>,
    watch_rescan_ms: u64,
    watch_poll_ms: Option<u64>,
    watch_metrics: Option<String>,
    strict_datasets: bool,
    /// Valid, but probably not what was meant.
    warnings: Vec<String>,
    datasets: Vec<DatasetView>,
    sources: Vec<SourceView>,
    targets: Vec<TargetView>,
}

/// The table a dataset has or will get, and how.
#[derive(Serialize, Clone)]
pub struct TableView {
    pub table: String,
    /// `exists`, `created with its first file`, `adopted …`, or `refused`.
    pub state: &'static str,
    /// Why it is not named after the dataset, when ferry chose another name.
    pub note: Option<String>,
    /// Why the table the dataset names cannot take it.
    pub refused: Option<String>,
}

impl TableView {
    /// A table the dataset has (`exists`) or that ferry would create for it; a name other than
    /// the dataset's is explained.
    pub fn planned(table: String, exists: bool, dataset: &str) -> TableView {
        let note = (table != dataset).then(|| {
            format!(
                "not named {dataset:?}: that name was taken or reserved when the dataset's \
                 first file came (set `table` on the dataset to choose)"
            )
        });
        TableView {
            table,
            state: if exists {
                "exists"
            } else {
                "created with its first file"
            },
            note,
            refused: None,
        }
    }
}

#[derive(Serialize)]
pub struct DatasetView {
    name: String,
    /// The table the dataset's records are in, or will be in (from the ledger's registry).
    table: String,
    table_exists: bool,
    table_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    table_note: Option<String>,
    #[serde(rename = "match")]
    matches: Option<String>,
    format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
    key: Vec<String>,
    on_key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    max_bad_records: String,
    on_new_column: &'static str,
    on_missing_column: &'static str,
    columns: Vec<ColumnView>,
}

impl DatasetView {
    pub fn of(d: &DatasetSpec, t: TableView) -> DatasetView {
        let table_exists = t.state == "exists";
        let table = t.table.clone();
        let o = &d.options;
        let mut format = o
            .format
            .map_or("by extension, else sniffed".to_string(), |f| {
                f.id().to_string()
            });
        if o.format.is_none_or(|f| f == crate::format::Format::Csv) {
            let delim = match o.delimiter {
                None => "sniffed".to_string(),
                Some(b'\t') => "tab".to_string(),
                Some(c) => format!("{:?}", c as char),
            };
            format.push_str(&format!(
                "; csv delimiter {delim}, header {}",
                if o.header { "yes" } else { "no" }
            ));
            if !o.names.is_empty() {
                format.push_str(&format!(", names {}", o.names.join(",")));
            }
        }
        if let Some(p) = &o.json_pointer {
            format.push_str(&format!("; json_pointer {p}"));
        }
        if let Some(p) = &o.xml.record_path {
            format.push_str(&format!("; record_path /{}", p.join("/")));
        }
        if let Some(sheet) = &o.excel.sheet {
            format.push_str(&format!("; sheet {sheet:?}"));
        }
        if o.excel.header_row != 1 {
            format.push_str(&format!("; header_row {}", o.excel.header_row));
        }
        if let Some(l) = &o.fixed {
            format.push_str(&format!(
                "; {} {} per line{}{}",
                l.line_length,
                if l.bytes { "bytes" } else { "characters" },
                if l.skip_header + l.skip_trailer > 0 {
                    format!(
                        ", {} header and {} trailer line(s) skipped",
                        l.skip_header, l.skip_trailer
                    )
                } else {
                    String::new()
                },
                match (&l.trailer_prefix, l.trailer_count.is_some()) {
                    (Some(p), true) => format!(", trailer lines start {p:?}, its count checked"),
                    (Some(p), false) => format!(", trailer lines start {p:?}"),
                    (None, true) => ", trailer count checked".to_string(),
                    (None, false) => String::new(),
                }
            ));
        }
        DatasetView {
            name: d.name.clone(),
            table,
            table_exists,
            table_state: t.state,
            table_note: t.refused.clone().or(t.note.clone()),
            matches: d.pattern.clone(),
            format,
            // Workbooks are zip or OLE containers: no text encoding applies.
            encoding: (o.format != Some(crate::format::Format::Excel)).then(|| {
                o.encoding
                    .map_or("utf-8".to_string(), |e| e.name().to_lowercase())
            }),
            key: d.key.clone(),
            on_key: d.on_key.id(),
            version: d.version.clone(),
            max_bad_records: d.max_bad.to_string(),
            on_new_column: d.on_new_column.id(),
            on_missing_column: d.on_missing_column.id(),
            columns: d.columns.iter().map(ColumnView::of).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct ColumnView {
    name: String,
    from: String,
    r#type: &'static str,
    sql_type: &'static str,
    required: bool,
    allowed: Vec<String>,
    trim: bool,
    case: Option<&'static str>,
    formats: Vec<String>,
    timezone: Option<String>,
    scale: Option<u32>,
    decimal_separator: Option<String>,
    thousands_separator: Option<String>,
}

impl ColumnView {
    pub fn of(c: &ColumnSpec) -> ColumnView {
        use crate::typed::ColType;
        let dated = matches!(c.ty, ColType::Date | ColType::DateTime);
        let formats = if !dated {
            Vec::new()
        } else if c.formats.is_empty() {
            let d = if c.ty == ColType::Date {
                crate::typed::DEFAULT_DATE_FORMATS
            } else {
                crate::typed::DEFAULT_DATETIME_FORMATS
            };
            d.iter().map(|s| s.to_string()).collect()
        } else {
            c.formats.clone()
        };
        ColumnView {
            name: c.name.clone(),
            from: c.source.clone(),
            r#type: c.ty.id(),
            sql_type: c.ty.sql_type(),
            required: c.required,
            allowed: c.allowed.iter().map(|v| v.to_string()).collect(),
            trim: c.trim,
            case: match c.case {
                Case::Keep => None,
                Case::Lower => Some("lower"),
                Case::Upper => Some("upper"),
            },
            formats,
            timezone: (c.ty == ColType::DateTime).then(|| c.timezone.to_string()),
            scale: c.scale,
            decimal_separator: matches!(c.ty, ColType::Float | ColType::Decimal)
                .then(|| c.decimal_separator.to_string()),
            thousands_separator: c.thousands_separator.map(String::from),
        }
    }
}
