//! The ingest path shared by `ferry run` and `ferry watch`.
//!
//! ```text
//! submit(Work) ──bounded──► rayon workers ──bounded──► writer thread(s)
//!                          claim, hash, parse,         one store connection each:
//!                          stages → chunks             txn, ledger, records, then place
//! ```
//!
//! Callers decide *which* files to take (discovery) and feed them in as `Work`; the pipeline
//! does the rest and returns a `Summary` when the feed is closed. Back-pressure is the two bounded
//! channels: a slow writer stalls the workers, stalled workers stall `submit`.

mod dry;
pub mod place;
mod read;
pub mod stages;
mod turns;
pub(crate) mod unit;
pub mod worker;
pub mod writer;

use crate::config::{Config, DatasetSpec};
use crate::discover::Entry;
use crate::events::Summary;
use crate::format::ColumnKey;
use crate::format::Format;
use crate::record::Chunk;
use crate::reject::{RecordReject, Reject};
use crate::spool::{Claim, Liveness, Owner, RelPath};
use crate::store::keys::Rule;
use crate::typed::ColType;
use anyhow::Result;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Select, Sender};
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether input files are moved through the spool or left where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Claim by rename, then archive or quarantine (the normal case).
    Move,
    /// `--keep`: read in place, never move; content identity alone decides what is new.
    Keep,
    /// `run --dry-run`: read in place, judge each file as a run would, and change nothing —
    /// no ledger row, no table, no moved file (`dry`).
    DryRun,
}

/// One pipeline session: the config, where files come from and how, as whom, and its stop
/// flags. What the workers and the writer share; immutable once the pipeline starts, but for
/// the flags.
pub struct Session {
    pub cfg: Config,
    pub mode: Mode,
    /// The folder files are taken from (the incoming folder, or the folder given to `run`).
    pub source: PathBuf,
    /// This process's claim identity (`Move` mode only).
    pub owner: Option<Owner>,
    /// How owners prove they are alive (recovery asks it which owners are dead).
    pub liveness: Arc<dyn Liveness>,
    /// `host:pid`, recorded in the ledger.
    pub worker_name: String,
    /// Set when no new file may be claimed: shutdown began, or the writer failed.
    halt: AtomicBool,
    /// Set when a committed file could not be moved to its place (it waits in `processing/`
    /// for recovery, which `ferry watch` runs by restarting its pipeline).
    unplaced: AtomicBool,
    /// Set when `processing/` holds claims of a dead process for recovery to take over.
    leftovers: AtomicBool,
    /// Which of identical files goes first (`turns`).
    turns: Arc<turns::Turns>,
    /// Whether the summary lists every file's outcome (`ferry run`; not a daemon).
    pub list_files: bool,
}

impl Session {
    pub fn new(cfg: Config, mode: Mode, source: PathBuf) -> Result<Session> {
        // A dry run creates nothing and claims nothing, so it needs no proof of life either.
        let liveness: Arc<dyn Liveness> = if mode == Mode::DryRun {
            Arc::new(crate::spool::FileLocks::new(&cfg.spool))
        } else {
            cfg.spool.ensure()?;
            crate::store::liveness(&cfg.store, &cfg.spool)?
        };
        let owner = match mode {
            Mode::Move => Some(Owner::register(&*liveness)?),
            Mode::Keep | Mode::DryRun => None,
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Ok(Session {
            cfg,
            mode,
            source,
            owner,
            liveness,
            worker_name: format!("{host}:{}", std::process::id()),
            halt: AtomicBool::new(false),
            unplaced: AtomicBool::new(false),
            leftovers: AtomicBool::new(false),
            turns: Arc::default(),
            list_files: false,
        })
    }

    /// Stops workers from claiming anything new; files already claimed are finished.
    pub fn halt(&self) {
        self.halt.store(true, Ordering::SeqCst);
    }

    /// Whether nothing new may be claimed: a stop was asked for, the writer failed, or this
    /// process's claim identity no longer counts as alive (its lease lapsed).
    pub fn halted(&self) -> bool {
        self.halt.load(Ordering::SeqCst) || self.owner.as_ref().is_some_and(|o| !o.alive())
    }

    /// Notes that a committed file is still in `processing/`, waiting to be placed.
    pub fn mark_unplaced(&self) {
        self.unplaced.store(true, Ordering::SeqCst);
    }

    pub fn has_unplaced(&self) -> bool {
        self.unplaced.load(Ordering::SeqCst)
    }

    /// Notes that a dead process's claims wait in `processing/` (`ferry watch` restarts its
    /// pipeline so that recovery takes them over).
    pub fn mark_leftovers(&self) {
        self.leftovers.store(true, Ordering::SeqCst);
    }

    pub fn has_leftovers(&self) -> bool {
        self.leftovers.load(Ordering::SeqCst)
    }
}

/// A unit of work for the pipeline.
#[derive(Debug)]
pub enum Work {
    /// A ready entry in the source folder.
    Fresh(Entry),
    /// A file already under `processing/` and owned by this process (recovered, or retried).
    Claimed {
        claim: Claim,
        attempt: u32,
        retry_of: Option<i64>,
    },
}

/// Where a file is while the pipeline works on it.
#[derive(Debug, Clone)]
pub enum Source {
    Claimed(Claim),
    /// `--keep`: read in place at this path.
    Kept(PathBuf),
}

impl FileMeta {
    /// The dataset's name, for the ledger and the events.
    pub fn dataset(&self) -> Option<&str> {
        self.spec.as_ref().map(|s| s.name.as_str())
    }
}

impl Source {
    pub fn path(&self) -> &std::path::Path {
        match self {
            Source::Claimed(c) => &c.path,
            Source::Kept(p) => p,
        }
    }

