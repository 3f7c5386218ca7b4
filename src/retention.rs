//! Retention (`[retention]`, `ferry prune`): removing what ferry has finished with, and nothing
//! else.
//!
//! A file is removed only when its ledger row says it was committed and placed (`stored_at`),
//! it is older than its area's days, and the bytes at that place still have the hash recorded
//! for it. Anything else — a file missing, changed, unreadable, or a place outside its area —
//! is left where it is and reported. The ledger row stays, marked `pruned_at`, until
//! `ledger_days` passes too; an ingested file's row is never forgotten (it is the identity that
//! keeps a re-sent file from loading twice, and the id its records carry).
//!
//! Several processes may prune at once (watch on several hosts): a file another one removed
//! first is not a problem, the row says so.
//!
//! Every path is reached by walking from the spool root without following links
//! (`fsio::beneath`), and the file removed is the file whose bytes were hashed (same folder
//! descriptor, same inode): a folder replaced by a symlink is reported, never followed. A dry
//! run is the same walk with the removals and ledger writes left out, so it names exactly the
//! files and rows a real prune would remove and forget.

use crate::config::{Config, Retention};
use crate::events::{counters, Note};
use crate::fsio::beneath;
use crate::hash::FileHash;
use crate::pipeline::place::reason_name;
use crate::shutdown::Shutdown;
use crate::store::{self, Area, FileRow, Store};
use anyhow::Result;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

/// Ledger rows read per query while pruning.
const PAGE: u64 = 1000;

/// What one area's pruning did (or, dry, would do).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AreaPruned {
    pub area: Area,
    pub days: u32,
    pub files: u64,
    pub bytes: u64,
}

/// What `ferry prune` did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pruned {
    pub dry_run: bool,
    pub areas: Vec<AreaPruned>,
    pub ledger_days: u32,
    /// Ledger rows forgotten (with `dry_run`: that would be).
    pub ledger_rows: u64,
    /// Every file removed (with `dry_run`: that would be), sidecars included: spool paths.
    pub removed: Vec<String>,
    /// The ledger ids forgotten, each with its earlier attempts (with `dry_run`: that would be).
    pub forgotten: Vec<i64>,
    /// Files due for removal that were left where they are, and why.
    pub left: Vec<Note>,
}

/// What became of one file due for removal.
enum Fate {
    /// Removed (or due to be, in a dry run): its size, and the spool paths that go.
    Removed(u64, Vec<String>),
    /// Another process pruned it first.
    Gone,
    Left(String),
}

/// Prunes what `cfg.retention` says is due at `now`, stopping between files when `stop` is
/// triggered (what is pruned so far is recorded).
pub fn prune(cfg: &Config, dry_run: bool, now: DateTime<Utc>, stop: &Shutdown) -> Result<Pruned> {
    let r: Retention = cfg.retention;
    let mut out = Pruned {
        dry_run,
        areas: Vec::new(),
        ledger_days: r.ledger_days,
        ledger_rows: 0,
        removed: Vec::new(),
        forgotten: Vec::new(),
        left: Vec::new(),
    };
    if !r.is_set() {
        return Ok(out);
    }
    let mut store = store::open(&cfg.store)?;
    // Rows whose files this pass removes: forgettable in the same pass, dry or not.
    let mut pruned_now = Vec::new();
    for (area, days) in [
        (Area::Archive, r.archive_days),
        (Area::Quarantine, r.quarantine_days),
    ] {
        if days > 0 {
            let on = Pass {
                area,
                days,
                dry_run,
                now,
                stop,
            };
            let done = prune_area(cfg, &mut *store, &on, &mut out, &mut pruned_now)?;
            out.areas.push(done);
        }
    }
    if r.ledger_days > 0 {
        let before = cutoff(now, r.ledger_days);
        for id in store.forgettable(&before, &pruned_now)? {
            if stop.is_triggered() {
                break;
            }
            out.ledger_rows += store.forget(id, dry_run)?;
            out.forgotten.push(id);
        }
        if !dry_run {
            counters()
                .forgotten_rows
                .fetch_add(out.ledger_rows, Ordering::Relaxed);
        }
    }
    Ok(out)
}

