//! A worker takes one file from ready to a stream of chunks for the writer.
//!
//! Steps: open the file where it was found (so a file we may not read is left in place, not
//! claimed), claim it by rename, check it is still what readiness judged finished (size and
//! mtime), hash it, open its format, parse it into chunks (the two passes over the bytes are
//! `read`'s). A file whose size, mtime or content changed while it was read is not finished
//! after all: the writer puts it back.
//!
//! Workers never write to SQLite and never move a file after claiming it.

use super::read;
use super::stages::Stages;
use super::turns::Turn;
use super::{Body, End, FileMeta, Job, Jobs, Mode, Msg, Session, Source, Work};
use crate::discover::{marker_for, Entry, EntryKind, Stamp};
use crate::faults;
use crate::format::{self, Format, Stop};
use crate::fsio::open_nofollow;
use crate::reject::{Kind, Reject, Stage};
use crate::spool::{Claim, RelPath};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Chunks buffered per big file between its worker and the writer.
pub(super) const CHUNKS_IN_FLIGHT: usize = 4;

pub fn process(session: &Session, work: Work, turn: Option<Turn>, jobs: &Jobs) {
    let rel = match &work {
        Work::Fresh(e) => e.rel.display(),
        Work::Claimed { claim, .. } => claim.rel.display(),
    };
    let span = tracing::info_span!("file", path = %rel);
    let _guard = span.enter();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
        Work::Fresh(entry) => fresh(session, entry, turn, jobs),
        Work::Claimed {
            claim,
            attempt,
            retry_of,
        } => claimed(session, claim, (attempt, retry_of), turn, jobs),
    }));
    if outcome.is_err() {
        tracing::error!(
            "a worker panicked on this file; it stays in processing/ for the next start"
        );
    }
}

pub(super) fn meta_for(
    session: &Session,
    rel: &RelPath,
    source: Source,
    size: u64,
    attempt: u32,
    retry_of: Option<i64>,
) -> FileMeta {
    FileMeta {
        rel: rel.clone(),
        source,
        size,
        sha256: None,
        spec: session.cfg.dataset_for(rel),
        received_at: crate::store::now(),
        received: Instant::now(),
        hashed_at: None,
        attempt,
        retry_of,
        turn: None,
    }
}

pub(super) fn send(jobs: &Jobs, meta: FileMeta, body: Body) {
    // Fails only if the writer is gone; it reports its own error.
    jobs.send(Job { meta, body });
}

/// Takes an entry that is not a regular file (symlink, FIFO, …): never read, always quarantined.
fn not_a_file(session: &Session, entry: &Entry, kind: Kind, jobs: &Jobs) {
    let source = match session.mode {
        Mode::Keep | Mode::DryRun => Source::Kept(entry.path.clone()),
        Mode::Move => {
            let owner = session.owner.as_ref().expect("move mode has an owner");
            match owner.claim(&session.cfg.spool, &entry.path, &entry.rel) {
                Ok(Some(c)) => Source::Claimed(c),
                Ok(None) => return,
                Err(e) => {
                    let why = format!("cannot claim: {e}");
                    let meta = meta_for(
                        session,
                        &entry.rel,
                        Source::Kept(entry.path.clone()),
                        0,
                        1,
                        None,
                    );
                    return send(jobs, meta, Body::Left(why));
                }
            }
        }
    };
    let message = match kind {
        Kind::Symlink => "a symbolic link in the incoming folder; ferry never follows links \
                          (its target was not read)"
            .to_string(),
        _ => "not a regular file (a FIFO, socket or device); ferry does not read these".to_string(),
    };
    let meta = meta_for(session, &entry.rel, source, 0, 1, None);
    send(
        jobs,
        meta,
        Body::Rejected(Reject::new(kind, Stage::Claim, message)),
    );
}

