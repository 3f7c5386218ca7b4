//! The writer: the one thread that writes to SQLite.
//!
//! It takes files in the order workers hand them over and, inside one write transaction,
//! checks identity (duplicate? already seen with `--keep`?), inserts the ledger row and the
//! records under a savepoint (rolled back if the file turns out bad halfway), and allocates the
//! file's final name. Files are grouped: the transaction commits when no file arrives within a
//! short linger, or when it is old or big enough. Only after `COMMIT` returns are files moved
//! and their events emitted.

use super::place::{reason_json, rejects_ndjson, Placement, Transfer};
use super::stages::too_many_columns;
use super::stages::FIRST_REJECTS;
use super::{Body, ColumnSource, Columns, Ctx, End, FileMeta, Job, Mode, Msg, Source};
use crate::config::{DatasetSpec, Policy};
use crate::events::{Event, Summary};
use crate::format::{ColumnKey, SYSTEM_COLUMNS};
use crate::fsio;
use crate::ledger::registry::{Registry, MAX_DATA_COLUMNS, MAX_NAME};
use crate::ledger::tables::{ident, NewColumn, Tables};
use crate::ledger::{self, Counts, Ledger, NewFile, State};
use crate::record::{Cell, Chunk};
use crate::reject::{name_list, plural, Kind, RecordReject, Reject, Stage};
use crate::schema::ColType;
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The name of a file's rejected-records report, after the file's name.
const REPORT: &str = ".rejects.ndjson";
/// Room kept in a quarantined file's name for its sidecars (`.reason.json`, the report).
const SIDECAR: usize = REPORT.len();

/// With a transaction open and nothing queued, wait this long for more before committing.
const LINGER: Duration = Duration::from_millis(2);
/// Commit at least this often while files keep coming (bounds latency).
const MAX_AGE: Duration = Duration::from_millis(50);
/// Commit after this many files or input bytes (bounds the WAL and the work redone after a crash).
const MAX_FILES: usize = 2000;
const MAX_BYTES: u64 = 512 << 20;

/// What a file came to, kept until its transaction commits.
enum Outcome {
    Ingested {
        id: i64,
        counts: Counts,
        warnings: Vec<String>,
    },
    Duplicate {
        id: i64,
        original: i64,
    },
    Quarantined {
        id: i64,
        reject: Reject,
    },
    Unchanged,
    Released,
}

struct Finished {
    meta: FileMeta,
    outcome: Outcome,
    placement: Option<Placement>,
}

struct Txn {
    started: Instant,
    files: usize,
    bytes: u64,
}

struct Writer<'a> {
    ctx: &'a Ctx,
    ledger: Ledger,
    tables: Tables,
    registry: Registry,
    /// Per dataset: the key hashes of its stored records.
    keys: HashMap<String, KeyIndex>,
    txn: Option<Txn>,
    finished: Vec<Finished>,
    summary: Summary,
    /// The folder files are taken from, as recorded in the ledger.
    source: String,
}

/// Runs until every worker has hung up; returns what was committed.
pub fn run(ctx: &Ctx, ledger: Ledger, jobs: Receiver<Job>) -> Result<Summary> {
    let mut w = Writer {
        ctx,
        ledger,
        tables: Tables::default(),
        registry: Registry::default(),
        keys: HashMap::new(),
        txn: None,
        finished: Vec::new(),
        summary: Summary::default(),
        source: ctx.source.display().to_string(),
    };
    match w.run(&jobs) {
        Ok(()) => Ok(w.summary),
        Err(e) => {
            // Nothing of the open transaction happened; its files stay in processing/ and are
            // redone by recovery. Stop claiming more.
            ctx.halt();
            w.ledger.rollback();
            Err(e)
        }
    }
}

