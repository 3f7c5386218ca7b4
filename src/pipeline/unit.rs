//! A worker's side of a container (archive, OpenPGP file): it is opened member by member
//! (`container::unpack`), each member written out, hashed and parsed as a file of its own, and
//! handed to the writer through the container's own channel — so one writer sees all of a
//! container's members, in order, and can keep or undo them together. The worker waits for
//! the writer's verdict: when the writer had to undo the container for a reason that is not
//! its content (another writer held what a member needed), it is opened again.

use super::worker::{meta_for, no_dataset, parse_into, send, ToParse};
use super::{read, Body, FileMeta, Job, Jobs, Part, Session, Source, Unit, Verdict};
use crate::container::{self, Facts, Flow, Follow, Growing, Member, Wrap};
use crate::pipeline::{End, Msg};
use crate::reject::{Kind, Reject, Stage};
use crate::spool::RelPath;
use crossbeam_channel::{bounded, Sender};
use std::cell::Cell;
use std::fs::File;
use std::io::Seek;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a container loaded as one unit is set aside when `member` failed with `r` (the run and
/// the dry run say the same): the container's own failures (how it is packed, encrypted,
/// signed) as they are, a member's content as `archive.member_failed` naming it. An empty
/// `member` is the container itself.
pub(crate) fn unit_failed(member: &str, r: Reject) -> Reject {
    if member.is_empty() || r.kind.is_container() {
        return r;
    }
    Reject {
        kind: Kind::ArchiveMemberFailed,
        message: format!(
            "member {member:?} failed ({}): {}; nothing of the archive is loaded",
            r.kind.id(),
            r.message
        ),
        ..r
    }
}

/// Opens a claimed container and hands its members over; returns once the writer decided.
pub(super) fn open(session: &Session, file: File, meta: FileMeta, wrap: Wrap, jobs: &Jobs) {
    let source = match &meta.source {
        Source::Claimed(c) => c.origin.as_ref().map(|o| o.source.as_str()),
        Source::Kept(_) => None,
    };
    let u = session.cfg.unpack_for(&meta.rel, source);
    loop {
        let dir = unpack_dir(session);
        let (parts, taken) = bounded::<Part>(1);
        let (verdict, decided) = bounded::<Verdict>(1);
        let unit = Unit {
            wrap,
            // An OpenPGP file's plaintext is one member whose identity comes after its records:
            // it is always a unit (an archive inside it too).
            each: u.each && wrap != Wrap::Pgp,
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
                let opened = if wrap == Wrap::Pgp {
                    pgp(session, (&file, &meta), &u, &dir, &parts)
                } else {
                    container::unpack(wrap, &file, &u, &dir, &mut each)
                };
                match opened {
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
        if parts.send(Part::Member(Box::new(job))).is_err() {
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
        own: true,
    };
    parse_into(session, how, &meta, &mut first, &hand);
    open.get()
}

/// An OpenPGP file: decrypted on a thread of its own while this worker parses the plaintext as
/// it is written (`container::Follow`), so decrypting and loading overlap. Nothing of it counts
/// before the decryption ended well — the whole message read, its integrity check and its
/// signature passed: the writer gets the plaintext's identity only then (`Msg::Identity`), and
/// any failure ends the member rejected, which undoes what was stored. An archive inside is
/// opened once the plaintext is whole and checked.
fn pgp(
    session: &Session,
    (file, outer): (&File, &FileMeta),
    u: &crate::config::Unpack,
    dir: &std::path::Path,
    parts: &Sender<Part>,
) -> Result<Facts, Reject> {
    let growing = Arc::new(Growing::default());
    let name = container::plain_name(outer.rel.file_name());
    std::thread::scope(|scope| {
        let decrypting = scope.spawn(|| container::decrypt_following(file, u, dir, &growing));
        let joined = |h: std::thread::ScopedJoinHandle<'_, Result<Facts, Reject>>| {
            h.join().unwrap_or_else(|_| {
                Err(Reject::new(
                    Kind::Internal,
                    Stage::Decode,
                    "decrypting panicked",
                ))
            })
        };
        let finish = |growing: &Growing, h| {
            growing.abandon();
            joined(h)
        };
        // The first bytes say what is inside (a gzip file's first 64 KiB: a tar inside?).
        growing.wait_for(64 << 10);
        if let Some(r) = growing.failed() {
            return finish(&growing, decrypting).and(Err(r));
        }
        let spill = dir.join("1");
        let plain = match File::open(&spill) {
            Ok(f) => f,
            Err(e) => {
                let _ = finish(&growing, decrypting);
                return Err(read::failed(e));
            }
        };
        match container::detect(&name, &plain) {
            Ok(Some(w)) => {
                // Whole and checked first, then opened as any archive.
                let mut facts = joined(decrypting)?;
                let mut each = |m: Member| {
                    if member(session, outer, m, parts) {
                        Flow::Next
                    } else {
                        Flow::Stop
                    }
                };
                let size = file.metadata().map_or(0, |m| m.len());
                container::unpack_inner(w, &plain, size, u, dir, &mut each, &mut facts)?;
                Ok(facts)
            }
            Ok(None) => {
                following(session, outer, &name, (plain, spill, &growing), parts);
                joined(decrypting)
            }
            Err(e) => {
                let _ = finish(&growing, decrypting);
                Err(read::failed(e))
            }
        }
    })
}

/// Parses the plaintext as it grows, as a file at the OpenPGP file's folder under its name
/// without `.pgp`; its identity and the decryption's verdict go to the writer at the end.
fn following(
    session: &Session,
    outer: &FileMeta,
    name: &std::ffi::OsStr,
    (plain, spill, growing): (File, PathBuf, &Arc<Growing>),
    parts: &Sender<Part>,
) {
    let rel = match outer.rel.parent() {
        Some(p) => p.join(name),
        None => PathBuf::from(name),
    };
    // Whatever ends the member early also stops the decryption.
    let Some(rel) = RelPath::from_relative(&rel) else {
        growing.abandon();
        return;
    };
    let meta = meta_for(session, &rel, Source::Kept(spill), 0, 1, None);
    let Some(dataset) = meta.spec.clone() else {
        growing.abandon();
        let job = Job {
            meta,
            body: Body::Rejected(no_dataset()),
        };
        let _ = parts.send(Part::Member(Box::new(job)));
        return;
    };
    let (tx, rx) = bounded(super::worker::CHUNKS_IN_FLIGHT);
    let job = Job {
        meta: meta.clone(),
        body: Body::Records(rx),
    };
    if parts.send(Part::Member(Box::new(job))).is_err() {
        // The writer no longer wants the container: stop decrypting.
        growing.abandon();
        return;
    }
    let raw = Box::new(std::io::BufReader::with_capacity(
        256 << 10,
        Follow {
            file: plain,
            pos: 0,
            growing: growing.clone(),
        },
    ));
    let (format, parsed, rejects) = super::worker::parse_caught(&meta.rel, raw, &dataset, &tx);
    if matches!(parsed, Err(crate::format::Stop::Cancelled)) {
        growing.abandon();
        return;
    }
    // The content is refused whatever follows: no need to decrypt the rest — unless the parse
    // failed because the decryption did (the reader fails where it failed): that is the reason.
    let refused = parsed.is_err() && growing.failed().is_none();
    if refused {
        growing.abandon();
    }
    let end = match growing.end() {
        Ok((hash, len)) => {
            let identity = Msg::Identity {
                sha256: hash.hex(),
                size: len,
            };
            if tx.send(identity).is_err() {
                return;
            }
            super::worker::ended(format, parsed, rejects)
        }
        // The decryption's failure is the reason, unless the parse stopped it.
        Err(r) if !refused => End::Rejected {
            format: None,
            reject: r,
            rejects: Vec::new(),
            rejected: 0,
        },
        _ => super::worker::ended(format, parsed, rejects),
    };
    let _ = tx.send(Msg::End(end));
}