fn fresh(session: &Session, entry: Entry, turn: Option<Turn>, jobs: &Jobs) {
    if session.halted() {
        // Shutting down, or the writer failed: take nothing new.
        return;
    }
    match entry.kind {
        EntryKind::Symlink => return not_a_file(session, &entry, Kind::Symlink, jobs),
        EntryKind::Special => return not_a_file(session, &entry, Kind::SpecialFile, jobs),
        EntryKind::File => {}
    }
    let opened = match faults::open(&entry.rel) {
        Some(e) => Err(e),
        None => open_nofollow(&entry.path),
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return, // taken by another process
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return not_a_file(session, &entry, Kind::Symlink, jobs)
        }
        Err(e) => {
            let meta = meta_for(
                session,
                &entry.rel,
                Source::Kept(entry.path.clone()),
                entry.stamp.size,
                1,
                None,
            );
            return send(jobs, meta, Body::Left(format!("cannot open: {e}")));
        }
    };
    let Some((file, source)) = take(session, &entry, file, jobs) else {
        return;
    };
    // Readiness judged the file finished as it was then; if it changed since (a writer came back
    // between the scan and the claim), it is not finished after all: it goes back.
    let now = file.metadata().map(|m| Stamp::of(&m));
    if now.map_or(true, |n| {
        n.size != entry.stamp.size || n.mtime_ns != entry.stamp.mtime_ns
    }) {
        let meta = meta_for(session, &entry.rel, source, entry.stamp.size, 1, None);
        return send(jobs, meta, Body::Changed);
    }
    if let (Source::Claimed(_), Some(marker)) =
        (&source, marker_for(&session.cfg.rules, &entry.path))
    {
        // The marker has done its job; it holds no data.
        let _ = std::fs::remove_file(marker);
    }
    ingest(session, file, source, &entry.rel, (1, None, turn), jobs);
}

/// Takes a file opened where it was found: in move mode claims it into `processing/` (and reads
/// what was actually claimed). `None` when another process took it first, or when the claim
/// failed (the job saying so is sent).
fn take(session: &Session, entry: &Entry, mut file: File, jobs: &Jobs) -> Option<(File, Source)> {
    let source = match session.mode {
        Mode::Keep | Mode::DryRun => Source::Kept(entry.path.clone()),
        Mode::Move => {
            let owner = session.owner.as_ref().expect("move mode has an owner");
            faults::before_claim(&entry.path, &entry.rel);
            let claim = match owner.claim(&session.cfg.spool, &entry.path, &entry.rel) {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                Err(e) => {
                    let meta = meta_for(
                        session,
                        &entry.rel,
                        Source::Kept(entry.path.clone()),
                        entry.stamp.size,
                        1,
                        None,
                    );
                    send(jobs, meta, Body::Left(format!("cannot claim: {e}")));
                    return None;
                }
            };
            // Between our open and our rename another process may have claimed the file and a
            // new one taken its name: read what we actually claimed.
            let same = match (file.metadata(), claim.path.symlink_metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                file = match open_nofollow(&claim.path) {
                    Ok(f) => f,
                    Err(e) => {
                        let meta =
                            meta_for(session, &entry.rel, Source::Claimed(claim), 0, 1, None);
                        let r = Reject::new(
                            Kind::IoRead,
                            Stage::Claim,
                            format!("cannot open the claimed file: {e}"),
                        );
                        send(jobs, meta, Body::Rejected(r));
                        return None;
                    }
                };
            }
            Source::Claimed(claim)
        }
    };
    Some((file, source))
}