impl Writer<'_> {
    fn run(&mut self, jobs: &Receiver<Job>) -> Result<()> {
        loop {
            let job = match &self.txn {
                None => match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return Ok(()),
                },
                Some(t) => {
                    let wait = LINGER.min(MAX_AGE.saturating_sub(t.started.elapsed()));
                    match jobs.recv_timeout(wait) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => {
                            self.commit()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return self.commit(),
                    }
                }
            };
            self.handle(job)?;
            if let Some(t) = &self.txn {
                if t.files >= MAX_FILES || t.bytes >= MAX_BYTES || t.started.elapsed() >= MAX_AGE {
                    self.commit()?;
                }
            }
        }
    }

    fn begin(&mut self) -> Result<()> {
        if self.txn.is_some() {
            return Ok(());
        }
        injected_disk_full(&self.ledger.conn)?;
        loop {
            match self.ledger.begin() {
                Ok(()) => break,
                Err(e) if is_busy(&e) => {
                    tracing::warn!(
                        "the ledger has been locked by another process for a while; still waiting"
                    );
                }
                Err(e) => return Err(e.context("starting a ledger transaction")),
            }
        }
        self.tables.refresh(&self.ledger.conn)?;
        self.registry.refresh(&self.ledger.conn)?;
        // Other processes may have stored records since our last transaction.
        for k in self.keys.values_mut() {
            k.synced = false;
        }
        self.txn = Some(Txn {
            started: Instant::now(),
            files: 0,
            bytes: 0,
        });
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.txn.take().is_none() {
            return Ok(());
        }
        if let Err(e) = self.ledger.commit() {
            self.tables.invalidate();
            self.registry.invalidate();
            self.keys.clear();
            return Err(e.context("committing to the ledger"));
        }
        for k in self.keys.values_mut() {
            k.committed();
        }
        for f in std::mem::take(&mut self.finished) {
            if let Some(p) = &f.placement {
                self.apply(&f.meta, p);
            }
            self.emit(&f);
        }
        Ok(())
    }

    /// Puts a file where its outcome says; a failure leaves it for recovery (and is counted).
    fn apply(&mut self, meta: &FileMeta, p: &Placement) {
        match p.apply() {
            Ok(()) => {
                if let Source::Claimed(c) = &meta.source {
                    c.tidy(&self.ctx.spool);
                }
            }
            Err(e) => {
                let why = match &meta.source {
                    Source::Claimed(_) => format!("{e} (it waits in processing/)"),
                    Source::Kept(_) => {
                        format!("{e} (its quarantine copy or report; the file is where it was)")
                    }
                };
                Event::Unplaced {
                    path: &meta.rel.display(),
                    why: &why,
                }
                .emit(&mut self.summary);
                self.ctx.mark_unplaced();
            }
        }
    }

    /// Where a file that is not finished after all goes: back where it was found (under another
    /// name if a new file took its name meanwhile). Nothing moves with `--keep`.
    fn release(&self, meta: &FileMeta) -> Option<Placement> {
        let Source::Claimed(c) = &meta.source else {
            return None;
        };
        let mut to = self.ctx.source.join(meta.rel.as_path());
        if to.symlink_metadata().is_ok() {
            let name = fsio::name_with_suffix(meta.rel.file_name(), &format!("~{}", c.id));
            to = to.with_file_name(fsio::fit_name(&name, 0));
        }
        Some(Placement::Release {
            from: c.path.clone(),
            to,
        })
    }

    fn emit(&mut self, f: &Finished) {
        let path = f.meta.rel.display();
        let m = &f.meta;
        let event = match &f.outcome {
            Outcome::Ingested {
                id,
                counts,
                warnings,
            } => Event::Ingested {
                path: &path,
                id: *id,
                dataset: m.dataset().unwrap_or_default(),
                records: counts.stored,
                rejected: counts.rejected,
                duplicate_records: counts.duplicates,
                warnings,
                bytes: m.size,
                latency: m.received.elapsed(),
            },
            Outcome::Duplicate { id, original } => Event::Duplicate {
                path: &path,
                id: *id,
                original: *original,
                dataset: m.dataset().unwrap_or_default(),
                bytes: m.size,
            },
            Outcome::Quarantined { id, reject } => Event::Quarantined {
                path: &path,
                id: *id,
                dataset: m.dataset(),
                reject,
                bytes: m.size,
            },
            Outcome::Unchanged => Event::Unchanged { path: &path },
            Outcome::Released => Event::Released { path: &path },
        };
        event.emit(&mut self.summary);
        if let Some(p) = &self.ctx.progress {
            p.inc(1);
        }
    }

    fn handle(&mut self, job: Job) -> Result<()> {
        let Job { meta, body } = job;
        match body {
            Body::Left(why) => {
                Event::Left {
                    path: &meta.rel.display(),
                    why: &why,
                }
                .emit(&mut self.summary);
                if let Some(p) = &self.ctx.progress {
                    p.inc(1);
                }
                Ok(())
            }
            Body::Changed => {
                // Nothing was read or recorded: put it back at once.
                if let Some(p) = self.release(&meta) {
                    self.apply(&meta, &p);
                }
                self.emit(&Finished {
                    meta,
                    outcome: Outcome::Released,
                    placement: None,
                });
                Ok(())
            }
            Body::Rejected(reject) => {
                self.begin()?;
                self.count(&meta);
                if self.unchanged(&meta)? {
                    return Ok(());
                }
                self.quarantine(meta, None, reject, &[])
            }
            Body::Records(rx) => {
                self.begin()?;
                self.count(&meta);
                if self.unchanged(&meta)? {
                    return Ok(());
                }
                self.records(meta, rx)
            }
        }
    }

    fn count(&mut self, meta: &FileMeta) {
        if let Some(t) = &mut self.txn {
            t.files += 1;
            t.bytes += meta.size;
        }
    }

    fn row<'m>(
        &'m self,
        meta: &'m FileMeta,
        path: &'m str,
        state: State,
        now: &'m str,
    ) -> NewFile<'m> {
        NewFile {
            path,
            source: &self.source,
            claim: meta.source.claim_id(),
            sha256: meta.sha256.as_deref(),
            size: meta.size,
            state,
            dataset: meta.dataset(),
            format: None,
            duplicate_of: None,
            error: None,
            attempt: meta.attempt,
            retry_of: meta.retry_of,
            received_at: &meta.received_at,
            hashed_at: meta.hashed_at.as_deref(),
            finished_at: now,
            worker: &self.ctx.worker_name,
        }
    }

    /// With `--keep`, a file already handled (same path, same content) is left alone, so that
    /// running again over the same folder is a no-op.
    fn unchanged(&mut self, meta: &FileMeta) -> Result<bool> {
        if self.ctx.mode != Mode::Keep
            || !self
                .ledger
                .seen(&meta.rel.display(), meta.sha256.as_deref())?
        {
            return Ok(false);
        }
        self.finished.push(Finished {
            meta: meta.clone(),
            outcome: Outcome::Unchanged,
            placement: None,
        });
        Ok(true)
    }

    fn records(&mut self, meta: FileMeta, rx: Receiver<Msg>) -> Result<()> {
        let path = meta.rel.display();
        let sha = meta.sha256.clone().unwrap_or_default();
        let now = ledger::now();
        let spec = meta
            .spec
            .clone()
            .context("a file with records has a dataset")?;
        if let Some(original) = self.ledger.ingested_with(&spec.name, &sha)? {
            drop(rx);
            let id = self.ledger.insert(&NewFile {
                duplicate_of: Some(original),
                ..self.row(&meta, &path, State::Duplicate, &now)
            })?;
            let placement = self.archive(id, &meta, None)?;
            self.finished.push(Finished {
                meta,
                outcome: Outcome::Duplicate { id, original },
                placement,
            });
            return Ok(());
        }

        self.ledger.conn.execute_batch("SAVEPOINT file")?;
        let id = self
            .ledger
            .insert(&self.row(&meta, &path, State::Ingested, &now))?;
        let mut file = FileStore::default();
        let end = match self.store(&spec, id, &rx, &now, &mut file) {
            Ok(end) => end,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => End::Rejected {
                format: None,
                reject: store_reject(&e),
                rejects: Vec::new(),
            },
        };
        drop(rx);
        match end {
            End::Done {
                format,
                rejected,
                notes,
                ..
            } => {
                file.warnings.extend(notes);
                let counts = Counts {
                    stored: file.stored,
                    rejected,
                    duplicates: file.duplicates,
                };
                self.ledger.set_records(id, counts, &ledger::now())?;
                self.ledger.set_format(id, format.id())?;
                if !file.warnings.is_empty() {
                    self.ledger.set_warnings(id, &file.warnings)?;
                }
                let rejects = if rejected > 0 {
                    Some(self.rejects_report(id, &meta)?)
                } else {
                    None
                };
                self.ledger.conn.execute_batch("RELEASE file")?;
                for k in self.keys.values_mut() {
                    k.file_done();
                }
                let placement = self.archive(id, &meta, rejects)?;
                self.finished.push(Finished {
                    meta,
                    outcome: Outcome::Ingested {
                        id,
                        counts,
                        warnings: std::mem::take(&mut file.warnings),
                    },
                    placement,
                });
            }
            End::Rejected {
                format,
                reject,
                rejects,
            } => {
                self.undo_file()?;
                self.quarantine(meta, format.map(|f| f.id()), reject, &rejects)?;
            }
            End::Retry => {
                // The worker tries again and hands the file over anew.
                self.undo_file()?;
            }
            End::Changed => {
                self.undo_file()?;
                let placement = self.release(&meta);
                self.finished.push(Finished {
                    meta,
                    outcome: Outcome::Released,
                    placement,
                });
            }
        }
        Ok(())
    }

    /// Reserves `quarantine/<name>.rejects.ndjson` for a file's rejected records and renders it.
    fn rejects_report(&mut self, id: i64, meta: &FileMeta) -> Result<(PathBuf, Vec<u8>)> {
        let report = |name: &std::ffi::OsStr| {
            let mut n = fsio::fit_name(name, REPORT.len());
            n.push(REPORT);
            n
        };
        let mut to = self.ctx.spool.quarantine.join(report(meta.rel.file_name()));
        let taken = |w: &Self, p: &PathBuf| -> Result<bool> {
            let rel = w.ctx.spool.relative(p);
            Ok(p.symlink_metadata().is_ok()
                || w.ledger
                    .conn
                    .prepare_cached("SELECT 1 FROM files WHERE rejects_at = ?1")?
                    .exists([&rel])?)
        };
        if taken(self, &to)? {
            let mut n = meta.rel.file_name().to_os_string();
            n.push(format!("~{id}"));
            to = self.ctx.spool.quarantine.join(report(&n));
        }
        self.ledger
            .set_rejects_at(id, &self.ctx.spool.relative(&to))?;
        let row = self
            .ledger
            .get(id)?
            .context("the ledger row just written is missing")?;
        let body = rejects_ndjson(&row, &self.ledger.rejects(id, None)?);
        Ok((to, body))
    }

    /// Rolls back everything the current file did (rows, ledger row, added columns, keys).
    fn undo_file(&mut self) -> Result<()> {
        self.ledger
            .conn
            .execute_batch("ROLLBACK TO file; RELEASE file")?;
        self.tables.invalidate();
        self.registry.invalidate();
        for k in self.keys.values_mut() {
            k.undo_file();
        }
        Ok(())
    }

    /// The key index of a dataset, brought up to date with what is stored.
    fn key_index(&mut self, dataset: &str, table: &str) -> Result<()> {
        if self.keys.get(dataset).is_some_and(|k| k.synced) {
            return Ok(());
        }
        let max = self.tables.max_id(&self.ledger.conn, table)?;
        let idx = self.keys.entry(dataset.to_string()).or_default();
        idx.sync(&self.ledger.conn, table, max)
    }

    /// Drains one file's stream into its dataset table.
    fn store(
        &mut self,
        spec: &DatasetSpec,
        id: i64,
        rx: &Receiver<Msg>,
        now: &str,
        file: &mut FileStore,
    ) -> Result<End> {
        let dataset = spec.name.as_str();
        let keyed = !spec.key.is_empty();
        loop {
            match rx.recv() {
                Ok(Msg::Columns(cols)) => {
                    if let Err(r) = self.columns(spec, &cols, now, file)? {
                        return Ok(End::Rejected {
                            format: None,
                            reject: r,
                            rejects: Vec::new(),
                        });
                    }
                }
                Ok(Msg::Rows(chunk)) => {
                    // Keyed records are numbered here (SQLite's next ids, predicted: the
                    // index is in step with the table); others are left to SQLite.
                    let mut first = 0;
                    let kept = if keyed {
                        self.key_index(dataset, &file.table)?;
                        let idx = self.keys.get_mut(dataset).expect("just synced");
                        first = idx.through + 1;
                        let conn = &self.ledger.conn;
                        let key_cols = &file.key_cols;
                        let key_names: Vec<&str> = key_cols
                            .iter()
                            .map(|c| c.and_then(|c| file.cols[c].as_deref()).unwrap_or("_id"))
                            .collect();
                        let table = &file.table;
                        let mut dups = 0;
                        let kept = dedupe(
                            idx,
                            &chunk,
                            key_cols,
                            first,
                            |other, r| {
                                same_key_stored(conn, table, &key_names, key_cols, other, &chunk, r)
                            },
                            &mut dups,
                        )?;
                        file.duplicates += dups;
                        Some(kept)
                    } else {
                        None
                    };
                    let n = kept.as_ref().map_or(chunk.rows(), Vec::len) as i64;
                    self.tables.insert(
                        &self.ledger.conn,
                        &file.table,
                        &file.cols,
                        keyed,
                        id,
                        &chunk,
                        kept.as_deref(),
                        keyed.then_some(first),
                    )?;
                    if let Some(idx) = self.keys.get_mut(dataset).filter(|_| keyed) {
                        idx.through = idx.through.max(first + n - 1);
                    }
                    file.stored += n as u64;
                }
                Ok(Msg::Rejects(r)) => self.ledger.add_rejects(id, &r)?,
                Ok(Msg::End(end)) => {
                    if let End::Done { .. } = end {
                        if let Some(r) = self.missing_columns(spec, file) {
                            return Ok(End::Rejected {
                                format: None,
                                reject: r,
                                rejects: Vec::new(),
                            });
                        }
                    }
                    return Ok(end);
                }
                Err(_) => {
                    return Ok(End::Rejected {
                        format: None,
                        reject: Reject::new(
                            Kind::Internal,
                            Stage::Parse,
                            "the worker stopped before finishing the file",
                        ),
                        rejects: Vec::new(),
                    })
                }
            }
        }
    }

    /// Takes a file's column list: finds (or decides, through the registry) the table and the
    /// column each of the file's columns lands in, creates or grows the table, and applies the
    /// drift policy of an untyped dataset (a typed one was checked by the worker against its
    /// declaration). A column stored under another name than the file's is reported on the file.
    fn columns(
        &mut self,
        spec: &DatasetSpec,
        cols: &Columns,
        now: &str,
        file: &mut FileStore,
    ) -> Result<Result<(), Reject>> {
        let conn = &self.ledger.conn;
        let dataset = spec.name.as_str();
        let table = match self.registry.table(conn, dataset)? {
            Some(t) => t,
            None => self.registry.create_table(conn, dataset, now)?,
        };
        let existing = self.tables.columns(conn, &table)?;
        let data_columns = existing
            .iter()
            .filter(|(l, _)| !SYSTEM_COLUMNS.contains(&l.as_str()))
            .count();
        if file.before.is_none() {
            file.before = Some(
                existing
                    .iter()
                    .filter(|(l, _)| !SYSTEM_COLUMNS.contains(&l.as_str()))
                    .map(|(_, c)| c.clone())
                    .collect(),
            );
        }
        // Declared columns own their names; a file column never takes one.
        let mut reserved: HashSet<String> =
            spec.columns.iter().map(|c| c.name.to_lowercase()).collect();
        let mut mapped = Vec::with_capacity(cols.defs.len());
        let mut create: Vec<NewColumn> = Vec::new();
        let mut refused = Vec::new();
        let mut renamed = Vec::new();
        for d in &cols.defs {
            let key = match &d.source {
                ColumnSource::Declared(name) => {
                    if !existing.contains_key(&name.to_lowercase()) {
                        create.push(NewColumn {
                            name: name.clone(),
                            ty: d.ty,
                        });
                    }
                    file.seen.insert(name.to_lowercase());
                    mapped.push(Some(name.clone()));
                    continue;
                }
                ColumnSource::File(key) => key,
            };
            if let Some(col) = self.registry.column(conn, dataset, key)? {
                let lower = col.to_lowercase();
                if !existing.contains_key(&lower) && reserved.insert(lower.clone()) {
                    create.push(NewColumn {
                        name: col.clone(),
                        ty: ColType::String,
                    });
                }
                if col != key.name {
                    renamed.push(rename_warning(key, &col));
                }
                file.seen.insert(lower);
                mapped.push(Some(col));
                continue;
            }
            // A column this dataset has never stored from a file.
            let adopt = self
                .registry
                .adoptable(conn, dataset, key, &existing, &reserved)?;
            let policy = if spec.typed() {
                Policy::Add
            } else {
                spec.on_new_column
            };
            let new_to_table = data_columns > 0 && !adopt;
            match (new_to_table, policy) {
                (true, Policy::Fail) => {
                    refused.push(key);
                    mapped.push(None);
                }
                (true, Policy::Ignore) => mapped.push(None),
                _ => {
                    let (col, new) = self
                        .registry
                        .assign_column(conn, dataset, key, &existing, &reserved, now)?;
                    reserved.insert(col.to_lowercase());
                    if new {
                        create.push(NewColumn {
                            name: col.clone(),
                            ty: ColType::String,
                        });
                    }
                    if col != key.name {
                        renamed.push(rename_warning(key, &col));
                    }
                    file.seen.insert(col.to_lowercase());
                    mapped.push(Some(col));
                }
            }
        }
        if !refused.is_empty() {
            let described: Vec<String> = refused.iter().map(|k| k.describe()).collect();
            let names: Vec<&str> = refused.iter().map(|k| k.name.as_str()).collect();
            return Ok(Err(Reject::new(
                Kind::SchemaNewColumn,
                Stage::Validate,
                format!(
                    "the file has column{} {} that dataset {:?} does not have \
                     (on_new_column = fail)",
                    plural(refused.len()),
                    described.join(", "),
                    spec.name
                ),
            )
            .in_field(names.join(", "))));
        }
        if data_columns + create.len() > MAX_DATA_COLUMNS {
            return Ok(Err(too_many_columns(data_columns + create.len())));
        }
        self.tables
            .ensure(conn, &table, &create, !spec.key.is_empty())?;
        for w in renamed {
            if !file.warnings.contains(&w) {
                file.warnings.push(w);
            }
        }
        file.key_cols = cols.key.clone();
        file.cols = mapped;
        file.table = table;
        Ok(Ok(()))
    }

    /// For an untyped dataset with `on_missing_column = fail`: the columns its table had that
    /// the file never showed.
    fn missing_columns(&self, spec: &DatasetSpec, file: &FileStore) -> Option<Reject> {
        if spec.typed() || spec.on_missing_column != Policy::Fail {
            return None;
        }
        let missing: Vec<String> = file
            .before
            .iter()
            .flatten()
            .filter(|c| !file.seen.contains(&c.to_lowercase()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(
            Reject::new(
                Kind::SchemaMissingColumn,
                Stage::Validate,
                format!(
                    "the file lacks column{} {} of dataset {:?} (on_missing_column = fail)",
                    plural(missing.len()),
                    name_list(&missing),
                    spec.name
                ),
            )
            .in_field(missing.join(", ")),
        )
    }

    fn quarantine(
        &mut self,
        meta: FileMeta,
        format: Option<&str>,
        reject: Reject,
        rejects: &[RecordReject],
    ) -> Result<()> {
        let path = meta.rel.display();
        let now = ledger::now();
        let id = self.ledger.insert(&NewFile {
            format,
            error: Some(&reject),
            ..self.row(&meta, &path, State::Quarantined, &now)
        })?;
        self.ledger.add_rejects(id, rejects)?;
        let to = self.allocate(
            id,
            self.ctx.spool.quarantine.clone(),
            meta.rel.file_name(),
            SIDECAR,
        )?;
        let row = self
            .ledger
            .get(id)?
            .context("the ledger row just written is missing")?;
        let how = match (&meta.source, reject.kind) {
            (Source::Claimed(_), _) => Transfer::Move,
            // A FIFO or device read in place is never opened, so never copied.
            (Source::Kept(_), Kind::SpecialFile) => Transfer::None,
            (Source::Kept(_), _) => Transfer::Copy,
        };
        let placement = Placement::Quarantine {
            from: meta.source.path().to_path_buf(),
            to,
            reason: reason_json(&row, &rejects[..rejects.len().min(FIRST_REJECTS)]),
            how,
        };
        self.finished.push(Finished {
            meta,
            outcome: Outcome::Quarantined { id, reject },
            placement: Some(placement),
        });
        Ok(())
    }

    /// Where an ingested or duplicate file goes: `archive/<date>/<path>`, after its rejects
    /// report if it has one. With `--keep` nothing moves, but the report is still written.
    fn archive(
        &mut self,
        id: i64,
        meta: &FileMeta,
        rejects: Option<(PathBuf, Vec<u8>)>,
    ) -> Result<Option<Placement>> {
        let Source::Claimed(c) = &meta.source else {
            return Ok(rejects.map(|(to, body)| Placement::Report { to, body }));
        };
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let mut dir = self.ctx.spool.archive.join(day);
        if let Some(parent) = meta.rel.parent() {
            dir.push(parent);
        }
        let to = self.allocate(id, dir, meta.rel.file_name(), 0)?;
        Ok(Some(Placement::Archive {
            from: c.path.clone(),
            to,
            rejects,
        }))
    }

    /// Reserves a final name for a file in the ledger: `dir/name` if free, else with `~<id>`
    /// before the extension; either cut to fit the filesystem with `reserve` bytes to spare for
    /// sidecars. Names are unique because every reservation happens inside a write transaction,
    /// serialized across all ferry processes on this spool.
    fn allocate(
        &mut self,
        id: i64,
        dir: PathBuf,
        name: &std::ffi::OsStr,
        reserve: usize,
    ) -> Result<PathBuf> {
        let mut to = dir.join(fsio::fit_name(name, reserve));
        let mut stored = self.ctx.spool.relative(&to);
        if self.ledger.stored_at_taken(&stored)? || to.symlink_metadata().is_ok() {
            let suffixed = fsio::name_with_suffix(name, &format!("~{id}"));
            to = dir.join(fsio::fit_name(&suffixed, reserve));
            stored = self.ctx.spool.relative(&to);
        }
        self.ledger.set_stored_at(id, &stored)?;
        Ok(to)
    }
}

/// The `FERRY_FAULT_DISK_FULL` fault point: while its flag file exists the ledger may not grow
/// (SQLite's `max_page_count` is pinned to its current size), so writes fail with SQLite's real
/// "database or disk is full" error, as on a full disk.
fn injected_disk_full(conn: &rusqlite::Connection) -> Result<()> {
    let Some(full) = crate::faults::disk_full() else {
        return Ok(());
    };
    let pages: i64 = if full {
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))?
    } else {
        i64::from(u32::MAX - 1)
    };
    conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
    Ok(())
}

