//! A worker's side of a container (archive, OpenPGP file): it is opened member by member
//! (`container::unpack`), each member written out, hashed and parsed as a file of its own, and
//! handed to the writer through the container's own channel — so one writer sees all of a
//! container's members, in order, and can keep or undo them together. The worker waits for
//! the writer's verdict: when the writer had to undo the container for a reason that is not
//! its content (another writer held what a member needed), it is opened again.

use super::worker::{meta_for, no_dataset, parse_into, send, ToParse};
use super::{read, Body, FileMeta, Job, Jobs, Part, Session, Source, Unit, Verdict};
use crate::container::{self, Flow, Member, Wrap};
use crate::reject::{Kind, Reject, Stage};
use crate::spool::RelPath;
use crossbeam_channel::{bounded, Sender};
use std::cell::Cell;
use std::fs::File;
use std::io::Seek;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Opens a claimed container and hands its members over; returns once the writer decided.
pub(super) fn open(session: &Session, file: File, meta: FileMeta, wrap: Wrap, jobs: &Jobs) {
    let u = session.cfg.unpack_for(&meta.rel);
    let name = meta.rel.file_name().to_os_string();
    loop {
        let dir = unpack_dir(session);
        let (parts, taken) = bounded::<Part>(1);
        let (verdict, decided) = bounded::<Verdict>(1);
        let unit = Unit {
            wrap,
            each: u.each,
            parts: taken,
            verdict,
            dir: dir.clone(),
        };
        send(jobs, meta.clone(), Body::Unit(unit));
        let end = match (&file).rewind() {
            Err(e) => Part::Failed(super::read::failed(e)),
            Ok(()) => {
                let mut each = |m: Member| {
                    if member(session, &meta, m, &parts) {
                        Flow::Next
                    } else {
                        Flow::Stop
                    }
                };
                match container::unpack(wrap, &file, &name, &u, &dir, &mut each) {
                    Ok(facts) => Part::End(facts),
                    Err(r) => Part::Failed(r),
                }
            }
        };
        let _ = parts.send(end);
        drop(parts);
        match decided.recv() {
            Ok(Verdict::Again) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            _ => return,
        }
    }
}

/// Where a container is unpacked: under `processing/.unpack/` for a claimed file (a dead
/// owner's are removed at the next start), in the temp folder when files are read in place.
fn unpack_dir(session: &Session) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    match &session.owner {
        Some(o) => session
            .cfg
            .spool
            .processing
            .join(".unpack")
            .join(format!("{}.{n}", o.token())),
        None => std::env::temp_dir().join(format!("ferry-unpack-{}.{n}", std::process::id())),
    }
}

/// Parses one member as a file found at the container's folder plus the member's path; false
/// when the writer no longer takes the container's members.
fn member(session: &Session, outer: &FileMeta, m: Member, parts: &Sender<Part>) -> bool {
    let rel = match outer.rel.parent() {
        Some(p) => p.join(&m.path),
        None => m.path.clone(),
    };
    let Some(rel) = RelPath::from_relative(&rel) else {
        return true; // checked by `container::member_path`; never happens
    };
    let mut meta = meta_for(session, &rel, Source::Kept(m.spill.clone()), m.len, 1, None);
    meta.sha256 = Some(m.hash.hex());
    meta.hashed_at = Some(crate::store::now());
    let open = Cell::new(true);
    let hand = |job: Job| {
        if parts.send(Part::Member(job)).is_err() {
            open.set(false);
        }
    };
    let reject = |meta: FileMeta, r: Reject| {
        hand(Job {
            meta,
            body: Body::Rejected(r),
        })
    };
    if m.len == 0 {
        reject(
            meta,
            Reject::new(Kind::Empty, Stage::Read, "the member is empty (0 bytes)"),
        );
        return open.get();
    }
    if meta.spec.is_none() {
        reject(meta, no_dataset());
        return open.get();
    }
    let opened = File::open(&m.spill).and_then(|f| {
        let before = read::regular(&f).map_err(|r| std::io::Error::other(r.message))?;
        Ok((f, before))
    });
    let (file, before) = match opened {
        Ok(v) => v,
        Err(e) => {
            reject(meta, read::failed(e));
            return open.get();
        }
    };
    let small = m.len <= session.cfg.small_file;
    let first = if small {
        read::identify(&file, m.len, true)
    } else {
        Ok(read::identified(m.hash, m.len))
    };
    let mut first = match first {
        Ok(f) => f,
        Err(e) => {
            reject(meta, read::failed(e));
            return open.get();
        }
    };
    let how = ToParse {
        file: &file,
        before: &before,
        small,
        retry: false,
    };
    parse_into(session, how, &meta, &mut first, &hand);
    open.get()
}
