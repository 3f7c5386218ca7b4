//! A container (archive, OpenPGP file) in the writer. Its identity is checked first (the same
//! archive again is a duplicate, nothing of it read). By default the container is one unit:
//! the group so far commits, and its members are stored in a group of their own — each under
//! its savepoint, judged as any file (a member already loaded is a duplicate) — and the
//! container's ledger row is written last, in the same transaction; a member that fails undoes
//! them all and the container is quarantined, naming the member. With `archive_members =
//! "each"` members are files of their own (a failing one is quarantined alone, from its
//! unpacked copy) and the container's row is written once every member finished. Either way a
//! crash before that row committed opens the container again, and members that did commit are
//! duplicates then: never lost, never doubled.

use super::columns::RekeyNeeded;
use super::file::{new_file, Why};
use super::{FileOutcome, Finished, Writer};
use crate::config::DatasetSpec;
use crate::pipeline::{FileMeta, Job, Part, Source, Unit, Verdict};
use crate::reject::{Kind, Reject, Stage};
use crate::store::{now, Counts, FileState, FileUpdate, Identity, NewFile};
use anyhow::{Context, Result};
use std::sync::Arc;

/// Why a container's members were undone and it is opened again: a member needed something
/// another writer held (its identity, the schema) or its table must be re-keyed first — what a
/// lone file waits for in a new group, which a unit cannot take without committing half of
/// itself.
pub(super) enum Restart {
    Busy { dataset: String, sha: String },
    Schema,
    Rekey(Arc<DatasetSpec>, RekeyNeeded),
}

impl std::fmt::Debug for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restart::Busy { .. } => "Busy",
            Restart::Schema => "Schema",
            Restart::Rekey(..) => "Rekey",
        })
    }
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member of the container needs a new group; the container starts over")
    }
}

impl std::error::Error for Restart {}

/// What the container's members came to so far.
#[derive(Default)]
struct Members {
    ids: Vec<i64>,
    /// The first member that failed (unit mode), or the container itself (empty path).
    failed: Option<(String, Reject)>,
    facts: Option<crate::container::Facts>,
    restart: Option<Restart>,
}

