//! Outgoing batches: a dataset's records, not yet sent to a target, written as files a downstream
//! system can trust — complete under their final name, described by a manifest, marked done.
//!
//! The protocol, per batch:
//!
//! 1. **Plan** (one short write transaction in the store): the next `max_rows` records after the
//!    target's watermark fix the batch — first id, last id, row count, name, format, creation
//!    time, columns — recorded as the target's *pending* batch before a byte is written.
//! 2. **Write** (`batch`, `outbox`): the data file (CSV, NDJSON or Parquet) under a hidden temp
//!    name in the target folder, fsync, rename to its final name, fsync the folder — or, for a
//!    remote target (SFTP, FTP(S), S3), staged in the spool and uploaded: a temp name renamed
//!    over the final one, or a put that appears whole (S3); then `<batch>.manifest.json` and
//!    the empty `<batch>.done` marker, each the same way.
//! 3. **Commit** (one transaction): the batch is recorded, the watermark moves to its last id,
//!    the pending batch is cleared.
//!
//! A crash anywhere leaves either nothing (before 1), or a pending batch: the next export first
//! finishes exactly that batch — recorded as it is if it was published (its done marker there,
//! its data file matching its manifest), else written again under the same name, the same
//! records (its creation time is part of the plan) less any replaced since by a newer record of
//! the same key (`on_key = "update"`, which comes in a later batch) — then carries on. Stray temp
//! files are removed under the target's lock. So a downstream reader that waits for the done
//! marker never sees a partial file under a final name, never sees a record in two batches, and
//! never misses one — provided the store hands out record ids in commit order (see the store's
//! notes on it).
//!
//! This module knows the protocol and the files; the store keeps the state (no SQL here).

mod batch;
mod encode;
pub(crate) mod outbox;
pub mod parquet;

use crate::config::SourceSpec;
use crate::exit::ExitError;
use crate::fsio;
use crate::spool::Spool;
use crate::store::{now, BatchPlan, BatchRange, Store, TargetKey};
use anyhow::{Context, Result};
use outbox::Outbox;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The format of batch files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchFormat {
    Csv,
    Ndjson,
    /// Columnar, in the dataset's declared types (zstd; see --compression)
    Parquet,
}

impl BatchFormat {
    pub fn id(self) -> &'static str {
        match self {
            BatchFormat::Csv => "csv",
            BatchFormat::Ndjson => "ndjson",
            BatchFormat::Parquet => "parquet",
        }
    }

    fn from_id(s: &str) -> Option<BatchFormat> {
        match s {
            "csv" => Some(BatchFormat::Csv),
            "ndjson" => Some(BatchFormat::Ndjson),
            "parquet" => Some(BatchFormat::Parquet),
            _ => None,
        }
    }
}

/// Where a target is.
#[derive(Debug, Clone)]
pub enum To {
    /// A local folder (created if missing), canonical.
    Folder(PathBuf),
    /// A remote place: SFTP, FTP(S) or S3, resolved as a source's URL and settings are.
    Remote(Arc<SourceSpec>),
}

impl To {
    /// The folder's path or the URL (without secrets), as recorded with the target.
    pub fn shown(&self) -> String {
        match self {
            To::Folder(d) => d.display().to_string(),
            To::Remote(spec) => spec.url.clone(),
        }
    }
}

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub to: To,
    /// The target's name: its identity for the watermark.
    pub target: String,
    pub format: BatchFormat,
    pub gzip: bool,
    /// Parquet batches: the page compression.
    pub compression: parquet::Compression,
    /// Parquet batches: the dataset's declared columns by name (the others are text).
    pub declared: HashMap<String, parquet::Declared>,
    pub max_rows: u64,
}

impl Request {
    fn key(&self) -> TargetKey<'_> {
        TargetKey {
            dataset: &self.dataset,
            target: &self.target,
        }
    }
}

/// A batch on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub file: String,
    pub rows: u64,
    pub first_record_id: i64,
    pub last_record_id: i64,
    pub sha256: String,
    pub bytes: u64,
    /// True when this batch was planned by an earlier, interrupted export and written again.
    pub resumed: bool,
}

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub dataset: String,
    pub target: String,
    pub dir: String,
    pub batches: Vec<Batch>,
    pub rows: u64,
    pub watermark: i64,
    pub stray_temp_files_removed: u64,
}

