//! `ferry export DATASET [--to DIR] [--format csv|ndjson|parquet] [--gzip] [--compression CODEC]
//! [--max-rows N] [--target NAME]`
//! and `ferry export --list`. The protocol lives in `crate::export`; this is the command's shape.

use super::Outcome;
use crate::cli::ExportArgs;
use crate::config::{self, Config};
use crate::exit::ExitError;
use crate::export::parquet::Declared;
use crate::export::{self, BatchFormat, Request, To};
use crate::fsio;
use crate::report::{self, ExportAllReport, ExportReport, TargetsReport};
use crate::store;
use crate::store::TargetStatus;
use anyhow::Result;
use std::collections::HashMap;
use std::sync::Arc;

pub fn run(cfg: &Config, args: &ExportArgs) -> Result<Outcome> {
    if args.list {
        let targets = match store::open_existing(&cfg.store)? {
            Some(mut s) => pending(cfg, &mut *s)?,
            None => Vec::new(),
        };
        report::print(&TargetsReport(targets), args.json)?;
        return Ok(Outcome::Done);
    }
    if args.all {
        return all(cfg, args);
    }
    let dataset = args
        .dataset
        .clone()
        .expect("clap requires a dataset unless --list or --all");
    let req = request(cfg, args, dataset, args.to.as_deref(), args.target.clone())?;
    let mut store = store::open(&cfg.store)?;
    let summary = export::export(&cfg.spool, &mut *store, &req)?;
    report::print(&ExportReport(summary), args.json)?;
    Ok(Outcome::Done)
}

/// An export of `dataset` to `to` (default: `<root>/outgoing/<dataset>`) as target `target`
/// (default: the folder).
fn request(
    cfg: &Config,
    args: &ExportArgs,
    dataset: String,
    to: Option<&std::path::Path>,
    target: Option<String>,
) -> Result<Request> {
    let (to, target) = destination(cfg, dataset.as_str(), to, target)?;
    let parquet = args.format == BatchFormat::Parquet;
    if parquet && args.gzip {
        return Err(ExitError::Usage(
            "--gzip is for csv and ndjson batches; Parquet compresses its pages itself \
             (--compression zstd|snappy|none)"
                .into(),
        )
        .into());
    }
    if !parquet && args.compression.is_some() {
        return Err(ExitError::Usage(
            "--compression is for Parquet batches; csv and ndjson take --gzip".into(),
        )
        .into());
    }
    Ok(Request {
        declared: declared(cfg, &dataset),
        dataset,
        to,
        target,
        format: args.format,
        gzip: args.gzip,
        compression: args.compression.unwrap_or_default(),
        max_rows: args.max_rows,
    })
}

