//! `ferry explain PATH`: what ferry would do with a file, without loading it — the dataset it
//! goes to, the rule that holds it back (if any), the table it would land in and the columns
//! it would have, and the verdict: the one `run --dry-run` gives, from the same judge (the file
//! read through every check, its identity and keys compared with the store).

use super::Outcome;
use crate::config::Config;
use crate::discover::{self, Hold, Readiness};
use crate::events::Verdict;
use crate::format::{self, RowOut, Stop};
use crate::pipeline::{Mode, Pipeline, Session, Work};
use crate::report::{self, Report};
use crate::spool::RelPath;
use crate::store::{self, names};
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

#[derive(Serialize)]
struct ColumnOut {
    name: String,
    r#type: String,
}

#[derive(Serialize)]
pub struct Explained {
    path: String,
    /// Where the dataset rules see it (under the incoming folder, or its own folder).
    as_path: String,
    dataset: Option<String>,
    /// Why it would not be taken now (`None`: it would be).
    held: Option<report::Waiting>,
    table: Option<String>,
    table_exists: bool,
    format: Option<String>,
    /// Declared columns with their types, or the columns the file's header or first record
    /// names (stored as text).
    columns: Vec<ColumnOut>,
    /// What a run would do with it (as `run --dry-run` says); `None` when it would not be taken
    /// at all (its name is ignored).
    verdict: Option<Verdict>,
    /// Why the file would be set aside, if it would be.
    problem: Option<String>,
}

pub fn run(cfg: &Config, path: &Path, json: bool) -> Result<Outcome> {
    let (dir, files) = super::run::named(cfg, &[path.to_path_buf()])?;
    let file: PathBuf = files
        .into_iter()
        .next()
        .unwrap_or_else(|| path.to_path_buf());
    let rel = file
        .strip_prefix(&dir)
        .ok()
        .and_then(RelPath::from_relative)
        .ok_or_else(|| {
            crate::exit::ExitError::Usage(format!("{} is not a file", path.display()))
        })?;
    let spec = cfg.dataset_for(&rel);
    let mut out = Explained {
        path: file.display().to_string(),
        as_path: rel.display(),
        dataset: spec.as_ref().map(|d| d.name.clone()),
        held: hold(cfg, &dir, &file, &rel).map(|h| report::Waiting::new(rel.display(), &h)),
        table: None,
        table_exists: false,
        format: None,
        columns: Vec::new(),
        verdict: None,
        problem: None,
    };
    if let Some(d) = &spec {
        let (table, exists) = match store::open_existing(&cfg.store)?.as_deref_mut() {
            Some(s) => s.table_or_planned(&d.name)?,
            None => (names::table_name_for(&d.name, names::reserved_table), false),
        };
        out.table = Some(table);
        out.table_exists = exists;
        if d.typed() {
            out.columns = d
                .columns
                .iter()
                .map(|c| ColumnOut {
                    name: c.name.clone(),
                    r#type: c.ty.id().to_string(),
                })
                .collect();
        }
        look_inside(&mut out, &file, d);
    }
    out.verdict = judge(cfg, &dir, &file)?;
    out.problem = out
        .verdict
        .as_ref()
        .filter(|v| v.outcome == "quarantine")
        .map(|v| {
            format!(
                "{}: {}",
                v.error_kind.unwrap_or(""),
                v.reason.as_deref().unwrap_or("")
            )
        });
    report::print(&out, json)?;
    Ok(Outcome::Done)
}

/// The verdict `run --dry-run` would give the file (taken as if it were ready): one pipeline,
/// one judge.
fn judge(cfg: &Config, dir: &Path, file: &Path) -> Result<Option<Verdict>> {
    let session = Arc::new(Session::new(cfg.clone(), Mode::DryRun, dir.to_path_buf())?);
    let scan = discover::pick(dir, &[file.to_path_buf()], &cfg.rules);
    let pipeline = Pipeline::start(session)?;
    for e in scan.entries {
        pipeline.submit(Work::Fresh(e));
    }
    Ok(pipeline.finish()?.verdicts.into_iter().next())
}

