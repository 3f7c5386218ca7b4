//! Putting files where their ledger row says they belong, and reconciling after a crash.
//!
//! Placement happens only after the commit that decided it. Everything it needs can be
//! rebuilt from the ledger row, so a crash between commit and placement is repaired by doing
//! the placement again (`recover`).

use super::stages::FIRST_REJECTS;
use super::{Session, Work};
use crate::fsio::{self, beneath};
use crate::reject::RecordReject;
use crate::store::{self, FileRow, FileState, Store};
use anyhow::Result;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// A move to do once the commit that decided it has returned.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Into `archive/`; first the report of its rejected records, if it has any.
    Archive {
        from: PathBuf,
        to: PathBuf,
        rejects: Option<(PathBuf, Vec<u8>)>,
    },
    /// Into `quarantine/`, with its reason file written first.
    Quarantine {
        from: PathBuf,
        to: PathBuf,
        reason: Vec<u8>,
        how: Transfer,
    },
    /// Only a report (the rejects of a file read in place with `--keep`).
    Report { to: PathBuf, body: Vec<u8> },
    /// Back where it was found: it changed while read, so it was not finished.
    Release { from: PathBuf, to: PathBuf },
}

impl Placement {
    /// Does the move. Everything that lands in the spool (`root`) gets there through folders
    /// walked from the root without following links (`fsio::beneath`): a folder in `archive/`
    /// or `quarantine/` replaced by a link makes the placement fail (the file stays in
    /// `processing/` and is reported), never lands a file or a sidecar elsewhere.
    pub fn apply(&self, folders: &mut beneath::Folders) -> io::Result<()> {
        if let Some(e) = crate::faults::place() {
            return Err(e);
        }
        match self {
            Placement::Archive { from, to, rejects } => {
                if let Some((path, body)) = rejects {
                    let (dir, name) = folders.parent(path)?;
                    dir.write_atomic(name, body)?;
                }
                let (dir, name) = folders.parent(to)?;
                dir.move_in(from, name)
            }
            Placement::Release { from, to } => fsio::place(from, to),
            Placement::Report { to, body } => {
                let (dir, name) = folders.parent(to)?;
                dir.write_atomic(name, body)
            }
            Placement::Quarantine {
                from,
                to,
                reason,
                how,
            } => {
                let (dir, name) = folders.parent(to)?;
                dir.write_atomic(&reason_name(name), reason)?;
                match how {
                    Transfer::Move => dir.move_in(from, name),
                    Transfer::Copy => dir.copy_in(from, name),
                    Transfer::None => Ok(()),
                }
            }
        }
    }
}

/// How a quarantined file gets to `quarantine/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Moved (a claimed file).
    Move,
    /// Copied (`--keep`: the original stays where it is).
    Copy,
    /// Not at all: a FIFO or device read in place, which ferry never opens. Only the reason.
    None,
}

/// The name of the reason file beside a quarantined file: `<name>.reason.json`.
pub fn reason_name(quarantined: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut name = quarantined.to_os_string();
    name.push(crate::spool::SIDECARS[0]);
    name
}

/// The reason file's content (R-reason), built from the ledger row alone.
#[derive(Serialize)]
struct ReasonDoc<'a> {
    file: &'a str,
    path: &'a str,
    sha256: Option<&'a str>,
    size: i64,
    dataset: Option<&'a str>,
    stage: Option<&'a str>,
    error_kind: Option<&'a str>,
    message: Option<&'a str>,
    line: Option<i64>,
    offset: Option<i64>,
    field: Option<&'a str>,
    time: &'a str,
    attempt: i64,
    ledger_id: i64,
    quarantined_as: Option<&'a str>,
    retry_of: Option<i64>,
    /// The first rejected records, when bad records rejected the file.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    rejects: &'a [RecordReject],
}

/// One line of `<name>.rejects.ndjson`.
#[derive(Serialize)]
struct RejectLine<'a> {
    file: &'a str,
    ledger_id: i64,
    #[serde(flatten)]
    reject: &'a RecordReject,
}

/// The rejects report of a file: one JSON object per rejected record, in file order.
pub fn rejects_ndjson(row: &FileRow, rejects: &[RecordReject]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rejects {
        let line = RejectLine {
            file: &row.path,
            ledger_id: row.id,
            reject: r,
        };
        serde_json::to_writer(&mut out, &line).expect("serializable");
        out.push(b'\n');
    }
    out
}