fn claimed(
    session: &Session,
    mut claim: Claim,
    (attempt, retry_of): (u32, Option<i64>),
    turn: Option<Turn>,
    jobs: &Jobs,
) {
    if claim.starts >= session.cfg.max_attempts {
        let size = claim.path.symlink_metadata().map_or(0, |m| m.len());
        let message = format!(
            "ferry stopped (crashed or was killed) each of the {} times it worked on this file; \
             it is set aside so it cannot stop the next start too. If ferry was stopped for \
             other reasons, send it through again with `ferry quarantine retry`",
            claim.starts
        );
        let rel = claim.rel.clone();
        let meta = meta_for(
            session,
            &rel,
            Source::Claimed(claim),
            size,
            attempt,
            retry_of,
        );
        let r = Reject::new(Kind::Poison, Stage::Claim, message);
        return send(jobs, meta, Body::Rejected(r));
    }
    if let Err(e) = claim.started(&session.cfg.spool) {
        // Counting the start failed (the disk?): still process it; at worst a crash on this
        // file is counted once less.
        tracing::warn!(error = %e, "cannot record that work on this recovered file started");
    }
    match open_nofollow(&claim.path) {
        Ok(f) => {
            let rel = claim.rel.clone();
            ingest(
                session,
                f,
                Source::Claimed(claim),
                &rel,
                (attempt, retry_of, turn),
                jobs,
            )
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let meta = meta_for(
                session,
                &claim.rel.clone(),
                Source::Claimed(claim),
                0,
                attempt,
                retry_of,
            );
            let r = Reject::new(
                Kind::Symlink,
                Stage::Claim,
                "a symbolic link; ferry never follows links",
            );
            send(jobs, meta, Body::Rejected(r));
        }
        Err(e) => {
            let meta = meta_for(
                session,
                &claim.rel.clone(),
                Source::Claimed(claim),
                0,
                attempt,
                retry_of,
            );
            let r = Reject::new(
                Kind::IoRead,
                Stage::Read,
                format!("cannot open the claimed file: {e}"),
            );
            send(jobs, meta, Body::Rejected(r));
        }
    }
}

/// Which attempt this is, the ledger row it retries, and the file's turn.
type Attempt = (u32, Option<i64>, Option<Turn>);

fn ingest(
    session: &Session,
    file: File,
    source: Source,
    rel: &RelPath,
    (attempt, retry_of, turn): Attempt,
    jobs: &Jobs,
) {
    let before = match read::regular(&file) {
        Ok(stamp) => stamp,
        Err(r) => {
            let meta = meta_for(session, rel, source, 0, attempt, retry_of);
            return send(jobs, meta, Body::Rejected(r));
        }
    };
    let mut meta = meta_for(session, rel, source, before.size, attempt, retry_of);
    meta.turn = turn;

    // Identity first: the full content's hash.
    let small = before.size <= session.cfg.small_file;
    // A big file ferry downloaded was hashed while it was written: no separate hash pass.
    let fetched = match &meta.source {
        Source::Claimed(c) => c.fetched.filter(|(_, len)| !small && *len == before.size),
        Source::Kept(_) => None,
    };
    let first = match (faults::read(rel), fetched) {
        (Some(e), _) => Err(e),
        (None, Some((hash, len))) => Ok(read::identified(hash, len)),
        (None, None) => read::identify(&file, before.size, small),
    };
    let mut first = match first {
        Ok(v) => v,
        Err(e) => return again_or_reject(session, meta, read::failed(e), jobs),
    };
    meta.sha256 = Some(first.hash.hex());
    meta.hashed_at = Some(crate::store::now());
    meta.size = first.len;
    if let Some(t) = &meta.turn {
        // Of identical files, the one submitted first goes first (see `turns`).
        t.hashed(&first.hash.hex(), first.len, &|| session.halted());
    }
    if first.len == 0 {
        let r = Reject::new(Kind::Empty, Stage::Read, "the file is empty (0 bytes)");
        return send(jobs, meta, Body::Rejected(r));
    }

    match crate::container::detect(rel.file_name(), &file) {
        Ok(Some(wrap)) => {
            // Its members are judged by their own paths; the container's identity is taken
            // under the dataset its path names (or its folder's, which need not be configured).
            if meta.spec.is_none() {
                let name = rel.first_dir().unwrap_or_else(|| "default".to_string());
                meta.spec = Some(std::sync::Arc::new(crate::config::DatasetSpec::implied(
                    &name,
                )));
            }
            return super::unit::open(session, file, meta, wrap, jobs);
        }
        Ok(None) => {}
        Err(e) => return again_or_reject(session, meta, read::failed(e), jobs),
    }
    if meta.spec.is_none() {
        return send(jobs, meta, Body::Rejected(no_dataset()));
    }
    if !small {
        faults::between_passes(meta.source.path(), rel);
    }
    let hand = |job: Job| {
        jobs.send(job);
    };
    let read = ToParse {
        file: &file,
        before: &before,
        small,
        retry: true,
        own: false,
    };
    if let Some(r) = parse_into(session, read, &meta, &mut first, &hand) {
        again_or_reject(session, meta, r, jobs)
    }
}