/// How long the daemon waits between prunes, and after a prune that failed (the store was
/// unreachable, say).
const DAILY: std::time::Duration = std::time::Duration::from_secs(86_400);
const AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// `ferry watch`: prunes at start and once a day, on a thread of its own, until `stop`, under
/// the config as it is at each prune (a reload may set or change `[retention]`). Join the
/// handle after a stop so no file is left between its removal and its ledger mark.
pub fn daily(
    live: std::sync::Arc<std::sync::RwLock<Config>>,
    stop: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferry-retention".into())
        .spawn(move || {
            while !stop.is_triggered() {
                let cfg = live.read().unwrap_or_else(|p| p.into_inner()).clone();
                let wait = match prune(&cfg, false, Utc::now(), &stop) {
                    Ok(p) => {
                        if cfg.retention.is_set() {
                            log(&p);
                        }
                        DAILY
                    }
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "retention: prune failed; trying again in an hour"
                        );
                        AFTER_FAILURE
                    }
                };
                let until = Instant::now() + wait;
                while Instant::now() < until && !stop.is_triggered() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        })
}

fn log(p: &Pruned) {
    let files: u64 = p.areas.iter().map(|a| a.files).sum();
    let bytes: u64 = p.areas.iter().map(|a| a.bytes).sum();
    tracing::info!(
        files,
        bytes,
        ledger_rows = p.ledger_rows,
        left = p.left.len(),
        "retention: pruned"
    );
}

/// Ledger time `days` before `now`.
fn cutoff(now: DateTime<Utc>, days: u32) -> String {
    (now - Duration::days(days as i64)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One area's pruning: what, as of when.
struct Pass<'a> {
    area: Area,
    days: u32,
    dry_run: bool,
    now: DateTime<Utc>,
    stop: &'a Shutdown,
}

fn prune_area(
    cfg: &Config,
    store: &mut dyn Store,
    on: &Pass,
    out: &mut Pruned,
    pruned_now: &mut Vec<i64>,
) -> Result<AreaPruned> {
    let Pass {
        area,
        days,
        dry_run,
        now,
        stop,
    } = *on;
    let before = cutoff(now, days);
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let root = match area {
        Area::Archive => &cfg.spool.archive,
        Area::Quarantine => &cfg.spool.quarantine,
    };
    let mut done = AreaPruned {
        area,
        days,
        files: 0,
        bytes: 0,
    };
    let mut after = 0;
    loop {
        let rows = store.prune_candidates(area, &before, after, PAGE)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            if stop.is_triggered() {
                break;
            }
            match fate(cfg, store, root, row, dry_run, &at)? {
                Fate::Removed(bytes, paths) => {
                    done.files += 1;
                    done.bytes += bytes;
                    out.removed.extend(paths);
                    pruned_now.push(row.id);
                }
                Fate::Gone => {}
                Fate::Left(why) => {
                    tracing::warn!(id = row.id, path = row.stored_at, "not pruned: {why}");
                    out.left.push(Note {
                        path: row.stored_at.clone().unwrap_or_default(),
                        what: format!("file {}: {why}", row.id),
                    });
                }
            }
        }
    }
    if !dry_run {
        let c = counters();
        let (files, bytes) = match area {
            Area::Archive => (&c.pruned_archive, &c.pruned_archive_bytes),
            Area::Quarantine => (&c.pruned_quarantine, &c.pruned_quarantine_bytes),
        };
        files.fetch_add(done.files, Ordering::Relaxed);
        bytes.fetch_add(done.bytes, Ordering::Relaxed);
    }
    Ok(done)
}

