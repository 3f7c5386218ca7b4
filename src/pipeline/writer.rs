//! The writer: the one thread that writes to SQLite.
//!
//! It takes files in the order workers hand them over and, inside one write transaction,
//! checks identity (duplicate? already seen with `--keep`?), inserts the ledger row and the
//! records under a savepoint (rolled back if the file turns out bad halfway), and allocates the
//! file's final name. Files are grouped: the transaction commits when no file arrives within a
//! short linger, or when it is old or big enough. Only after `COMMIT` returns are files moved
//! and their events emitted.

use super::place::{reason_json, Placement};
use super::{Body, Ctx, End, FileMeta, Job, Mode, Msg, Source};
use crate::events::{Event, Summary};
use crate::ledger::tables::{ColumnDef, Tables};
use crate::ledger::{self, Ledger, NewFile, State};
use crate::reject::{Kind, Reject, Stage};
use crate::spool;
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// With a transaction open and nothing queued, wait this long for more before committing.
const LINGER: Duration = Duration::from_millis(2);
/// Commit at least this often while files keep coming (bounds latency).
const MAX_AGE: Duration = Duration::from_millis(50);
/// Commit after this many files or input bytes (bounds the WAL and the work redone after a crash).
const MAX_FILES: usize = 2000;
const MAX_BYTES: u64 = 512 << 20;

