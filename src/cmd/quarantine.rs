//! `ferry quarantine list | show ID | retry ID… | --all` (R-replay).
//!
//! A retry moves the quarantined file back into `processing/` under a fresh claim and sends it
//! through the same pipeline as `ferry run`, under the config as it is now. The ledger keeps every
//! attempt: the new row has `retry_of` pointing at the quarantined one and `attempt` one higher,
//! so `ferry files` shows the history. The old reason file is removed once the file is claimed;
//! the ledger row still holds the reason.

use super::Outcome;
use crate::cli::{QuarantineCommand, RetryArgs};
use crate::config::Config;
use crate::events::{Event, Summary};
use crate::exit::ExitError;
use crate::fsio::beneath;
use crate::hash::FileHash;
use crate::pipeline::place::reason_name;
use crate::pipeline::stages::FIRST_REJECTS;
use crate::pipeline::{Mode, Pipeline, Session, Work};
use crate::report::{self, FileShown, QuarantineList};
use crate::spool::RelPath;
use crate::store::{self, FileFilter, FileRow, FileState, Store};
use anyhow::Result;
use std::sync::Arc;
use std::time::Instant;

pub fn run(cfg: &Config, cmd: &QuarantineCommand) -> Result<Outcome> {
    match cmd {
        QuarantineCommand::List { json } => list(cfg, *json),
        QuarantineCommand::Show { id, json } => show(cfg, *id, *json),
        QuarantineCommand::Retry(a) => retry(cfg, a),
        QuarantineCommand::Discard { id, reason } => discard(cfg, *id, reason),
    }
}

/// Quarantined rows not yet retried, oldest first.
fn open_rows(store: &mut dyn Store) -> Result<Vec<FileRow>> {
    store.files(&FileFilter {
        state: Some(FileState::Quarantined),
        latest: true,
        open: true,
        ..FileFilter::default()
    })
}

fn list(cfg: &Config, json: bool) -> Result<Outcome> {
    let rows = match store::open_existing(&cfg.store)? {
        Some(mut s) => open_rows(&mut *s)?,
        None => Vec::new(),
    };
    report::print(&QuarantineList(rows), json)?;
    Ok(Outcome::Done)
}

fn no_such_file(id: i64) -> ExitError {
    ExitError::NotFound(format!("no file with id {id} in the ledger"))
}

fn show(cfg: &Config, id: i64, json: bool) -> Result<Outcome> {
    let mut store = store::open(&cfg.store)?;
    let file = store.file(id)?.ok_or_else(|| no_such_file(id))?;
    // Walk back to the first attempt, then forward through the retries.
    let mut first = file.clone();
    while let Some(prev) = first.retry_of.and_then(|p| store.file(p).ok().flatten()) {
        first = prev;
    }
    let mut attempts = vec![first];
    while let Some(next) = store.retried_by(attempts.last().expect("non-empty").id)? {
        match store.file(next)? {
            Some(r) => attempts.push(r),
            None => break,
        }
    }
    let shown = FileShown {
        rejects: store.rejects(id, Some(FIRST_REJECTS as u64))?,
        retried_by: store.retried_by(id)?,
        attempts,
        file,
    };
    report::print(&shown, json)?;
    Ok(Outcome::Done)
}

/// Records that a quarantined file will never load. Its file stays in quarantine/ until
/// retention removes it; it is no longer listed, counted as open, or retried by `--all`.
fn discard(cfg: &Config, id: i64, reason: &str) -> Result<Outcome> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(
            ExitError::Usage("--reason must say why the file will never load".into()).into(),
        );
    }
    let mut store = store::open(&cfg.store)?;
    let row = open_row(&mut *store, id, false)?;
    if !store.discard(id, reason, &store::now())? {
        // Retried or pruned by another process in between.
        return Err(ExitError::Usage(format!(
            "file {id} ({}) changed while it was being discarded; see `ferry quarantine show {id}`",
            row.path
        ))
        .into());
    }
    eprintln!("ferry: file {id} ({}) discarded: {reason}", row.path);
    Ok(Outcome::Done)
}

/// A quarantined file's latest attempt, still in quarantine and (unless `discarded_too`) not
/// given up on: an operator may still retry a discarded file by its id.
fn open_row(store: &mut dyn Store, id: i64, discarded_too: bool) -> Result<FileRow> {
    let row = store.file(id)?.ok_or_else(|| no_such_file(id))?;
    let refuse = |why: String| -> Result<FileRow> {
        Err(ExitError::Usage(format!("file {id} ({}) {why}", row.path)).into())
    };
    if row.state != FileState::Quarantined {
        return refuse(format!("is {}, not quarantined", row.state.id()));
    }
    if let Some(by) = store.retried_by(id)? {
        return refuse(format!("was already retried as {by}; use that id"));
    }
    if let (Some(at), Some(why), false) = (&row.discarded_at, &row.discard_reason, discarded_too) {
        return refuse(format!("was discarded at {at}: {why}"));
    }
    if let Some(at) = &row.pruned_at {
        return refuse(format!("was removed by retention at {at}"));
    }
    Ok(row)
}