/// Checks one file due for removal and removes it (unless `dry_run`) with what ferry wrote
/// beside it: a quarantined file's reason, an archived file's rejects report.
fn fate(
    cfg: &Config,
    store: &mut dyn Store,
    root: &Path,
    row: &FileRow,
    dry_run: bool,
    at: &str,
) -> Result<Fate> {
    let Some(stored) = row.stored_at.as_deref() else {
        return Ok(Fate::Left("no recorded place".into()));
    };
    let path = cfg.spool.resolve(stored);
    if !inside(&path, root) {
        return Ok(Fate::Left(format!(
            "its recorded place {stored} is not inside {}",
            root.display()
        )));
    }
    let Some(sha) = row.sha256.as_deref() else {
        return Ok(Fate::Left("no recorded hash (it was never read)".into()));
    };
    let opened = beneath::parent(&cfg.spool.root, &path, false)
        .and_then(|(dir, name)| Ok((dir.open_file(name)?, dir, name)));
    let (file, dir, name) = match opened {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if store.file(row.id)?.is_some_and(|r| r.pruned_at.is_some()) {
                return Ok(Fate::Gone);
            }
            return Ok(Fate::Left(format!("missing: nothing at {stored}")));
        }
        Err(e) => return Ok(Fate::Left(format!("cannot be read: {e}"))),
    };
    let bytes = match FileHash::of_reader(&file) {
        Ok((h, _)) if h.hex() != sha => {
            return Ok(Fate::Left(format!(
                "its content changed since it was recorded (sha256 {}, recorded {sha})",
                h.hex()
            )))
        }
        Ok((_, n)) => n,
        Err(e) => return Ok(Fate::Left(format!("cannot be read: {e}"))),
    };
    // What ferry wrote beside it, and only that: a quarantined file's reason file when it names
    // this ledger row, and the rejects report the row records.
    let mut beside: Vec<(beneath::Dir, OsString)> = Vec::new();
    let reason = reason_name(name);
    if root == cfg.spool.quarantine && reason_of(&dir, &reason, row.id) {
        beside.push((dir.try_clone()?, reason));
    }
    if let Some(r) = row.rejects_at.as_deref() {
        let report = cfg.spool.resolve(r);
        if inside(&report, &cfg.spool.root) {
            if let Ok((d, n)) = beneath::parent(&cfg.spool.root, &report, false) {
                if d.has(n) {
                    let n = n.to_os_string();
                    beside.push((d, n));
                }
            }
        }
    }
    let mut paths = vec![stored.to_string()];
    paths.extend(
        beside
            .iter()
            .map(|(d, n)| cfg.spool.relative(&d.path().join(n))),
    );
    if dry_run {
        return Ok(Fate::Removed(bytes, paths));
    }
    if let Err(e) = dir.unlink_if_same(name, &file) {
        return Ok(Fate::Left(format!("cannot be removed: {e}")));
    }
    for (d, n) in beside {
        match d.unlink(&n) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "cannot remove a pruned file's report")
            }
            _ => {}
        }
    }
    store.mark_pruned(row.id, at)?;
    Ok(Fate::Removed(bytes, paths))
}

/// Whether the reason file `name` in `dir` is the one ferry wrote for ledger row `id`.
fn reason_of(dir: &beneath::Dir, name: &std::ffi::OsStr, id: i64) -> bool {
    use std::io::Read;
    let Ok(f) = dir.open_file(name) else {
        return false;
    };
    let mut text = String::new();
    if f.take(1 << 20).read_to_string(&mut text).is_err() {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["ledger_id"] == id)
}

/// Whether `path` is below `root` without climbing out of it.
fn inside(path: &Path, root: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|rel| {
        rel.components().count() > 0 && rel.components().all(|c| matches!(c, Component::Normal(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_outside_the_area_are_refused() {
        let root = Path::new("/s/archive");
        assert!(inside(Path::new("/s/archive/2026-01-01/a.csv"), root));
        assert!(!inside(Path::new("/s/archive/../ferry.db"), root));
        assert!(!inside(Path::new("/s/quarantine/a.csv"), root));
        assert!(!inside(Path::new("/s/archive"), root));
    }

    #[test]
    fn cutoff_is_ledger_time() {
        let now = DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(cutoff(now, 30), "2026-02-08T12:00:00.000Z");
    }
}