    pub fn claim_id(&self) -> Option<&str> {
        match self {
            Source::Claimed(c) => Some(&c.id),
            Source::Kept(_) => None,
        }
    }
}

/// What the writer needs to know about a file besides its records.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub rel: RelPath,
    pub source: Source,
    pub size: u64,
    pub sha256: Option<String>,
    /// The file's dataset, resolved once when the file was taken (`None`: it matches none, with
    /// `strict_datasets`).
    pub spec: Option<Arc<DatasetSpec>>,
    pub received_at: String,
    pub received: Instant,
    pub hashed_at: Option<String>,
    pub attempt: u32,
    pub retry_of: Option<i64>,
    /// Its turn among files that could be identical, held until its outcome is committed.
    pub turn: Option<turns::Turn>,
}

/// A file handed from a worker to the writer.
pub struct Job {
    pub meta: FileMeta,
    pub body: Body,
}

pub enum Body {
    /// Rejected before any record was read (symlink, empty, unreadable content).
    Rejected(Reject),
    /// Records stream in; the writer drops the receiver to cancel (duplicate).
    Records(Receiver<Msg>),
    /// Could not be read at all and was not claimed: left where it is.
    Left(String),
    /// Changed since it was judged finished (before any byte was read): it goes back.
    Changed,
    /// A container (archive, OpenPGP file): its members follow as files of their own.
    Unit(Unit),
}

/// A container's members, handed over one at a time by the worker that opens it (`unit`).
pub struct Unit {
    pub wrap: crate::container::Wrap,
    /// `archive_members = "each"`: each member its own unit.
    pub each: bool,
    pub parts: Receiver<Part>,
    /// What the writer decided: the worker waits for it before it forgets the container.
    pub verdict: Sender<Verdict>,
    /// Where the members are written out; removed once the container is placed.
    pub dir: PathBuf,
}

/// What comes out of a container.
pub enum Part {
    Member(Box<Job>),
    /// The container cannot be opened (whole, or past the members already sent).
    Failed(Reject),
    /// Every member was sent.
    End(crate::container::Facts),
}

/// The writer's answer to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Nothing of it was kept (another writer held what a member needed): open it again.
    Again,
}

/// Where one of the columns a file's chunks carry comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSource {
    /// A declared column of a typed dataset: its name is the table column's.
    Declared(String),
    /// A column of the file itself: the writer finds (or gives) its table column.
    File(ColumnKey),
}

impl ColumnSource {
    /// The name as the dataset's contract or the file says it.
    pub fn name(&self) -> &str {
        match self {
            ColumnSource::Declared(n) => n,
            ColumnSource::File(k) => &k.name,
        }
    }
}

/// One of the columns of a file's chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub source: ColumnSource,
    pub ty: ColType,
}

/// A file's columns so far, as its chunks carry them.
#[derive(Debug, Clone)]
pub struct Columns {
    pub defs: Vec<ColumnDef>,
    /// Per key column of the dataset: the chunk cell holding it, once the file has shown it.
    pub key: Vec<Option<usize>>,
}

/// The stream of one file's records, ending with `End`.
pub enum Msg {
    /// The file's columns so far (grows for JSON); precedes rows that use them.
    Columns(Columns),
    Rows(Chunk),
    /// Records set aside within the dataset's `max_bad_records`.
    Rejects(Vec<RecordReject>),
    /// The file's identity, known only after its records (an OpenPGP file's plaintext, parsed
    /// while it is decrypted): the writer judges a duplicate now, before `End`.
    Identity {
        sha256: String,
        size: u64,
    },
    End(End),
}

