//! One file's outcome inside the group transaction: duplicate, ingested (its records stored
//! under a savepoint) or quarantined, its ledger row, and the name it will have in `archive/` or
//! `quarantine/`, reserved in the ledger so concurrent processes never pick the same one.

use super::columns::{Contended, FileColumns, RekeyNeeded};
use super::{FileOutcome, Finished, Writer};
use crate::config::DatasetSpec;
use crate::format::Format;
use crate::fsio;
use crate::pipeline::place::{reason_json, rejects_ndjson, Placement, Transfer};
use crate::pipeline::stages::bad::BadRecords;
use crate::pipeline::stages::FIRST_REJECTS;
use crate::pipeline::{Columns, End, FileMeta, Mode, Msg, Source};
use crate::reject::{Kind, RecordReject, Reject, Stage};
use crate::spool;
use crate::store::{now, ChunkInsert, Counts, Failure, FileState, FileUpdate, Identity, NewFile};
use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use std::ffi::OsStr;
use std::path::PathBuf;

/// The name of a file's rejected-records report, after the file's name.
const REPORT: &str = spool::SIDECARS[1];
/// Room kept in a quarantined file's name for its sidecars (`.reason.json`, the report).
const SIDECAR: usize = REPORT.len();

/// A file's ledger row as the writer first records it; `source` is the folder files are taken
/// from, `worker` this process.
pub(super) fn new_file<'m>(
    source: &'m str,
    worker: &'m str,
    meta: &'m FileMeta,
    path: &'m str,
    state: FileState,
    now: &'m str,
) -> NewFile<'m> {
    NewFile {
        path,
        source,
        claim: meta.source.claim_id(),
        sha256: meta.sha256.as_deref(),
        size: meta.size,
        state,
        dataset: meta.dataset(),
        format: None,
        duplicate_of: None,
        error: None,
        rejected: 0,
        attempt: meta.attempt,
        retry_of: meta.retry_of,
        received_at: &meta.received_at,
        hashed_at: meta.hashed_at.as_deref(),
        finished_at: now,
        worker,
        remote: match &meta.source {
            Source::Claimed(c) => c.origin.as_deref(),
            Source::Kept(_) => None,
        },
    }
}