/// The quarantined files to retry: every one not retried yet (`--all`), or those named, each
/// checked to be quarantined and not retried already.
fn chosen(store: &mut dyn Store, args: &RetryArgs) -> Result<Vec<FileRow>> {
    if args.all {
        return open_rows(store);
    }
    let mut rows = Vec::new();
    for &id in &args.ids {
        rows.push(open_row(store, id, true)?);
    }
    Ok(rows)
}

fn retry(cfg: &Config, args: &RetryArgs) -> Result<Outcome> {
    let started = Instant::now();
    let mut store = store::open(&cfg.store)?;
    let rows = chosen(&mut *store, args)?;
    drop(store);

    let session = Arc::new(Session::new(
        cfg.clone(),
        Mode::Move,
        cfg.spool.incoming.clone(),
    )?);
    let owner = session.owner.as_ref().expect("move mode has an owner");
    let (work, skipped) = take_back(cfg, owner, &rows)?;
    let pipeline = Pipeline::start(session.clone())?;
    for w in work {
        if !pipeline.submit(w) {
            break;
        }
    }
    let mut summary = pipeline.finish()?;
    summary.absorb(skipped);
    super::report_run(
        &cfg.spool.quarantine,
        started,
        summary,
        Vec::new(),
        None,
        args.json,
        false,
    )
}

/// Claims the quarantined copies of `rows` back into the pipeline: the work to do, and the files
/// that cannot be sent through again (left, and said: exit 5).
fn take_back(
    cfg: &Config,
    owner: &crate::spool::Owner,
    rows: &[FileRow],
) -> Result<(Vec<Work>, Summary)> {
    let mut work = Vec::new();
    // Files asked for that cannot be sent through again: left, and said (exit 5).
    let mut skipped = Summary::default();
    let mut left = |path: &str, why: &str| Event::Left { path, why }.emit(&mut skipped);
    for row in rows {
        let Some(stored) = &row.stored_at else {
            left(
                &row.path,
                &format!(
                    "file {}: no copy of it was kept in quarantine (it was read in place, or \
                     was not a regular file); nothing to send through again",
                    row.id
                ),
            );
            continue;
        };
        let at = cfg.spool.resolve(stored);
        let Some(rel) = RelPath::from_display(&row.path) else {
            left(
                &row.path,
                &format!("file {}: the recorded path is not relative", row.id),
            );
            continue;
        };
        let claimed = beneath::parent(&cfg.spool.root, &at, false)
            .and_then(|(dir, name)| Ok((owner.claim_in(&cfg.spool, &dir, name, &rel)?, dir, name)));
        match claimed {
            Ok((Some(claim), dir, name)) => match verify(&claim.path, row) {
                Ok(()) => {
                    let _ = dir.unlink(&reason_name(name));
                    work.push(Work::Claimed {
                        claim,
                        attempt: row.attempt as u32 + 1,
                        retry_of: Some(row.id),
                    });
                }
                Err(why) => {
                    // Put back untouched, where it was.
                    let back = dir.move_in(&claim.path, name);
                    claim.tidy(&cfg.spool);
                    let back = match back {
                        Ok(()) => "it stays in quarantine".to_string(),
                        Err(e) => format!("it waits in processing/: {e}"),
                    };
                    left(
                        &row.path,
                        &format!("file {}: {why}; nothing was loaded and {back}", row.id),
                    );
                }
            },
            // Gone: another process retried it meanwhile (fine), or no copy is there at all.
            Ok((None, _, _)) => match store::open(&cfg.store)?.retried_by(row.id)? {
                Some(by) => tracing::warn!(
                    id = row.id,
                    retried_as = by,
                    "another process retried this file meanwhile; skipped"
                ),
                None => left(&row.path, &not_there(row.id, &at)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                left(&row.path, &not_there(row.id, &at))
            }
            Err(e) => left(
                &row.path,
                &format!("file {}: cannot take {} back: {e}", row.id, at.display()),
            ),
        }
    }
    Ok((work, skipped))
}

fn not_there(id: i64, at: &std::path::Path) -> String {
    format!(
        "file {id}: its quarantined copy {} is not there (a file that was not regular keeps \
         only its reason)",
        at.display()
    )
}

/// Checks that a quarantined copy, claimed back, is the file the ledger recorded: the same
/// SHA-256. A copy edited or replaced in quarantine is not sent through as if it were.
fn verify(claimed: &std::path::Path, row: &FileRow) -> Result<(), String> {
    let Some(sha) = row.sha256.as_deref() else {
        return Err("its content was never hashed, so its copy cannot be checked".into());
    };
    match crate::fsio::open_regular(claimed).and_then(FileHash::of_reader) {
        Ok((h, _)) if h.hex() == sha => Ok(()),
        Ok((h, _)) => Err(format!(
            "its quarantined copy changed since it was recorded (sha256 {}, recorded {sha})",
            h.hex()
        )),
        Err(e) => Err(format!("its quarantined copy cannot be read: {e}")),
    }
}