/// The rule that holds the file back now, if any, judged as a scan would judge it: its name,
/// its dataset, its done marker, its quiet period (by its mtime: this is a first look).
fn hold(cfg: &Config, dir: &Path, file: &Path, rel: &RelPath) -> Option<Hold> {
    let scan = discover::pick(dir, &[file.to_path_buf()], &cfg.rules);
    if let Some((_, h)) = scan.ignored.into_iter().next() {
        return Some(h);
    }
    if let Some(h) = cfg.hold(rel) {
        return Some(h);
    }
    let entry = scan.entries.into_iter().next()?;
    Readiness::default()
        .check(&cfg.rules, &entry, Instant::now(), SystemTime::now())
        .err()
}

/// Opens the file as a worker would and reads up to its first record: the format and the
/// columns it names (the verdict is the judge's, `judge`).
fn look_inside(out: &mut Explained, file: &Path, d: &crate::config::DatasetSpec) {
    let Ok(raw) = crate::fsio::open_regular(file) else {
        return;
    };
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let Ok(opened) = format::open(Box::new(raw), &name, &d.options, &d.pointer, !d.typed()) else {
        return;
    };
    out.format = Some(opened.format.id().to_string());
    let mut first = FirstColumns::default();
    let _ = opened.parse(&mut first);
    if !d.typed() {
        out.columns = first
            .names
            .into_iter()
            .map(|name| ColumnOut {
                name,
                r#type: "text".to_string(),
            })
            .collect();
    }
}

/// Keeps the columns named before the first record, then stops the parse.
#[derive(Default)]
struct FirstColumns {
    names: Vec<String>,
}

impl RowOut for FirstColumns {
    fn columns(&mut self, names: &[String]) -> Result<(), Stop> {
        self.names = names.to_vec();
        Ok(())
    }
    fn row(&mut self, _: u64, _: &str, _: &[Option<(usize, usize)>]) -> Result<(), Stop> {
        Err(Stop::Cancelled)
    }
    fn bad_row(&mut self, _: u64, _: &str, _: Option<&str>, _: String) -> Result<(), Stop> {
        Err(Stop::Cancelled)
    }
}

impl Report for Explained {
    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}", self.path);
        let _ = writeln!(o, "  seen as    {}", self.as_path);
        match &self.dataset {
            Some(d) => {
                let _ = writeln!(o, "  dataset    {d}");
            }
            None => {
                let _ = writeln!(o, "  dataset    none (strict_datasets: it would wait)");
            }
        }
        match &self.held {
            Some(w) => {
                let _ = writeln!(o, "  taken now  no: {} ({})", w.reason, w.rule);
            }
            None => {
                let _ = writeln!(o, "  taken now  yes");
            }
        }
        if let Some(t) = &self.table {
            let state = if self.table_exists {
                "exists"
            } else {
                "would be created"
            };
            let _ = writeln!(o, "  table      {t} ({state})");
        }
        if let Some(f) = &self.format {
            let _ = writeln!(o, "  format     {f}");
        }
        for c in &self.columns {
            let _ = writeln!(o, "  column     {}  {}", c.name, c.r#type);
        }
        match &self.verdict {
            Some(v) => {
                let what = match v.outcome {
                    "ingest" => {
                        let mut w = format!("loaded: {} records", v.records);
                        if v.updated_records > 0 {
                            w += &format!(" ({} replacing a stored record)", v.updated_records);
                        }
                        if v.duplicate_records > 0 {
                            w += &format!(", {} with a key already stored", v.duplicate_records);
                        }
                        if v.rejected_records > 0 {
                            w += &format!(", {} set aside", v.rejected_records);
                        }
                        w
                    }
                    "duplicate" => match v.duplicate_of {
                        Some(id) => format!("a duplicate of file {id} (same content)"),
                        None => "a duplicate (same content)".into(),
                    },
                    "quarantine" => format!(
                        "quarantined: {} {}",
                        v.error_kind.unwrap_or(""),
                        v.reason.as_deref().unwrap_or("")
                    ),
                    other => format!("{other}: {}", v.reason.as_deref().unwrap_or("")),
                };
                let _ = writeln!(o, "  verdict    {what}");
            }
            None => {
                let _ = writeln!(o, "  verdict    not taken (see above)");
            }
        }
        o
    }
}