impl Writer<'_> {
    /// With `--keep`, a file already handled (same path, same content) is left alone, so that
    /// running again over the same folder is a no-op.
    pub(super) fn unchanged(&mut self, meta: &FileMeta) -> Result<bool> {
        if self.session.mode != Mode::Keep
            || !self
                .store
                .seen(&meta.rel.display(), meta.sha256.as_deref())?
        {
            return Ok(false);
        }
        self.finished.push(Finished {
            meta: meta.clone(),
            outcome: FileOutcome::Unchanged,
            placement: None,
        });
        Ok(true)
    }

    pub(super) fn records(&mut self, mut meta: FileMeta, rx: Receiver<Msg>) -> Result<()> {
        let path = meta.rel.display();
        // An identity that comes after the records (`Msg::Identity`) is judged then.
        let late = meta.sha256.is_none();
        let sha = meta.sha256.clone().unwrap_or_default();
        let now = now();
        let spec = meta
            .spec
            .clone()
            .context("a file with records has a dataset")?;
        // A Columns message to take again when the file starts over in a new group.
        let mut again: Option<Columns> = None;
        let (id, mut file, end) = loop {
            let identity = match late {
                true => Identity::New,
                false => self.store.identity(&spec.name, &sha)?,
            };
            match identity {
                Identity::Stored(original) => {
                    drop(rx);
                    return self.duplicate(meta, original);
                }
                Identity::Busy if self.in_unit => {
                    drop(rx);
                    let (dataset, sha) = (spec.name.clone(), sha);
                    return Err(super::unit::Restart::Busy { dataset, sha }.into());
                }
                Identity::Busy => {
                    // Another writer stores the same content right now: wait for it holding
                    // nothing, so no two writers ever wait on each other.
                    self.new_group()?;
                    self.store.wait_identity(&spec.name, &sha)?;
                    continue;
                }
                Identity::New => {}
            }
            self.store.begin_file()?;
            let row = new_file(
                &self.source,
                &self.session.worker_name,
                &meta,
                &path,
                FileState::Ingested,
                &now,
            );
            let id = self.store.insert_file(&row)?;
            let mut file = FileColumns::default();
            match self.store_records((&spec, &meta.rel), id, &rx, &mut file, again.take()) {
                Ok(Stream::End(end)) => break (id, file, end),
                Ok(Stream::Duplicate { original, sha256 }) => {
                    self.store.undo_file()?;
                    drop(rx);
                    meta.sha256 = Some(sha256);
                    return self.duplicate(meta, original);
                }
                Ok(Stream::Busy { sha256 }) => {
                    self.store.undo_file()?;
                    let dataset = spec.name.clone();
                    return Err(super::unit::Restart::Busy {
                        dataset,
                        sha: sha256,
                    }
                    .into());
                }
                Ok(Stream::Again(_)) if self.in_unit => {
                    self.store.undo_file()?;
                    return Err(super::unit::Restart::Schema.into());
                }
                Ok(Stream::Rekey(_, need)) if self.in_unit => {
                    self.store.undo_file()?;
                    return Err(super::unit::Restart::Rekey(spec, need).into());
                }
                Ok(Stream::Again(cols)) => {
                    self.store.undo_file()?;
                    self.new_group()?;
                    self.store.lock_schema(false)?;
                    again = Some(cols);
                }
                Ok(Stream::Rekey(cols, need)) => {
                    // The group so far commits; the re-key is a transaction of its own.
                    self.store.undo_file()?;
                    self.commit()?;
                    self.rekey(&spec, need)?;
                    self.begin()?;
                    again = Some(cols);
                }
                Err(e) => break (id, file, self.failed(e)?),
            }
        };
        drop(rx);
        if let Some((sha256, size)) = file.identity.take() {
            meta.sha256 = Some(sha256);
            meta.size = size;
        }
        let end = reconcile(end, &file);
        self.file_outcome(id, meta, file, end)
    }

    /// What becomes of a file whose records went into the group: kept as ingested, undone and
    /// quarantined, undone for the worker to try again, or undone and released (it changed).
    fn file_outcome(
        &mut self,
        id: i64,
        meta: FileMeta,
        mut file: FileColumns,
        end: End,
    ) -> Result<()> {
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
                    rejected: rejected + file.key_rejected,
                    duplicates: file.duplicates,
                    updated: file.updated,
                };
                self.ingested(id, meta, format, counts, file.warnings)?;
            }
            End::Rejected {
                format,
                reject,
                rejects,
                rejected,
            } => {
                self.store.undo_file()?;
                let why = Why {
                    reject,
                    rejects: &rejects,
                    rejected,
                };
                self.quarantine(meta, format.map(|f| f.id()), why)?;
            }
            End::Retry => {
                // The worker tries again and hands the file over anew.
                self.store.undo_file()?;
            }
            End::Changed => {
                self.store.undo_file()?;
                let placement = self.release(&meta);
                self.finished.push(Finished {
                    meta,
                    outcome: FileOutcome::Released,
                    placement,
                });
            }
        }
        Ok(())
    }

    /// Re-keys a table whose records are keyed otherwise than the dataset's key now. A conflict
    /// (records the new key cannot tell apart) refuses the dataset's files with the reason for
    /// as long as this process runs; nothing of the table changes.
    pub(super) fn rekey(&mut self, spec: &DatasetSpec, need: RekeyNeeded) -> Result<()> {
        let RekeyNeeded { table, def, from } = need;
        let dataset = spec.name.as_str();
        let what = match &from {
            Some(old) => format!(
                "its key changed from {} to {}",
                old.describe(),
                def.describe()
            ),
            None => format!("its key {} is new to table {table:?}", def.describe()),
        };
        tracing::info!(dataset, table, "re-keying the stored records: {what}");
        let version = spec.version.as_deref().and_then(|v| {
            spec.columns
                .iter()
                .find(|c| c.name == v)
                .map(|c| (c.name.as_str(), c.ty))
        });
        let session = self.session;
        let stop = || session.halted() || crate::shutdown::signalled();
        let how = crate::store::Rekey {
            def: &def,
            version,
            keep: None,
            apply: true,
        };
        let Some(done) = self.store.rekey(&table, &how, &stop)? else {
            anyhow::bail!(
                "re-keying table {table:?} was interrupted; nothing of it changed, and it is \
                 done again at the next start"
            );
        };
        match done.conflict {
            None => tracing::info!(
                dataset,
                table,
                records = done.records,
                rehashed = done.changed,
                "re-keyed the stored records: {what}"
            ),
            Some(c) => {
                let fix = if c.empty > 0 || c.unnormalized > 0 {
                    "records without a key, or with key values the new normalisation would \
                     change, must be fixed or removed in the table (or the key chosen otherwise)"
                        .to_string()
                } else {
                    format!(
                        "`ferry rekey {dataset} --keep first` (or `--keep latest`) keeps one \
                         record of each key and removes the others"
                    )
                };
                let message = format!(
                    "dataset {dataset:?}: {what}, but the stored records cannot take it: {}. \
                     Nothing is loaded into {table:?} until this is resolved: {fix}; then \
                     `ferry quarantine retry --all`",
                    c.describe()
                );
                tracing::warn!(dataset, table, "{message}");
                let reject = Reject::new(Kind::SchemaKeyConflict, Stage::Store, message);
                self.refused.insert((table, def.json()), reject);
            }
        }
        Ok(())
    }

    /// A file whose content this dataset already holds: recorded, nothing stored.
    pub(super) fn duplicate(&mut self, meta: FileMeta, original: i64) -> Result<()> {
        let (path, now) = (meta.rel.display(), now());
        let row = NewFile {
            duplicate_of: Some(original),
            ..new_file(
                &self.source,
                &self.session.worker_name,
                &meta,
                &path,
                FileState::Duplicate,
                &now,
            )
        };
        let id = self.store.insert_file(&row)?;
        let placement = self.archive(id, &meta, None)?;
        self.finished.push(Finished {
            meta,
            outcome: FileOutcome::Duplicate { id, original },
            placement,
        });
        Ok(())
    }

    /// A file whose records are stored: its ledger row completed, its rejected-records report
    /// reserved, its savepoint kept.
    fn ingested(
        &mut self,
        id: i64,
        meta: FileMeta,
        format: Format,
        counts: Counts,
        warnings: Vec<String>,
    ) -> Result<()> {
        self.store.update_file(
            id,
            &FileUpdate::Parsed {
                counts,
                format: format.id(),
                warnings: &warnings,
                parsed_at: &now(),
            },
        )?;
        let rejects = if counts.rejected > 0 {
            Some(self.rejects_report(id, &meta)?)
        } else {
            None
        };
        self.store.keep_file()?;
        let placement = self.archive(id, &meta, rejects)?;
        self.finished.push(Finished {
            meta,
            outcome: FileOutcome::Ingested {
                id,
                counts,
                warnings,
            },
            placement,
        });
        Ok(())
    }

    /// What a storage error means for the file: the writer stops on a machine error, anything
    /// else sets the file aside with the reason.
    fn failed(&self, e: anyhow::Error) -> Result<End> {
        Ok(match self.store.classify(&e) {
            Failure::Machine => return Err(e),
            Failure::Content(reject) => rejected(reject),
            Failure::Other => rejected(Reject::new(
                Kind::IoStore,
                Stage::Store,
                format!("storing the records failed: {e:#}"),
            )),
        })
    }

    /// Drains one file's stream into its dataset table. `again`: the columns to take first,
    /// when the file starts over.
    fn store_records(
        &mut self,
        (spec, rel): (&DatasetSpec, &crate::spool::RelPath),
        id: i64,
        rx: &Receiver<Msg>,
        file: &mut FileColumns,
        mut again: Option<Columns>,
    ) -> Result<Stream> {
        loop {
            let msg = match again.take() {
                Some(cols) => Ok(Msg::Columns(cols)),
                None => rx.recv(),
            };
            match msg {
                Ok(Msg::Columns(cols)) => match self.columns(spec, &cols, file) {
                    Ok(Ok(())) => {}
                    Ok(Err(r)) => return Ok(Stream::End(rejected(r))),
                    Err(e) if e.is::<Contended>() => return Ok(Stream::Again(cols)),
                    Err(e) if e.is::<RekeyNeeded>() => {
                        let need = e.downcast::<RekeyNeeded>().expect("checked");
                        return Ok(Stream::Rekey(cols, need));
                    }
                    Err(e) => return Err(e),
                },
                Ok(Msg::Rows(chunk)) => {
                    file.rows_seen = true;
                    let stored = self.store.insert_chunk(&ChunkInsert {
                        dataset: &spec.name,
                        table: &file.table,
                        columns: &file.cols,
                        key_cells: &file.key_cells,
                        rule: &file.rule,
                        file_id: id,
                        chunk: &chunk,
                    })?;
                    file.stored += stored.stored;
                    file.updated += stored.updated;
                    file.duplicates += stored.duplicates;
                    file.chunks += 1;
                    crate::faults::stored_chunk(rel, file.chunks);
                    if !stored.rejects.is_empty() {
                        self.store.add_rejects(id, &stored.rejects)?;
                        file.key_rejected += stored.rejects.len() as u64;
                        let bad = file
                            .bad
                            .get_or_insert_with(|| BadRecords::new(spec.max_bad));
                        for r in stored.rejects {
                            bad.record(r);
                        }
                        if bad.doomed {
                            // Over `max_bad_records` whatever follows.
                            let reject = bad.verdict(0, false).expect("doomed");
                            return Ok(Stream::End(too_many_bad(reject, bad)));
                        }
                    }
                }
                Ok(Msg::Rejects(r)) => {
                    file.rows_seen = true;
                    self.store.add_rejects(id, &r)?;
                    if !spec.key.is_empty() {
                        let bad = file
                            .bad
                            .get_or_insert_with(|| BadRecords::new(spec.max_bad));
                        for x in r {
                            bad.record(x);
                        }
                    }
                }
                Ok(Msg::Identity { sha256, size }) => {
                    match self.store.identity(&spec.name, &sha256)? {
                        Identity::Stored(original) => {
                            return Ok(Stream::Duplicate { original, sha256 })
                        }
                        // Only a unit's member learns its identity late (an OpenPGP file's
                        // plaintext): it starts over as a whole.
                        Identity::Busy => return Ok(Stream::Busy { sha256 }),
                        Identity::New => {}
                    }
                    self.store.update_file(
                        id,
                        &FileUpdate::Identity {
                            sha256: &sha256,
                            size,
                        },
                    )?;
                    file.identity = Some((sha256, size));
                }
                Ok(Msg::End(end)) => {
                    if let End::Done {
                        records,
                        rejected: stage_rejected,
                        ..
                    } = end
                    {
                        if let Some(r) = file.missing_columns(spec) {
                            return Ok(Stream::End(rejected(r)));
                        }
                        // Keys refused here count against `max_bad_records` with the stages'.
                        if let Some(bad) = file.bad.as_ref().filter(|_| file.key_rejected > 0) {
                            if let Some(reject) = bad.verdict(records + stage_rejected, true) {
                                return Ok(Stream::End(too_many_bad(reject, bad)));
                            }
                        }
                    }
                    return Ok(Stream::End(end));
                }
                Err(_) => {
                    return Ok(Stream::End(rejected(Reject::new(
                        Kind::Internal,
                        Stage::Parse,
                        "the worker stopped before finishing the file",
                    ))))
                }
            }
        }
    }

    /// Reserves `quarantine/<folders>/<name>.rejects.ndjson` for a file's rejected records and
    /// renders it.
    fn rejects_report(&mut self, id: i64, meta: &FileMeta) -> Result<(PathBuf, Vec<u8>)> {
        let q = spool::placed_dir(&self.session.cfg.spool.quarantine, &meta.rel);
        let to = self.allocate_sidecar(id, q, meta.rel.file_name(), REPORT)?;
        let rel = self.session.cfg.spool.relative(&to);
        self.store.update_file(id, &FileUpdate::RejectsAt(&rel))?;
        let row = self
            .store
            .file(id)?
            .context("the ledger row just written is missing")?;
        let body = rejects_ndjson(&row, &self.store.rejects(id, None)?);
        Ok((to, body))
    }

    /// Whether a path is some file's place already, on disk or reserved in the ledger.
    fn taken(&mut self, p: &std::path::Path) -> Result<bool> {
        Ok(p.symlink_metadata().is_ok()
            || self
                .store
                .place_taken(&self.session.cfg.spool.relative(p))?)
    }

    pub(super) fn quarantine(
        &mut self,
        meta: FileMeta,
        format: Option<&str>,
        why: Why,
    ) -> Result<()> {
        let Why {
            reject,
            rejects,
            rejected,
        } = why;
        let path = meta.rel.display();
        let now = now();
        let row = NewFile {
            format,
            error: Some(&reject),
            rejected,
            ..new_file(
                &self.source,
                &self.session.worker_name,
                &meta,
                &path,
                FileState::Quarantined,
                &now,
            )
        };
        let id = self.store.insert_file(&row)?;
        self.store.add_rejects(id, rejects)?;
        let dir = spool::placed_dir(&self.session.cfg.spool.quarantine, &meta.rel);
        let to = self.allocate(id, dir, meta.rel.file_name(), SIDECAR)?;
        let row = self
            .store
            .file(id)?
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
            outcome: FileOutcome::Quarantined { id, reject },
            placement: Some(placement),
        });
        Ok(())
    }

    /// Where an ingested or duplicate file goes: `archive/<date>/<path>`, after its rejects
    /// report if it has one. With `--keep` nothing moves, but the report is still written.
    pub(super) fn archive(
        &mut self,
        id: i64,
        meta: &FileMeta,
        rejects: Option<(PathBuf, Vec<u8>)>,
    ) -> Result<Option<Placement>> {
        let Source::Claimed(c) = &meta.source else {
            return Ok(rejects.map(|(to, body)| Placement::Report { to, body }));
        };
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let dir = spool::placed_dir(&self.session.cfg.spool.archive.join(day), &meta.rel);
        let to = self.allocate(id, dir, meta.rel.file_name(), 0)?;
        Ok(Some(Placement::Archive {
            from: c.path.clone(),
            to,
            rejects,
        }))
    }

    /// Reserves a final name for a file in the ledger: `dir/name` if free, else with `~<id>`
    /// before the extension; either cut to fit the filesystem with `reserve` bytes to spare for
    /// sidecars. A name ferry owns (`x.csv.reason.json`) always gets the `~<id>`, which takes it
    /// out of ferry's namespace. Names are unique because every reservation happens inside a
    /// write transaction, serialized across all ferry processes on this spool.
    fn allocate(&mut self, id: i64, dir: PathBuf, name: &OsStr, reserve: usize) -> Result<PathBuf> {
        let mut to = dir.join(fsio::fit_name(name, reserve));
        if spool::ferry_owns(name) || self.taken(&to)? {
            let suffixed = fsio::name_with_suffix(name, &format!("~{id}"));
            to = dir.join(fsio::fit_name(&suffixed, reserve));
        }
        let stored = self.session.cfg.spool.relative(&to);
        self.store.update_file(id, &FileUpdate::StoredAt(&stored))?;
        Ok(to)
    }

    /// Reserves `dir/<name><suffix>` for a file's sidecar (`<name>~<id><suffix>` when another
    /// file's sidecar has it).
    fn allocate_sidecar(
        &mut self,
        id: i64,
        dir: PathBuf,
        name: &OsStr,
        suffix: &str,
    ) -> Result<PathBuf> {
        let with = |n: &OsStr| {
            let mut n = fsio::fit_name(n, suffix.len());
            n.push(suffix);
            dir.join(n)
        };
        let to = with(name);
        if !self.taken(&to)? {
            return Ok(to);
        }
        let mut n = name.to_os_string();
        n.push(format!("~{id}"));
        Ok(with(&n))
    }
}

