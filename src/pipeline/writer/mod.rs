//! A writer: a thread with its own connection to the store. SQLite has one (it lets one
//! transaction write at a time); PostgreSQL `[store] writers` of them, which share the files
//! as several processes would (see `Jobs` for where keyed files go).
//!
//! It takes files in the order workers hand them over and, inside one group transaction,
//! checks identity (duplicate? already seen with `--keep`?), stores the ledger row and the
//! records under a savepoint per file (undone if the file turns out bad halfway), and reserves
//! the file's final name. Files are grouped: the transaction commits when no file arrives within
//! a short linger, or when it is old or big enough. Only after the commit returns are files
//! moved and their events emitted.
//!
//! This file is the transaction loop; `file` decides one file's outcome, `columns` where its
//! columns go. The store (`store::Ingest`) does the storing, and deduplicates record keys.

mod columns;
mod file;
mod unit;

use super::place::Placement;
use super::{Body, FileMeta, Inbox, Job, Session, Source};
use crate::events::{Event, Ingested, Summary};
use crate::fsio;
use crate::reject::Reject;
use crate::store::{Counts, Ingest};
use anyhow::Result;
use crossbeam_channel::RecvTimeoutError;
use std::time::{Duration, Instant};

/// With a transaction open and nothing queued, wait this long for more before committing.
const LINGER: Duration = Duration::from_millis(2);
/// Commit at least this often while files keep coming (bounds latency). Each commit waits for
/// the store's log to reach the disk and, with record keys, for the key index's upkeep, while a
/// keyed table's files are stored by one writer: at 50 ms a keyed 6.8 M-row load spent a tenth
/// of its time committing (PostgreSQL).
const MAX_AGE: Duration = Duration::from_millis(250);
/// Commit after this many files or input bytes (bounds the WAL and the work redone after a crash).
const MAX_FILES: usize = 2000;
const MAX_BYTES: u64 = 512 << 20;
/// With keyed records stored and nothing to do for this long, the writer tends the key index
/// (its tail written as a run, runs merged); a run does it when its files are done.
const IDLE_KEYS: Duration = Duration::from_secs(5);

/// What a file came to, kept until its transaction commits.
enum FileOutcome {
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
    /// A container whose members all finished (each has its own outcome).
    Unpacked {
        id: i64,
        members: u64,
    },
    Unchanged,
    Released,
}

struct Finished {
    meta: FileMeta,
    outcome: FileOutcome,
    placement: Option<Placement>,
}

struct Txn {
    started: Instant,
    files: usize,
    bytes: u64,
}

struct Writer<'a> {
    session: &'a Session,
    store: Box<dyn Ingest>,
    txn: Option<Txn>,
    finished: Vec<Finished>,
    summary: Summary,
    /// The folder files are taken from, as recorded in the ledger.
    source: String,
    /// Keyed records were stored since the key index was last tended.
    keys_dirty: bool,
    /// Keyed files held until their turn (files of a keyed dataset are stored in the order they
    /// were found).
    order: crate::pipeline::turns::InTurn,
    /// Tables whose records cannot take a dataset's new key (table and key definition): its
    /// files are refused with the reason.
    refused: std::collections::HashMap<(String, String), Reject>,
    /// A container's members are being stored as one unit: what needs a new group starts the
    /// container over instead (`unit::Restart`).
    in_unit: bool,
    /// Folders containers were unpacked into, removed once the group's files are placed.
    unpacked: Vec<std::path::PathBuf>,
}

/// Runs until every worker has hung up; returns what was committed, and the error that stopped
/// it early, if one did.
pub fn run(session: &Session, store: Box<dyn Ingest>, mut jobs: Inbox) -> (Summary, Result<()>) {
    let mut w = Writer {
        session,
        store,
        txn: None,
        finished: Vec::new(),
        summary: Summary {
            list_files: session.list_files,
            ..Summary::default()
        },
        source: session.source.display().to_string(),
        keys_dirty: false,
        order: Default::default(),
        refused: Default::default(),
        in_unit: false,
        unpacked: Vec::new(),
    };
    let r = w.run(&mut jobs);
    if r.is_err() {
        // Nothing of the open transaction happened; its files stay in processing/ and are
        // redone by recovery. Stop claiming more.
        session.halt();
        w.store.rollback();
    }
    (w.summary, r)
}