/// A file about to be parsed: open, as it was judged (`before`), small (read into memory) or
/// big (streamed), whether a read failing outside the content is tried again, and whether it
/// is ferry's own copy (an unpacked member, hashed as it was written: not hashed again).
pub(super) struct ToParse<'a> {
    pub file: &'a File,
    pub before: &'a Stamp,
    pub small: bool,
    pub retry: bool,
    pub own: bool,
}

/// Parses an identified file through its dataset's stages into a stream `hand` gives the
/// writer. Returns the reason when the read failed outside the content and may be tried again
/// (the writer was told to forget the attempt).
pub(super) fn parse_into(
    session: &Session,
    read: ToParse,
    meta: &FileMeta,
    first: &mut read::Identity,
    hand: &dyn Fn(Job),
) -> Option<Reject> {
    let ToParse {
        file,
        before,
        small,
        retry,
        own,
    } = read;
    let dataset = meta.spec.clone().expect("a parsed file has a dataset");
    let (tx, unsent) = records_channel(small, meta, hand);
    let handed = |rx: Option<Receiver<Msg>>| {
        if let Some(rx) = rx {
            hand(Job {
                meta: meta.clone(),
                body: Body::Records(rx),
            });
        }
    };
    let started = match own {
        true => read::Pass::own(file, first),
        false => read::Pass::start(file, first),
    };
    let (pass, raw) = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.send(Msg::End(End::Rejected {
                format: None,
                reject: read::failed(e),
                rejects: Vec::new(),
                rejected: 0,
            }));
            drop(tx);
            handed(unsent);
            return None;
        }
    };
    let (format, parsed, rejects) = parse_caught(&meta.rel, raw, &dataset, &tx);
    let changed = pass.changed(file, before, first.hash, !small && parsed.is_ok());
    let end = match parsed {
        Err(Stop::Cancelled) => return None,
        _ if changed => End::Changed,
        Err(Stop::Reject(r))
            if retry && !r.kind.is_content() && meta.attempt < session.cfg.max_attempts =>
        {
            // Not the content's fault: the writer forgets what it stored of this attempt, and
            // the file is read again after a pause.
            if unsent.is_none() {
                let _ = tx.send(Msg::End(End::Retry));
            }
            return Some(r);
        }
        parsed => ended(format, parsed, rejects),
    };
    if tx.send(Msg::End(end)).is_err() {
        return None;
    }
    drop(tx);
    handed(unsent);
    None
}

/// The channel a file's records go through. A big file's receiver goes to the writer now (it
/// stores while we parse); a small file's is returned, to be sent once the parse is done.
/// The receiver must not stay here once the writer has it: dropping its end is how the writer
/// cancels (a duplicate), and a bounded channel would otherwise block us forever.
fn records_channel(
    small: bool,
    meta: &FileMeta,
    hand: &dyn Fn(Job),
) -> (Sender<Msg>, Option<Receiver<Msg>>) {
    if small {
        let (tx, rx) = unbounded();
        (tx, Some(rx))
    } else {
        let (tx, rx) = bounded(CHUNKS_IN_FLIGHT);
        hand(Job {
            meta: meta.clone(),
            body: Body::Records(rx),
        });
        (tx, None)
    }
}

/// A file no dataset takes, under `strict_datasets`.
pub(super) fn no_dataset() -> Reject {
    Reject::new(
        Kind::NoDataset,
        Stage::Claim,
        "the file matches no configured dataset, and the config says strict_datasets = true",
    )
}