/// Why a file is quarantined: the reason, the first rejected records (when bad records caused
/// it), and how many records were rejected before it stopped.
pub(super) struct Why<'r> {
    pub reject: Reject,
    pub rejects: &'r [RecordReject],
    pub rejected: u64,
}

/// How a file's stream ended in the writer.
enum Stream {
    End(End),
    /// Another writer holds what the file needs and nothing of it is stored yet: it starts
    /// over in a new group with these columns.
    Again(Columns),
    /// The table must be re-keyed first; then the file starts over with these columns.
    Rekey(Columns, RekeyNeeded),
    /// Its identity, learned after its records, is a stored file's: undone, a duplicate.
    Duplicate {
        original: i64,
        sha256: String,
    },
    /// Another writer stores the same content right now (late identity): the unit starts over.
    Busy {
        sha256: String,
    },
}

/// A file rejected for a reason found while storing it.
fn rejected(reject: Reject) -> End {
    End::Rejected {
        format: None,
        reject,
        rejects: Vec::new(),
        rejected: 0,
    }
}

/// A file over `max_bad_records` once the keys it holds were checked.
fn too_many_bad(reject: Reject, bad: &BadRecords) -> End {
    let mut first = bad.first.clone();
    first.sort_by_key(|r| r.line);
    End::Rejected {
        format: None,
        reject,
        rejects: first,
        rejected: bad.count,
    }
}

/// Checks that every record the parser passed was stored, counted as a duplicate key, or
/// refused for its key: a file whose counts do not add up is quarantined rather than recorded as
/// loaded.
fn reconcile(end: End, file: &FileColumns) -> End {
    match end {
        End::Done { records, .. }
            if records != file.stored + file.duplicates + file.key_rejected =>
        {
            rejected(Reject::new(
                Kind::IoStore,
                Stage::Store,
                format!(
                    "the parser passed {records} records but {} were stored, {} counted as \
                     duplicate keys and {} refused for their key; nothing of this file was kept",
                    file.stored, file.duplicates, file.key_rejected
                ),
            ))
        }
        end => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    fn done(records: u64) -> End {
        End::Done {
            format: Format::Csv,
            records,
            rejected: 0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn counts_that_do_not_add_up_quarantine_the_file() {
        let mut file = FileColumns::default();
        file.stored = 2;
        file.duplicates = 1;
        assert!(matches!(reconcile(done(3), &file), End::Done { .. }));
        match reconcile(done(4), &file) {
            End::Rejected { reject, .. } => assert_eq!(reject.kind, Kind::IoStore),
            _ => panic!("a short count must not be recorded as loaded"),
        }
    }
}