fn sqlite_code(e: &anyhow::Error) -> Option<rusqlite::ErrorCode> {
    e.chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
        .and_then(|e| e.sqlite_error_code())
}

fn is_busy(e: &anyhow::Error) -> bool {
    matches!(
        sqlite_code(e),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why storing a file's records failed, for a failure that is not about the machine: a limit
/// of the store the file's content runs into has its own kind (the file needs changing, or the
/// dataset's shape); anything else is `io.store`.
fn store_reject(e: &anyhow::Error) -> Reject {
    let text = format!("{e:#}");
    let (kind, what) = if sqlite_code(e) == Some(rusqlite::ErrorCode::TooBig) {
        (
            Kind::RecordTooBig,
            "a value or record is larger than the store accepts",
        )
    } else if text.contains("too many columns") {
        (
            Kind::SchemaTooManyColumns,
            "the table would have more columns than the store allows",
        )
    } else {
        (Kind::IoStore, "storing the records failed")
    };
    Reject::new(kind, Stage::Store, format!("{what}: {text}"))
}

/// Errors that are about the database or the machine, not the file: stop and let recovery redo
/// the group, rather than blame the file.
fn is_fatal(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match sqlite_code(e) {
        Some(code) => matches!(
            code,
            C::DiskFull
                | C::SystemIoFailure
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::ReadOnly
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::CannotOpen
                | C::OutOfMemory
                | C::PermissionDenied
        ),
        None => false,
    }
}

/// Why a file column is stored under another name than its own, as a sentence for the ledger.
fn rename_warning(key: &ColumnKey, col: &str) -> String {
    let why = if key.name.is_empty() {
        "its header is blank"
    } else if key.occurrence > 1 {
        "the header names it more than once"
    } else if key.name.len() > MAX_NAME {
        "the name is longer than 63 bytes"
    } else if SYSTEM_COLUMNS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&key.name))
    {
        "ferry keeps that name for itself"
    } else {
        "the dataset has another column of that name (names that differ in case are different \
         columns)"
    };
    format!("column {} is stored as {col:?}: {why}", key.describe())
}