/// How a parse that the writer should record ended.
pub(super) fn ended(
    format: Option<Format>,
    parsed: Result<(u64, u64, Vec<String>), Stop>,
    (rejects, rejected): (Vec<crate::reject::RecordReject>, u64),
) -> End {
    match parsed {
        Ok((records, rejected, notes)) => End::Done {
            format: format.expect("parsed, so opened"),
            records,
            rejected,
            notes,
        },
        Err(Stop::Reject(reject)) => End::Rejected {
            format,
            reject,
            rejects,
            rejected,
        },
        Err(Stop::Cancelled) => unreachable!("a cancelled parse is not recorded"),
    }
}

/// Parses with a guard: a bug in a parser must not strand the file; it is set aside as
/// `internal`.
pub(super) fn parse_caught(
    rel: &RelPath,
    raw: Box<dyn Read + Send>,
    dataset: &crate::config::DatasetSpec,
    tx: &Sender<Msg>,
) -> Parsed {
    let name = rel.file_name().to_string_lossy().into_owned();
    let parse = || {
        faults::crash_on(rel);
        faults::slow();
        parse_with_stages(raw, &name, dataset, tx)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        tracing::error!("ferry hit a bug while parsing this file; it is set aside");
        let r = Reject::new(
            Kind::Internal,
            Stage::Parse,
            "ferry hit a bug while parsing this file (see the log); it is kept for a retry \
             after an upgrade",
        );
        (None, Err(Stop::Reject(r)), (Vec::new(), 0))
    })
}

/// The format, the parse's outcome (good and bad records, notes), and the bad records: the
/// first ones and how many there were (kept on the ledger row of a rejected file too).
pub(super) type Parsed = (
    Option<Format>,
    Result<(u64, u64, Vec<String>), Stop>,
    (Vec<crate::reject::RecordReject>, u64),
);

/// Opens the file's format and parses it through the dataset's stages into `tx`.
fn parse_with_stages(
    raw: Box<dyn Read + Send>,
    name: &str,
    dataset: &crate::config::DatasetSpec,
    tx: &Sender<super::Msg>,
) -> Parsed {
    match format::open(
        raw,
        name,
        &dataset.options,
        &dataset.pointer,
        !dataset.typed(),
    ) {
        Ok(opened) => {
            let f = opened.format;
            let mut stages = Stages::new(tx, dataset, f.columns_up_front());
            let parsed = opened
                .parse(&mut stages)
                .and_then(|_| stages.finish())
                .map(|(good, bad)| (good, bad, std::mem::take(&mut stages.notes)));
            (
                Some(f),
                parsed,
                (stages.first_rejects(), stages.bad_count()),
            )
        }
        Err(r) => (None, Err(Stop::Reject(r)), (Vec::new(), 0)),
    }
}

/// The pause before attempt `n + 1`: 100 ms, doubling, at most 5 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.saturating_sub(1).min(6)))
        .min(Duration::from_secs(5))
}

/// A failure outside the file's content (R-poison): tries the file again after a back-off,
/// until `max_attempts`; then it is quarantined with the last error.
fn again_or_reject(session: &Session, meta: FileMeta, reject: Reject, jobs: &Jobs) {
    if meta.attempt >= session.cfg.max_attempts || session.halted() {
        let mut r = reject;
        if meta.attempt > 1 {
            r.message = format!(
                "{} (attempt {} of {})",
                r.message, meta.attempt, session.cfg.max_attempts
            );
        }
        return send(jobs, meta, Body::Rejected(r));
    }
    tracing::warn!(
        attempt = meta.attempt,
        max_attempts = session.cfg.max_attempts,
        error = %reject.message,
        "reading the file failed; trying again"
    );
    std::thread::sleep(backoff(meta.attempt));
    let next = meta.attempt + 1;
    let rel = meta.rel.clone();
    match open_nofollow(meta.source.path()) {
        Ok(f) => ingest(
            session,
            f,
            meta.source,
            &rel,
            (next, meta.retry_of, meta.turn),
            jobs,
        ),
        Err(e) => {
            let r = Reject::new(
                Kind::IoRead,
                Stage::Read,
                format!("cannot open the file again: {e}"),
            );
            let meta = FileMeta {
                attempt: next,
                ..meta
            };
            again_or_reject(session, meta, r, jobs)
        }
    }
}