/// What a file came to, kept until its transaction commits.
enum Outcome {
    Ingested { id: i64, records: u64 },
    Duplicate { id: i64, original: i64 },
    Quarantined { id: i64, reject: Reject },
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
            return Err(e.context("committing to the ledger"));
        }
        for f in std::mem::take(&mut self.finished) {
            if let Some(p) = &f.placement {
                match p.apply() {
                    Ok(()) => {
                        if let Source::Claimed(c) = &f.meta.source {
                            spool::tidy_claim(&self.ctx.spool, &c.id);
                        }
                    }
                    Err(e) => tracing::error!(
                        path = %f.meta.rel.display(),
                        error = %e,
                        "cannot move the file to its place; it stays in processing/ and is placed on the next start"
                    ),
                }
            }
            self.emit(&f);
        }
        Ok(())
    }

    fn emit(&mut self, f: &Finished) {
        let path = f.meta.rel.display();
        let m = &f.meta;
        let event = match &f.outcome {
            Outcome::Ingested { id, records } => Event::Ingested {
                path: &path,
                id: *id,
                dataset: &m.dataset,
                records: *records,
                rejected: 0,
                bytes: m.size,
                latency: m.received.elapsed(),
            },
            Outcome::Duplicate { id, original } => Event::Duplicate {
                path: &path,
                id: *id,
                original: *original,
                dataset: &m.dataset,
                bytes: m.size,
            },
            Outcome::Quarantined { id, reject } => Event::Quarantined {
                path: &path,
                id: *id,
                dataset: Some(&m.dataset),
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
            Body::Rejected(reject) => {
                self.begin()?;
                self.count(&meta);
                if self.unchanged(&meta)? {
                    return Ok(());
                }
                self.quarantine(meta, None, reject)
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
            dataset: Some(&meta.dataset),
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
        if let Some(original) = self.ledger.ingested_with(&sha)? {
            drop(rx);
            let id = self.ledger.insert(&NewFile {
                duplicate_of: Some(original),
                ..self.row(&meta, &path, State::Duplicate, &now)
            })?;
            let placement = self.archive(id, &meta)?;
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
        let end = match self.store(&meta.dataset, id, &rx, &now) {
            Ok(end) => end,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => End::Rejected {
                format: None,
                reject: Reject::new(
                    Kind::IoStore,
                    Stage::Store,
                    format!("storing the records failed: {e:#}"),
                ),
            },
        };
        drop(rx);
        match end {
            End::Done { format, records } => {
                self.ledger.set_records(id, records, 0, &ledger::now())?;
                self.ledger.conn.execute(
                    "UPDATE files SET format = ?2 WHERE id = ?1",
                    (id, format.id()),
                )?;
                self.ledger.conn.execute_batch("RELEASE file")?;
                let placement = self.archive(id, &meta)?;
                self.finished.push(Finished {
                    meta,
                    outcome: Outcome::Ingested { id, records },
                    placement,
                });
            }
            End::Rejected { format, reject } => {
                self.undo_file()?;
                self.quarantine(meta, format.map(|f| f.id()), reject)?;
            }
            End::Changed => {
                self.undo_file()?;
                let placement = match &meta.source {
                    Source::Claimed(c) => Some(Placement::Release {
                        from: c.path.clone(),
                        to: self.ctx.source.join(meta.rel.as_path()),
                    }),
                    Source::Kept(_) => None,
                };
                self.finished.push(Finished {
                    meta,
                    outcome: Outcome::Released,
                    placement,
                });
            }
        }
        Ok(())
    }

    /// Rolls back everything the current file did (rows, ledger row, added columns).
    fn undo_file(&mut self) -> Result<()> {
        self.ledger
            .conn
            .execute_batch("ROLLBACK TO file; RELEASE file")?;
        self.tables.invalidate();
        Ok(())
    }

    /// Drains one file's stream into its dataset table.
    fn store(&mut self, dataset: &str, id: i64, rx: &Receiver<Msg>, now: &str) -> Result<End> {
        let mut columns: Vec<String> = Vec::new();
        loop {
            match rx.recv() {
                Ok(Msg::Columns(cols)) => {
                    let defs: Vec<ColumnDef> = cols
                        .iter()
                        .map(|c| ColumnDef {
                            name: c.clone(),
                            sql_type: "TEXT",
                        })
                        .collect();
                    self.tables.ensure(&self.ledger.conn, dataset, &defs, now)?;
                    columns = cols;
                }
                Ok(Msg::Rows(chunk)) => {
                    self.tables
                        .insert(&self.ledger.conn, dataset, &columns, id, &chunk)?;
                }
                Ok(Msg::End(end)) => return Ok(end),
                Err(_) => {
                    return Ok(End::Rejected {
                        format: None,
                        reject: Reject::new(
                            Kind::Internal,
                            Stage::Parse,
                            "the worker stopped before finishing the file",
                        ),
                    })
                }
            }
        }
    }

    fn quarantine(&mut self, meta: FileMeta, format: Option<&str>, reject: Reject) -> Result<()> {
        let path = meta.rel.display();
        let now = ledger::now();
        let id = self.ledger.insert(&NewFile {
            format,
            error: Some(&reject),
            ..self.row(&meta, &path, State::Quarantined, &now)
        })?;
        let name = meta.rel.file_name().to_os_string();
        let to = self.allocate(id, self.ctx.spool.quarantine.join(&name))?;
        let row = self
            .ledger
            .get(id)?
            .context("the ledger row just written is missing")?;
        let placement = Placement::Quarantine {
            from: meta.source.path().to_path_buf(),
            to,
            reason: reason_json(&row),
            copy: self.ctx.mode == Mode::Keep,
        };
        self.finished.push(Finished {
            meta,
            outcome: Outcome::Quarantined { id, reject },
            placement: Some(placement),
        });
        Ok(())
    }

    /// Where an ingested or duplicate file goes: `archive/<date>/<path>`. Nothing moves with
    /// `--keep`.
    fn archive(&mut self, id: i64, meta: &FileMeta) -> Result<Option<Placement>> {
        let Source::Claimed(c) = &meta.source else {
            return Ok(None);
        };
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let want = self.ctx.spool.archive.join(day).join(meta.rel.as_path());
        let to = self.allocate(id, want)?;
        Ok(Some(Placement::Archive {
            from: c.path.clone(),
            to,
        }))
    }

    /// Reserves a final name for a file in the ledger: `want` if free, else with `~<id>`
    /// before the extension. Names are unique because every reservation happens inside a write
    /// transaction, serialized across all ferry processes on this spool.
    fn allocate(&mut self, id: i64, want: PathBuf) -> Result<PathBuf> {
        let mut to = want;
        let mut stored = self.ctx.spool.relative(&to);
        if self.ledger.stored_at_taken(&stored)? || to.symlink_metadata().is_ok() {
            let name =
                spool::name_with_suffix(to.file_name().unwrap_or_default(), &format!("~{id}"));
            to = to.with_file_name(name);
            stored = self.ctx.spool.relative(&to);
        }
        self.ledger.set_stored_at(id, &stored)?;
        Ok(to)
    }
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