pub enum End {
    Done {
        format: Format,
        /// Records that passed the stages (some may still be duplicate keys).
        records: u64,
        /// Records rejected within the threshold.
        rejected: u64,
        /// What the parser passed over (blank lines), recorded as warnings on the file.
        notes: Vec<String>,
    },
    Rejected {
        format: Option<Format>,
        reject: Reject,
        /// The first rejected records, when bad records caused it.
        rejects: Vec<RecordReject>,
        /// How many records were rejected before the file stopped.
        rejected: u64,
    },
    /// The file changed while it was read: not finished after all.
    Changed,
    /// Reading failed for a reason outside the content; the worker reads it again.
    Retry,
}

/// What a record whose key is stored does, with the version's cell in this file's chunks.
pub(crate) fn key_rule(spec: &DatasetSpec, cols: &Columns) -> Rule {
    let version = spec.version.as_ref().map(|v| {
        let at = cols
            .defs
            .iter()
            .position(|d| matches!(&d.source, ColumnSource::Declared(n) if n == v));
        let ty = at.map_or(ColType::Int, |i| cols.defs[i].ty);
        (at, ty)
    });
    Rule {
        on_key: spec.on_key,
        version,
        key_names: spec.key.clone(),
    }
}

/// Where workers hand files to the writers. Files of datasets with a record key go to the
/// first writer only: a table's keys are decided by one writer at a time (its key turn, held to
/// the commit), so a second writer of the same process would only wait for the first, and
/// build a second copy of the key index. Everything else goes to whichever writer is free.
#[derive(Clone)]
pub struct Jobs {
    any: Sender<Job>,
    keyed: Option<Sender<Job>>,
}

impl Jobs {
    /// Hands a file over; false only when the writers are gone (they report their own error).
    pub fn send(&self, job: Job) -> bool {
        let keyed = job.meta.spec.as_ref().is_some_and(|s| !s.key.is_empty());
        match &self.keyed {
            Some(k) if keyed => k.send(job).is_ok(),
            _ => self.any.send(job).is_ok(),
        }
    }
}

/// What one writer takes files from: the shared queue, and for the first of several writers,
/// the queue of keyed files too.
pub struct Inbox {
    queues: Vec<Receiver<Job>>,
}

impl Inbox {
    /// The next file; `Disconnected` once every worker has hung up and the queues are empty.
    pub fn recv(&mut self) -> Result<Job, RecvTimeoutError> {
        self.recv_until(None)
    }

    /// The next file arriving before `deadline`.
    pub fn recv_timeout(&mut self, wait: Duration) -> Result<Job, RecvTimeoutError> {
        self.recv_until(Some(Instant::now() + wait))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Job, RecvTimeoutError> {
        while !self.queues.is_empty() {
            let mut sel = Select::new();
            for q in &self.queues {
                sel.recv(q);
            }
            let op = match deadline {
                None => sel.select(),
                Some(d) => sel
                    .select_deadline(d)
                    .map_err(|_| RecvTimeoutError::Timeout)?,
            };
            let i = op.index();
            match op.recv(&self.queues[i]) {
                Ok(job) => return Ok(job),
                // That queue is closed and empty: wait on the others.
                Err(_) => {
                    self.queues.remove(i);
                }
            }
        }
        Err(RecvTimeoutError::Disconnected)
    }
}

/// The running pipeline.
pub struct Pipeline {
    work: Option<Sender<(Work, Option<turns::Turn>)>>,
    session: Arc<Session>,
    feeder: Option<JoinHandle<()>>,
    writers: Vec<JoinHandle<(Summary, Result<()>)>>,
    /// Held while a file gets its turn and is queued: files are queued in turn order even
    /// when several threads submit (parallel downloads). Otherwise a worker could wait for an
    /// earlier turn still held by a submitter that waits for room in the full queue — which
    /// the waiting workers never make.
    submitting: std::sync::Mutex<()>,
}

/// Files waiting for a worker. Small: discovery should not run far ahead of claiming.
const WORK_QUEUE: usize = 64;

impl Pipeline {
    pub fn start(session: Arc<Session>) -> Result<Pipeline> {
        let owner = session.owner.as_ref().map(|o| o.token());
        let (work_tx, work_rx) = bounded::<(Work, Option<turns::Turn>)>(WORK_QUEUE);
        let writers = if session.mode == Mode::DryRun {
            1
        } else {
            session.cfg.store.writers()
        };
        let (any_tx, any_rx) = bounded::<Job>(session.cfg.workers * 2);
        let (keyed_tx, mut keyed_rx) = match writers {
            1 => (None, None),
            _ => {
                let (tx, rx) = bounded::<Job>(session.cfg.workers * 2);
                (Some(tx), Some(rx))
            }
        };
        let jobs = Jobs {
            any: any_tx,
            keyed: keyed_tx,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(session.cfg.workers)
            .thread_name(|i| format!("ferry-worker-{i}"))
            .build()?;
        let mut handles = Vec::with_capacity(writers);
        if session.mode == Mode::DryRun {
            let at = session.cfg.store.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("ferry-judge".into())
                    .spawn(move || dry::judge(&at, any_rx))?,
            );
        } else {
            // Every connection is opened before any thread starts: a store that cannot be
            // reached fails the start, not one writer of several.
            let stores = (0..writers)
                .map(|_| crate::store::open_ingest(&session.cfg.store, owner))
                .collect::<Result<Vec<_>>>()?;
            for (i, store) in stores.into_iter().enumerate() {
                let mut queues = vec![any_rx.clone()];
                queues.extend(keyed_rx.take());
                let inbox = Inbox { queues };
                let wsession = session.clone();
                let name = if writers == 1 {
                    "ferry-writer".to_string()
                } else {
                    format!("ferry-writer-{i}")
                };
                handles.push(
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || writer::run(&wsession, store, inbox))?,
                );
            }
            drop(any_rx);
        }
        let fsession = session.clone();
        let feeder = std::thread::Builder::new()
            .name("ferry-feeder".into())
            .spawn(move || {
                pool.install(|| {
                    work_rx
                        .into_iter()
                        .par_bridge()
                        .for_each_with(jobs, |jobs, (w, turn)| {
                            worker::process(&fsession, w, turn, jobs)
                        })
                })
            })?;
        Ok(Pipeline {
            work: Some(work_tx),
            session,
            feeder: Some(feeder),
            writers: handles,
            submitting: std::sync::Mutex::new(()),
        })
    }