pub fn reason_json(row: &FileRow, rejects: &[RecordReject]) -> Vec<u8> {
    let file = row.path.rsplit('/').next().unwrap_or(&row.path);
    let doc = ReasonDoc {
        file,
        path: &row.path,
        sha256: row.sha256.as_deref(),
        size: row.size,
        dataset: row.dataset.as_deref(),
        stage: row.error_stage.as_deref(),
        error_kind: row.error_kind.as_deref(),
        message: row.error_message.as_deref(),
        line: row.error_line,
        offset: row.error_offset,
        field: row.error_field.as_deref(),
        time: &row.finished_at,
        attempt: row.attempt,
        ledger_id: row.id,
        quarantined_as: row.stored_at.as_deref(),
        retry_of: row.retry_of,
        rejects,
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("serializable");
    out.push(b'\n');
    out
}

/// The placement a committed row calls for, for a file now at `from`.
pub fn placement_for(
    session: &Session,
    store: &mut dyn Store,
    row: &FileRow,
    from: &Path,
) -> Result<Option<Placement>> {
    let Some(stored) = row.stored_at.as_deref() else {
        return Ok(None);
    };
    let to = session.cfg.spool.resolve(stored);
    Ok(Some(if row.state == FileState::Quarantined {
        let first = store.rejects(row.id, Some(FIRST_REJECTS as u64))?;
        Placement::Quarantine {
            from: from.to_path_buf(),
            to,
            reason: reason_json(row, &first),
            how: Transfer::Move,
        }
    } else {
        let rejects = match &row.rejects_at {
            Some(at) => Some((
                session.cfg.spool.resolve(at),
                rejects_ndjson(row, &store.rejects(row.id, None)?),
            )),
            None => None,
        };
        Placement::Archive {
            from: from.to_path_buf(),
            to,
            rejects,
        }
    }))
}

/// Reconciles `processing/` after a crash: files of dead owners whose commit happened are
/// placed now; the others are claimed by this process and returned as work to do again. Use
/// `isolate` on the result: files that were in flight at more than one death are processed one
/// at a time, so a file that crashes ferry does not take innocent files down with it.
pub fn recover(session: &Session) -> Result<Vec<Work>> {
    let Some(owner) = session.owner.as_ref() else {
        return Ok(Vec::new());
    };
    let left = crate::spool::leftovers(&session.cfg.spool, owner, &*session.liveness)?;
    if left.files.is_empty() {
        return Ok(Vec::new());
    }
    let mut store = store::open(&session.cfg.store)?;
    let mut work = Vec::new();
    let mut folders = beneath::Folders::new(&session.cfg.spool.root);
    for l in &left.files {
        match store.by_claim(&l.claim_id)? {
            Some(row) => {
                if let Some(p) = placement_for(session, &mut *store, &row, &l.path)? {
                    match p.apply(&mut folders) {
                        Ok(()) => {
                            l.tidy(&session.cfg.spool);
                            tracing::info!(path = %row.path, id = row.id, state = row.state.id(), "recovered a committed file; placed it");
                        }
                        Err(e) => {
                            tracing::error!(path = %row.path, id = row.id, error = %e, "cannot place a recovered file; it stays in processing/");
                            session.mark_unplaced();
                        }
                    }
                }
            }
            // Not committed: the process died with the file in flight. The claim's name counts
            // how many times a worker started on it, so a file that crashes every process that
            // reads it is set aside (as `poison`, at `max_attempts`), not retried forever.
            None => match owner.reclaim(&session.cfg.spool, l) {
                Ok(Some(claim)) => {
                    if claim.starts >= session.cfg.max_attempts {
                        tracing::warn!(path = %claim.rel.display(), starts = claim.starts, "ferry stopped every time it worked on this file; setting it aside");
                    } else {
                        tracing::info!(path = %claim.rel.display(), starts = claim.starts, "recovered an unfinished file; processing it again");
                    }
                    work.push(Work::Claimed {
                        claim,
                        attempt: 1,
                        retry_of: None,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(path = %l.rel.display(), error = %e, "cannot reclaim a leftover file")
                }
            },
        }
    }
    drop(left);
    Ok(work)
}

/// Splits recovered work into files to process one at a time (started more than once, each
/// time by a process that died, but not yet set aside) and the rest.
pub fn isolate(work: Vec<Work>, max_attempts: u32) -> (Vec<Work>, Vec<Work>) {
    work.into_iter().partition(|w| match w {
        Work::Claimed { claim, .. } => claim.starts >= 2 && claim.starts < max_attempts,
        Work::Fresh(_) => false,
    })
}