/// What the writer tracks about the file it is storing.
#[derive(Default)]
struct FileStore {
    /// The dataset's table.
    table: String,
    /// Per chunk cell: the table column it goes to (`None`: dropped by policy).
    cols: Vec<Option<String>>,
    /// Per key column: its chunk cell.
    key_cols: Vec<Option<usize>>,
    /// The table's data columns before this file (untyped drift).
    before: Option<Vec<String>>,
    /// Lowercased names of every table column the file has shown.
    seen: HashSet<String>,
    stored: u64,
    duplicates: u64,
    /// What the file was stored with that a reader should know (renamed columns).
    warnings: Vec<String>,
}

/// Key hashes are already well mixed: use them as their own hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// The key hashes of a dataset's stored records, each with the id of a record that has it.
///
/// This is what makes record keys cheap (R-record-key): a new key costs a hash-map insert, not a
/// B-tree insert on disk (a UNIQUE index over the key columns made a 6.8 M-row load several
/// times slower). A hash seen before is checked exactly: the stored record is read by its id and
/// its key values compared, so two different keys that share a hash are both stored. Memory is
/// about 20 bytes per stored record. The index is loaded from the table's `_key` column on first
/// use and topped up at each transaction with the rows other processes stored.
#[derive(Default)]
struct KeyIndex {
    map: IdMap<i64>,
    /// Further records whose different keys share a hash with the one in `map`.
    more: IdMap<Vec<i64>>,
    /// Every record with an id up to this is in the index.
    through: i64,
    /// `through` when the current file started (set when the index is first synced, then at
    /// the end of each kept file).
    file_start: Option<i64>,
    /// Hashes added since the last commit, by the current file and before it: (hash, in_more).
    added: Vec<(i64, bool)>,
    /// `added.len()` when the current file started.
    file_mark: usize,
    synced: bool,
}