    /// Recovers `processing/` (see `place::recover`): files caught in more than one crash are
    /// processed first, one pipeline each, so a crash names the file that causes it; then a
    /// pipeline starts, fed the rest of what was recovered. Returns it, what the lone files came
    /// to, and how many files were recovered.
    pub fn start_after_recovery(session: Arc<Session>) -> Result<(Pipeline, Summary, usize)> {
        let recovered = place::recover(&session)?;
        let n = recovered.len();
        let (isolated, rest) = place::isolate(recovered, session.cfg.max_attempts);
        let mut summary = Summary::default();
        for w in isolated {
            let alone = Pipeline::start(session.clone())?;
            alone.submit(w);
            summary.absorb(alone.finish()?);
        }
        let pipeline = Pipeline::start(session)?;
        for w in rest {
            pipeline.submit(w);
        }
        Ok((pipeline, summary, n))
    }

    /// The turn of a file among those that could be identical to it (`turns`).
    fn turn_for(&self, w: &Work) -> Option<turns::Turn> {
        let (rel, size) = match w {
            Work::Fresh(e) => (&e.rel, e.stamp.size),
            Work::Claimed { claim, .. } => (
                &claim.rel,
                claim.path.symlink_metadata().map_or(0, |m| m.len()),
            ),
        };
        let dataset = self.session.cfg.dataset_for(rel)?;
        Some(self.session.turns.enter(&dataset.name, size))
    }

    /// Queues work, waiting while the queue is full. False if the pipeline has stopped (the
    /// writer failed); `finish` then says why.
    pub fn submit(&self, w: Work) -> bool {
        self.submit_unless(w, || false)
    }

    /// Like `submit`, but gives up (false) when `stop` says so while the queue is full, so a
    /// daemon feeding a storm of files still sees a shutdown request promptly.
    pub fn submit_unless(&self, w: Work, stop: impl Fn() -> bool) -> bool {
        let Some(tx) = self.work.as_ref() else {
            return false;
        };
        // Turns are handed out here, in the order files are queued.
        let _order = self.submitting.lock().unwrap_or_else(|e| e.into_inner());
        let turn = self.turn_for(&w);
        let mut w = (w, turn);
        loop {
            match tx.send_timeout(w, std::time::Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if stop() {
                        return false;
                    }
                    w = back;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// Work queued and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.work.as_ref().map_or(0, |tx| tx.len())
    }

    /// Closes the feed, waits for every file in flight, and returns what was done.
    pub fn finish(self) -> Result<Summary> {
        let (summary, r) = self.finish_keeping();
        r.map(|()| summary)
    }

    /// Like `finish`, but keeps what was committed when the writer stopped on an error.
    pub fn finish_keeping(mut self) -> (Summary, Result<()>) {
        drop(self.work.take());
        if let Some(f) = self.feeder.take() {
            if f.join().is_err() {
                return (
                    Summary::default(),
                    Err(anyhow::anyhow!("a worker thread panicked")),
                );
            }
        }
        // Every writer's committed files count, whichever stopped first; the first error
        // (in writer order) is the one reported.
        let mut summary = Summary::default();
        let mut result = Ok(());
        for w in self.writers.drain(..) {
            let (s, r) = w.join().unwrap_or_else(|_| {
                (
                    Summary::default(),
                    Err(anyhow::anyhow!("a writer thread panicked")),
                )
            });
            summary.absorb(s);
            if result.is_ok() {
                result = r;
            }
        }
        (summary, result)
    }
}