impl Writer<'_> {
    pub(super) fn unit(&mut self, meta: FileMeta, mut unit: Unit) -> Result<()> {
        // Its unpacked members stay until the group that finishes it is placed (a quarantined
        // member is copied from there).
        let dir = std::mem::take(&mut unit.dir);
        let r = self.unit_members(meta, unit);
        self.unpacked.push(dir);
        r
    }

    fn unit_members(&mut self, meta: FileMeta, unit: Unit) -> Result<()> {
        let Unit {
            wrap,
            each,
            parts,
            verdict,
            ..
        } = unit;
        let spec = meta.spec.clone().context("a container has a dataset")?;
        let sha = meta.sha256.clone().unwrap_or_default();
        loop {
            match self.store.identity(&spec.name, &sha)? {
                Identity::Stored(original) => {
                    let _ = verdict.send(Verdict::Done);
                    drop(parts);
                    return self.duplicate(meta, original);
                }
                Identity::Busy => {
                    self.new_group()?;
                    self.store.wait_identity(&spec.name, &sha)?;
                }
                Identity::New => break,
            }
        }
        if !each {
            // A transaction of its own, with the schema lock taken before anything is stored,
            // so no member waits for it while the others hold their locks.
            self.new_group()?;
            self.store.lock_schema(false)?;
        }
        let start = self.finished.len();
        self.in_unit = !each;
        let got = self.members(&parts, each);
        self.in_unit = false;
        let got = got?;
        if let Some(restart) = got.restart {
            self.undo_unit(start);
            match restart {
                Restart::Busy { dataset, sha } => self.store.wait_identity(&dataset, &sha)?,
                Restart::Rekey(spec, need) => self.rekey(&spec, need)?,
                Restart::Schema => {}
            }
            let _ = verdict.send(Verdict::Again);
            return Ok(());
        }
        let _ = verdict.send(Verdict::Done);
        drop(parts);
        let failed = match got.failed {
            Some(f) => Some(f),
            None if got.facts.is_none() => Some((
                String::new(),
                Reject::new(
                    Kind::Internal,
                    Stage::Decode,
                    "the worker stopped before it opened the whole container",
                ),
            )),
            None => None,
        };
        if let Some((member, r)) = failed {
            if !each {
                self.undo_unit(start);
                self.begin()?;
            }
            let reject = crate::pipeline::unit::unit_failed(&member, r);
            let why = Why {
                reject,
                rejects: &[],
                rejected: 0,
            };
            self.quarantine(meta, Some(wrap.id()), why)?;
            // With each member its own unit, those that finished stay: they name the archive.
            if let Some(FileOutcome::Quarantined { id, .. }) =
                self.finished.last().map(|f| &f.outcome)
            {
                let id = *id;
                for m in got.ids.iter().filter(|_| each) {
                    self.store.update_file(*m, &FileUpdate::MemberOf(id))?;
                }
            }
            return Ok(());
        }
        let facts = got.facts.unwrap_or_default();
        let (path, now) = (meta.rel.display(), now());
        let row = NewFile {
            format: Some(wrap.id()),
            ..new_file(
                &self.source,
                &self.session.worker_name,
                &meta,
                &path,
                FileState::Ingested,
                &now,
            )
        };
        let id = self.store.insert_file(&row)?;
        for m in &got.ids {
            self.store.update_file(*m, &FileUpdate::MemberOf(id))?;
        }
        if let Some(s) = &facts.signer {
            self.store.update_file(id, &FileUpdate::Signer(s))?;
        }
        self.store.update_file(
            id,
            &FileUpdate::Parsed {
                counts: Counts::default(),
                format: wrap.id(),
                warnings: &facts.notes,
                parsed_at: &now,
            },
        )?;
        let placement = self.archive(id, &meta, None)?;
        self.finished.push(Finished {
            meta,
            outcome: FileOutcome::Unpacked {
                id,
                members: got.ids.len() as u64,
            },
            placement,
        });
        Ok(())
    }

    /// Takes the container's parts until it ends, a member fails (unit mode) or the unit must
    /// start over.
    fn members(
        &mut self,
        parts: &crossbeam_channel::Receiver<Part>,
        each: bool,
    ) -> Result<Members> {
        let mut got = Members::default();
        for part in parts.iter() {
            match part {
                Part::Member(job) => {
                    let path = job.meta.rel.display();
                    let spill = job.meta.source.path().to_path_buf();
                    match self.member(*job) {
                        Ok(()) => {}
                        Err(e) if e.is::<Restart>() => {
                            got.restart = Some(e.downcast::<Restart>().expect("checked"));
                            return Ok(got);
                        }
                        Err(e) => return Err(e),
                    }
                    // The member's outcome is the last one recorded, if it is its own.
                    let Some(f) = self.finished.last() else {
                        continue;
                    };
                    if f.meta.source.path() != spill {
                        continue;
                    }
                    match &f.outcome {
                        FileOutcome::Ingested { id, .. } | FileOutcome::Duplicate { id, .. } => {
                            got.ids.push(*id)
                        }
                        FileOutcome::Quarantined { id, reject } => {
                            got.ids.push(*id);
                            if !each {
                                got.failed = Some((path, reject.clone()));
                                return Ok(got);
                            }
                        }
                        _ => {}
                    }
                }
                Part::Failed(r) => {
                    got.failed = Some((String::new(), r));
                    return Ok(got);
                }
                Part::End(facts) => got.facts = Some(facts),
            }
        }
        Ok(got)
    }

    /// One member, as any file.
    fn member(&mut self, job: Job) -> Result<()> {
        debug_assert!(matches!(job.meta.source, Source::Kept(_)));
        self.handle(job)
    }

    /// Forgets everything the unit's transaction held: its members' rows and records.
    fn undo_unit(&mut self, start: usize) {
        self.store.rollback();
        self.txn = None;
        self.finished.truncate(start);
    }
}