impl KeyIndex {
    fn sync(&mut self, conn: &Connection, table: &str, max: i64) -> Result<()> {
        if max < self.through {
            // Records were removed behind our back: start over.
            *self = KeyIndex::default();
        }
        if max > self.through {
            let started = Instant::now();
            let mut stmt = conn.prepare(&format!(
                "SELECT _id, _key FROM {} WHERE _id > ?1 AND _key IS NOT NULL ORDER BY _id",
                ident(table)
            ))?;
            let mut rows = stmt.query([self.through])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let (id, h): (i64, i64) = (r.get(0)?, r.get(1)?);
                match self.map.get(&h) {
                    None => {
                        self.map.insert(h, id);
                    }
                    Some(_) => self.more.entry(h).or_default().push(id),
                }
                n += 1;
            }
            if n > 100_000 {
                tracing::info!(
                    table,
                    keys = n,
                    ms = started.elapsed().as_millis() as u64,
                    "loaded record keys"
                );
            }
            self.through = max;
        }
        self.synced = true;
        self.file_start.get_or_insert(self.through);
        self.file_mark = self.added.len();
        Ok(())
    }

    fn candidates(&self, h: i64) -> impl Iterator<Item = i64> + '_ {
        self.map
            .get(&h)
            .copied()
            .into_iter()
            .chain(self.more.get(&h).into_iter().flatten().copied())
    }

    fn add(&mut self, h: i64, id: i64) {
        match self.map.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(id);
                self.added.push((h, true));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
                self.added.push((h, false));
            }
        }
    }

    /// The current file is kept: the next one starts here.
    fn file_done(&mut self) {
        self.file_start = Some(self.through);
        self.file_mark = self.added.len();
    }

    /// The transaction committed: nothing before this point can be undone any more.
    fn committed(&mut self) {
        self.added.clear();
        self.file_mark = 0;
        self.file_start = Some(self.through);
    }

    /// Forgets what the current file added (its savepoint was rolled back).
    fn undo_file(&mut self) {
        while self.added.len() > self.file_mark {
            let (h, in_more) = self.added.pop().expect("longer than the mark");
            if in_more {
                if let Some(v) = self.more.get_mut(&h) {
                    v.pop();
                    if v.is_empty() {
                        self.more.remove(&h);
                    }
                }
            } else {
                self.map.remove(&h);
            }
        }
        if let Some(t) = self.file_start.take() {
            self.through = t;
        }
        self.synced = false;
    }
}