impl Writer<'_> {
    fn run(&mut self, jobs: &mut Inbox) -> Result<()> {
        loop {
            let job = match self.order.next() {
                Some(j) => j,
                None => match self.receive(jobs)? {
                    Some(j) => match self.order.admit(j) {
                        Some(j) => j,
                        None => continue,
                    },
                    None if self.order.holding() => {
                        // The feed is over: nothing earlier can come any more.
                        self.order.any().expect("holding")
                    }
                    None => return Ok(()),
                },
            };
            self.keys_dirty |= job.meta.spec.as_ref().is_some_and(|s| !s.key.is_empty());
            self.handle(job)?;
            if let Some(t) = &self.txn {
                if t.files >= MAX_FILES || t.bytes >= MAX_BYTES || t.started.elapsed() >= MAX_AGE {
                    self.commit()?;
                }
            }
        }
    }

    /// The next file from the workers, committing the group when none comes within the linger
    /// and tending the key index when idle; `None` when every worker has hung up (after the
    /// last commit). While keyed files are held for their turn, it returns every few
    /// milliseconds (`Ok(None)` is never returned then) so that turns ended elsewhere are seen.
    fn receive(&mut self, jobs: &mut Inbox) -> Result<Option<Job>> {
        const HOLDING: Duration = Duration::from_millis(5);
        loop {
            let holding = self.order.holding();
            let got = match &self.txn {
                None if holding => jobs.recv_timeout(HOLDING),
                None if self.keys_dirty => jobs.recv_timeout(IDLE_KEYS),
                None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => {
                    let wait = LINGER.min(MAX_AGE.saturating_sub(t.started.elapsed()));
                    jobs.recv_timeout(if holding { wait.min(HOLDING) } else { wait })
                }
            };
            match got {
                Ok(j) => return Ok(Some(j)),
                Err(RecvTimeoutError::Timeout) => {
                    if self.txn.is_some() {
                        // Nothing came within the linger.
                        self.commit()?;
                    } else if !holding {
                        self.tend_keys();
                    }
                    if let Some(j) = self.order.next() {
                        return Ok(Some(j));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if !holding {
                        self.commit()?;
                        self.tend_keys();
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Writes the key indexes' tails as runs and merges runs (stopping at once if a stop is
    /// asked for). Its failure loses nothing — the tail stays in the tables, read by the next
    /// writer — so it is logged, not the writer's end.
    fn tend_keys(&mut self) {
        if !std::mem::take(&mut self.keys_dirty) {
            return;
        }
        let session = self.session;
        let stop = || session.halted() || crate::shutdown::signalled();
        if let Err(e) = self.store.finish_keys(&stop) {
            tracing::warn!("tending the record key index failed (nothing is lost): {e:#}");
        }
    }

    fn begin(&mut self) -> Result<()> {
        if self.txn.is_none() {
            self.store.begin()?;
            self.txn = Some(Txn {
                started: Instant::now(),
                files: 0,
                bytes: 0,
            });
        }
        Ok(())
    }

    /// Commits what the group holds and opens a new one (a file about to wait for another
    /// writer must hold nothing while it waits).
    fn new_group(&mut self) -> Result<()> {
        self.commit()?;
        self.begin()
    }

    fn commit(&mut self) -> Result<()> {
        if self.txn.take().is_none() {
            return Ok(());
        }
        self.store.commit()?;
        self.order.committed();
        // The group's files mostly go to one folder: it is walked once.
        let mut folders = fsio::beneath::Folders::new(&self.session.cfg.spool.root);
        for f in std::mem::take(&mut self.finished) {
            if let Some(p) = &f.placement {
                self.apply(&f.meta, p, &mut folders);
            }
            self.emit(&f);
        }
        for dir in std::mem::take(&mut self.unpacked) {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    /// Puts a file where its outcome says; a failure leaves it for recovery (and is counted).
    fn apply(&mut self, meta: &FileMeta, p: &Placement, folders: &mut fsio::beneath::Folders) {
        match p.apply(folders) {
            Ok(()) => {
                if let Source::Claimed(c) = &meta.source {
                    c.tidy(&self.session.cfg.spool);
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
                self.session.mark_unplaced();
            }
        }
    }

    /// Where a file that is not finished after all goes: back where it was found (under another
    /// name if a new file took its name meanwhile). Nothing moves with `--keep`.
    fn release(&self, meta: &FileMeta) -> Option<Placement> {
        let Source::Claimed(c) = &meta.source else {
            return None;
        };
        let mut to = self.session.source.join(meta.rel.as_path());
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
            FileOutcome::Ingested {
                id,
                counts,
                warnings,
            } => Event::Ingested(Ingested {
                path: &path,
                id: *id,
                dataset: m.dataset().unwrap_or_default(),
                records: counts.stored,
                rejected: counts.rejected,
                duplicate_records: counts.duplicates,
                updated_records: counts.updated,
                warnings,
                bytes: m.size,
                latency: m.received.elapsed(),
            }),
            FileOutcome::Duplicate { id, original } => Event::Duplicate {
                path: &path,
                id: *id,
                original: *original,
                dataset: m.dataset().unwrap_or_default(),
                bytes: m.size,
            },
            FileOutcome::Quarantined { id, reject } => Event::Quarantined {
                path: &path,
                id: *id,
                dataset: m.dataset(),
                reject,
                bytes: m.size,
            },
            FileOutcome::Unpacked { id, members } => Event::Unpacked {
                path: &path,
                id: *id,
                dataset: m.dataset().unwrap_or_default(),
                members: *members,
                bytes: m.size,
            },
            FileOutcome::Unchanged => Event::Unchanged { path: &path },
            FileOutcome::Released => Event::Released { path: &path },
        };
        event.emit(&mut self.summary);
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
                Ok(())
            }
            Body::Changed => {
                // Nothing was read or recorded: put it back at once.
                if let Some(p) = self.release(&meta) {
                    let mut folders = fsio::beneath::Folders::new(&self.session.cfg.spool.root);
                    self.apply(&meta, &p, &mut folders);
                }
                self.emit(&Finished {
                    meta,
                    outcome: FileOutcome::Released,
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
                let why = file::Why {
                    reject,
                    rejects: &[],
                    rejected: 0,
                };
                self.quarantine(meta, None, why)
            }
            Body::Records(rx) => {
                self.begin()?;
                self.count(&meta);
                if self.unchanged(&meta)? {
                    return Ok(());
                }
                self.records(meta, rx)
            }
            Body::Unit(unit) => {
                self.begin()?;
                self.count(&meta);
                if self.unchanged(&meta)? {
                    let _ = unit.verdict.send(crate::pipeline::Verdict::Done);
                    self.unpacked.push(unit.dir);
                    return Ok(());
                }
                self.unit(meta, unit)
            }
        }
    }

    fn count(&mut self, meta: &FileMeta) {
        if let Some(t) = &mut self.txn {
            t.files += 1;
            t.bytes += meta.size;
        }
    }
}