/// Where the export goes, and the target's name (its watermark's identity):
/// - `--target NAME` of a `[[target]]`: its remote place (`--to`, if given, must be its URL);
/// - `--to URL` (sftp://, ftp://, ftps://, s3://): the `[[target]]` with that URL, if one has
///   it (and its name), else the URL with a source's defaults, named after itself;
/// - `--to DIR` or nothing (`<root>/outgoing/<DATASET>`): a local folder, named after its
///   canonical path unless `--target` names it. A folder has one identity however it is written
///   (`./a/../b`, a symlink, the absolute path), so the same records are never exported twice
///   into one folder under two names.
fn destination(
    cfg: &Config,
    dataset: &str,
    to: Option<&std::path::Path>,
    target: Option<String>,
) -> Result<(To, String)> {
    let named = target
        .as_deref()
        .and_then(|t| cfg.targets.iter().find(|s| s.name.eq_ignore_ascii_case(t)));
    let url = to.and_then(|t| t.to_str()).map(str::to_string);
    let remote = url.as_deref().and_then(config::remote_url);
    // The URL as a resolved target shows it: a [[target]] with that URL gives its settings (a
    // login the URL alone cannot) and its name.
    let shown = url.as_deref().and_then(config::shown_url);
    if let Some(spec) = named {
        if remote.is_some() && shown.as_ref() != Some(&spec.url) {
            return Err(ExitError::Usage(format!(
                "target {:?} is {}, not {}; give --target or --to, not both",
                spec.name,
                spec.url,
                shown.unwrap_or_default()
            ))
            .into());
        }
        if remote.is_none() && to.is_some() {
            return Err(ExitError::Usage(format!(
                "target {:?} is {} (ferry.toml); give --target or --to, not both",
                spec.name, spec.url
            ))
            .into());
        }
        return Ok((To::Remote(spec.clone()), spec.name.clone()));
    }
    if let Some(r) = remote {
        if let Some(spec) = cfg.targets.iter().find(|s| Some(&s.url) == shown.as_ref()) {
            return Ok((
                To::Remote(spec.clone()),
                target.unwrap_or(spec.name.clone()),
            ));
        }
        let given = r.map_err(ExitError::Usage)?;
        let name = target.unwrap_or_else(|| given.url.clone());
        return Ok((To::Remote(Arc::new(given)), name));
    }
    let dir = match to {
        Some(d) => std::path::absolute(d)?,
        None => cfg.spool.outgoing.join(dataset),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| fsio::with_path(e, "cannot create the target folder", &dir))?;
    let dir = dir.canonicalize()?;
    let target = target.unwrap_or_else(|| dir.display().to_string());
    Ok((To::Folder(dir), target))
}

/// The dataset's declared columns by name: declared columns are stored under their own names.
/// An undeclared dataset (or one not in the config) has none: its columns are text.
fn declared(cfg: &Config, dataset: &str) -> HashMap<String, Declared> {
    cfg.datasets
        .iter()
        .filter(|d| d.name == dataset)
        .flat_map(|d| d.columns.iter())
        .map(|c| {
            (
                c.name.clone(),
                Declared {
                    ty: c.ty,
                    scale: c.scale,
                },
            )
        })
        .collect()
}

/// Every target with what it has pending, and every dataset with records that was never
/// exported (as its default target would be: `<root>/outgoing/<dataset>`, watermark 0).
fn pending(cfg: &Config, s: &mut dyn store::Store) -> Result<Vec<TargetStatus>> {
    let mut targets = s.targets()?;
    for d in s.dataset_counts()? {
        if d.records > 0 && !targets.iter().any(|t| t.dataset == d.name) {
            let dir = cfg.spool.outgoing.join(&d.name).display().to_string();
            targets.push(TargetStatus {
                dataset: d.name.clone(),
                target: format!("(none yet: {dir})"),
                dir,
                watermark: 0,
                pending_records: d.records,
                batches: 0,
                exported_records: 0,
                last_export: None,
                interrupted_batch: None,
            });
        }
    }
    targets.sort_by(|a, b| (&a.dataset, &a.target).cmp(&(&b.dataset, &b.target)));
    Ok(targets)
}

/// `--all`: every dataset with pending records, to each of its targets (or its default one).
fn all(cfg: &Config, args: &ExportArgs) -> Result<Outcome> {
    let mut store = store::open(&cfg.store)?;
    let mut batches = Vec::new();
    for t in pending(cfg, &mut *store)? {
        if t.pending_records == 0 && t.interrupted_batch.is_none() {
            continue;
        }
        let never = t.batches == 0 && t.target.starts_with("(none yet");
        let req = if never {
            request(cfg, args, t.dataset.clone(), None, None)?
        } else {
            request(
                cfg,
                args,
                t.dataset.clone(),
                Some(std::path::Path::new(&t.dir)),
                Some(t.target.clone()),
            )?
        };
        batches.push(export::export(&cfg.spool, &mut *store, &req)?);
    }
    report::print(&ExportAllReport(batches), args.json)?;
    Ok(Outcome::Done)
}