/// Picks the rows of a chunk whose key is new; counts the others in `dups`. Row ids are
/// assigned from `first` in order. `stored_same(id, row)` says whether the stored record `id`
/// has the key of chunk row `row`.
fn dedupe(
    idx: &mut KeyIndex,
    chunk: &Chunk,
    key_cols: &[Option<usize>],
    first: i64,
    mut stored_same: impl FnMut(i64, usize) -> Result<bool>,
    dups: &mut u64,
) -> Result<Vec<u32>> {
    let mut kept: Vec<u32> = Vec::with_capacity(chunk.rows());
    for r in 0..chunk.rows() {
        let h = chunk.keys[r];
        if !idx.map.contains_key(&h) {
            // The common case: a key never seen.
            idx.add(h, first + kept.len() as i64);
            kept.push(r as u32);
            continue;
        }
        let mut dup = false;
        for other in idx.candidates(h).collect::<Vec<_>>() {
            let same = if other >= first {
                let o = kept[(other - first) as usize] as usize;
                same_key_in_chunk(chunk, key_cols, o, r)
            } else {
                stored_same(other, r)?
            };
            if same {
                dup = true;
                break;
            }
        }
        if dup {
            *dups += 1;
            continue;
        }
        idx.add(h, first + kept.len() as i64);
        kept.push(r as u32);
    }
    Ok(kept)
}