/// A file-name-safe form of a dataset name.
fn file_stem(dataset: &str) -> String {
    dataset
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn batch_name(dataset: &str, first: i64, last: i64, format: BatchFormat, gzip: bool) -> String {
    format!(
        "{}-{first:012}-{last:012}.{}{}",
        file_stem(dataset),
        format.id(),
        if gzip { ".gz" } else { "" }
    )
}

/// The lock file of one target.
fn lock_path(spool: &Spool, dataset: &str, target: &str) -> PathBuf {
    let h = Sha256::digest(format!("{dataset}\0{target}").as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    spool.root.join(".locks").join(format!("export-{hex}.lock"))
}

/// The dataset's table; an unknown dataset is named with the ones there are.
fn table_of(store: &mut dyn Store, dataset: &str) -> Result<String> {
    let tables = store.tables()?;
    if let Some((_, t)) = tables.iter().find(|(d, _)| d == dataset) {
        return Ok(t.clone());
    }
    let known: Vec<&str> = tables.iter().map(|(d, _)| d.as_str()).collect();
    Err(ExitError::NotFound(format!(
        "no dataset named {dataset:?} in this spool (known: {})",
        if known.is_empty() {
            "none yet".to_string()
        } else {
            known.join(", ")
        }
    ))
    .into())
}

/// Another target of the dataset that writes into the request's folder (compared as canonical
/// paths) or remote place (the same URL), if any.
fn other_target_in(store: &mut dyn Store, req: &Request) -> Result<Option<String>> {
    let same_place = |dir: &str| match &req.to {
        To::Folder(here) => {
            let here = here.canonicalize().unwrap_or_else(|_| here.clone());
            let dir = Path::new(dir);
            dir.canonicalize().map_or(dir == here, |d| d == here)
        }
        To::Remote(spec) => dir == spec.url,
    };
    Ok(store
        .target_dirs(&req.dataset)?
        .into_iter()
        .find_map(|(target, dir)| (same_place(&dir) && target != req.target).then_some(target)))
}

/// Opens the target: its folder (made if missing), or a connection to its remote place with a
/// staging folder in the spool.
fn open(spool: &Spool, req: &Request) -> Result<Outbox> {
    open_place(spool, &req.to, &format!("{}\0{}", req.dataset, req.target))
}

/// Opens a place files are published to: a folder (made if missing), or a connection to a
/// remote place with a staging folder in the spool of its own (named after `key`).
pub(crate) fn open_place(spool: &Spool, to: &To, key: &str) -> Result<Outbox> {
    Ok(match to {
        To::Folder(dir) => {
            fs::create_dir_all(dir)
                .with_context(|| format!("creating the target folder {}", dir.display()))?;
            Outbox::Folder(dir.clone())
        }
        To::Remote(spec) => {
            let place = crate::remote::connect(spec)
                .with_context(|| format!("connecting to the target {}", spec.url))?;
            let h = Sha256::digest(key.as_bytes());
            let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
            let staging = spool.root.join(".staging").join(format!("out-{hex}"));
            fs::create_dir_all(&staging)?;
            Outbox::Remote {
                place,
                url: spec.url.clone(),
                staging,
            }
        }
    })
}

/// Exports everything not yet exported to the target; returns what was written.
pub fn export(spool: &Spool, store: &mut dyn Store, req: &Request) -> Result<ExportSummary> {
    let table = table_of(store, &req.dataset).context("looking up the dataset")?;
    let _lock = fsio::try_lock_file(&lock_path(spool, &req.dataset, &req.target))
        .context("taking the export lock")?
        .ok_or_else(|| {
            ExitError::Busy(format!(
                "another export to target {:?} of dataset {:?} is running; try again when it \
                 is done",
                req.target, req.dataset
            ))
        })?;
    // Across hosts (a shared store), the store keeps exports to one target apart too.
    if !store.lock_target(&req.key())? {
        return Err(ExitError::Busy(format!(
            "another export to target {:?} of dataset {:?} is running (on another host); try              again when it is done",
            req.target, req.dataset
        ))
        .into());
    }
    if let Some(other) = other_target_in(store, req)? {
        return Err(ExitError::Usage(format!(
            "{} is already the folder of target {other:?} of dataset {:?}: two targets in one \
             folder would write the same records twice. Use --target {other:?}, or another \
             folder",
            req.to.shown(),
            req.dataset
        ))
        .into());
    }
    // Reaching the target lists it (and removes what an interrupted export left): a refusal
    // (credentials, host key, certificate) stops here, before the target is recorded.
    let reached = open(spool, req).and_then(|mut out| {
        let removed = out
            .remove_stray_temps(&file_stem(&req.dataset))
            .with_context(|| format!("looking at the target {}", req.to.shown()))?;
        Ok((out, removed))
    });
    let (mut out, removed) = match reached {
        Err(e) if e.downcast_ref::<crate::remote::Refused>().is_some() => {
            return Err(ExitError::Usage(format!("{e:#}")).into())
        }
        r => r?,
    };
    store
        .upsert_target(&req.key(), &req.to.shown())
        .context("recording the export target")?;
    let mut summary = ExportSummary {
        dataset: req.dataset.clone(),
        target: req.target.clone(),
        dir: req.to.shown(),
        batches: Vec::new(),
        rows: 0,
        watermark: 0,
        stray_temp_files_removed: removed,
    };
    while let Some(batch) = export_one(store, &table, req, &mut out)? {
        summary.rows += batch.rows;
        summary.batches.push(batch);
        crate::faults::export_pause();
    }
    summary.watermark = store.watermark(&req.key())?;
    Ok(summary)
}

/// Plans, writes and commits the next batch (or rewrites an interrupted one); `None` when
/// everything is exported.
fn export_one(
    store: &mut dyn Store,
    table: &str,
    req: &Request,
    out: &mut Outbox,
) -> Result<Option<Batch>> {
    let mut make = |r: BatchRange| BatchPlan {
        name: batch_name(&req.dataset, r.first, r.last, req.format, req.gzip),
        format: req.format.id().to_string(),
        gzip: req.gzip,
        first: r.first,
        last: r.last,
        rows: r.rows,
        created_at: now(),
        columns: r.columns,
    };
    let Some((plan, resumed)) = store
        .plan_batch(&req.key(), table, req.max_rows, &mut make)
        .context("planning the next batch")?
    else {
        return Ok(None);
    };
    let format = BatchFormat::from_id(&plan.format).with_context(|| {
        format!(
            "the pending batch {} has an unknown format {:?}",
            plan.name, plan.format
        )
    })?;
    crate::faults::export_die("planned");
    let published = if resumed {
        out.published(&plan)
            .with_context(|| format!("looking for batch {} at the target", plan.name))?
    } else {
        None
    };
    let written = match published {
        Some(w) => w,
        None => batch::write_batch(store, table, req, &plan, format, out)?,
    };
    crate::faults::export_die("written");
    let plan = BatchPlan {
        rows: written.rows,
        ..plan
    };
    store
        .commit_batch(&req.key(), &plan, &written.sha256, written.bytes)
        .with_context(|| format!("recording batch {} as exported", plan.name))?;
    tracing::info!(
        dataset = %req.dataset,
        target = %req.target,
        file = %plan.name,
        rows = plan.rows,
        first = plan.first,
        last = plan.last,
        resumed,
        "batch exported"
    );
    Ok(Some(Batch {
        file: plan.name,
        rows: plan.rows,
        first_record_id: plan.first,
        last_record_id: plan.last,
        sha256: written.sha256,
        bytes: written.bytes,
        resumed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names_are_fixed_by_the_id_range() {
        assert_eq!(
            batch_name("vehicles", 1, 100_000, BatchFormat::Csv, false),
            "vehicles-000000000001-000000100000.csv"
        );
        assert_eq!(
            batch_name("a b/c", 5, 9, BatchFormat::Ndjson, true),
            "a_b_c-000000000005-000000000009.ndjson.gz"
        );
    }
}