fn cell_at(chunk: &Chunk, row: usize, col: Option<usize>) -> Cell {
    col.map_or(Cell::Null, |c| chunk.row(row)[c])
}

fn same_key_in_chunk(chunk: &Chunk, key_cols: &[Option<usize>], a: usize, b: usize) -> bool {
    key_cols.iter().all(|&c| {
        let (x, y) = (cell_at(chunk, a, c), cell_at(chunk, b, c));
        match (x, y) {
            (Cell::Text { .. }, Cell::Text { .. }) => chunk.text(x) == chunk.text(y),
            (Cell::Real(p), Cell::Real(q)) => p == q,
            _ => x == y,
        }
    })
}

/// Whether stored record `id` has the key of chunk row `r`: the exact check behind a hash match.
fn same_key_stored(
    conn: &Connection,
    table: &str,
    key_names: &[&str],
    key_cols: &[Option<usize>],
    id: i64,
    chunk: &Chunk,
    r: usize,
) -> Result<bool> {
    let cols: Vec<String> = key_names.iter().map(|k| ident(k)).collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM {} WHERE _id = ?1",
        cols.join(", "),
        ident(table)
    ))?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(false);
    };
    for (i, &c) in key_cols.iter().enumerate() {
        let cell = cell_at(chunk, r, c);
        let same = match (row.get_ref(i)?, cell) {
            (ValueRef::Null, Cell::Null) => true,
            (ValueRef::Integer(a), Cell::Int(b)) => a == b,
            (ValueRef::Real(a), Cell::Real(b)) => a == b,
            (ValueRef::Text(a), t @ Cell::Text { .. }) => {
                Some(a) == chunk.text(t).map(str::as_bytes)
            }
            _ => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of one-column text rows with the given (forced) key hashes.
    fn chunk(rows: &[(&str, i64)]) -> Chunk {
        let mut c = Chunk::new(1);
        for (i, (v, h)) in rows.iter().enumerate() {
            c.push_row(i as u64 + 2, v, &[Some((0, v.len()))]);
            c.keys.push(*h);
        }
        c
    }

    #[test]
    fn equal_hashes_are_checked_against_the_values() {
        let mut idx = KeyIndex::default();
        // "a" and "b" collide on purpose; the second "a" is a true duplicate.
        let c = chunk(&[("a", 7), ("b", 7), ("a", 7), ("c", 9)]);
        let mut dups = 0;
        let kept = dedupe(&mut idx, &c, &[Some(0)], 100, |_, _| Ok(false), &mut dups).unwrap();
        assert_eq!(kept, [0, 1, 3]);
        assert_eq!(dups, 1);
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        // A later chunk: hash 7 is checked against the stored records by id.
        let c2 = chunk(&[("b", 7), ("d", 7)]);
        let mut dups = 0;
        let kept = dedupe(
            &mut idx,
            &c2,
            &[Some(0)],
            103,
            |id, r| Ok(id == 101 && r == 0),
            &mut dups,
        )
        .unwrap();
        assert_eq!(kept, [1]);
        assert_eq!(dups, 1);
        // Undoing the file forgets only what it added.
        idx.file_mark = 3;
        idx.undo_file();
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        assert_eq!(idx.candidates(9).collect::<Vec<_>>(), [102]);
    }
}
