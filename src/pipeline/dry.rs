//! `run --dry-run`: the judge that takes the writer's place. Workers read each file in place and
//! run it through the same stages as a real run (format, columns, typed values, keys, bad
//! records against `max_bad_records`); the judge only reads the ledger, to tell a duplicate
//! file, and records what would happen. Nothing is written: no ledger row, no table, no moved
//! or copied file, no report.
//!
//! What a dry run cannot know: which records a real run would skip because their key is
//! already stored (that needs the store's keys, and is decided in the write transaction).

use super::{Body, End, FileMeta, Job, Msg};
use crate::events::{Summary, Verdict};
use crate::reject::Reject;
use crate::store::{Location, Store};
use anyhow::Result;
use crossbeam_channel::Receiver;
use std::collections::HashSet;

pub fn judge(at: &Location, jobs: Receiver<Job>) -> (Summary, Result<()>) {
    let store = match crate::store::open_existing(at) {
        Ok(s) => s,
        Err(e) => return (Summary::default(), Err(e)),
    };
    let mut j = Judge {
        store,
        seen: HashSet::new(),
        summary: Summary::default(),
    };
    let r = jobs.iter().try_for_each(|job| j.job(job));
    (j.summary, r)
}

struct Judge {
    /// The ledger, if the spool has one yet (without, every file is new).
    store: Option<Box<dyn Store>>,
    /// Content already judged `ingest` in this run, per dataset.
    seen: HashSet<(String, String)>,
    summary: Summary,
}

impl Judge {
    fn job(&mut self, job: Job) -> Result<()> {
        let Job { meta, body } = job;
        match body {
            Body::Rejected(r) => self.quarantine(&meta, &r),
            Body::Left(why) => {
                self.summary.left += 1;
                self.verdict(&meta, "left", |v| v.reason = Some(why));
            }
            Body::Changed => {
                self.summary.released += 1;
                self.verdict(&meta, "changed", |_| {});
            }
            Body::Records(rx) => self.records(meta, rx)?,
        }
        Ok(())
    }

    fn records(&mut self, meta: FileMeta, rx: Receiver<Msg>) -> Result<()> {
        let dataset = meta.dataset().unwrap_or_default().to_string();
        let sha = meta.sha256.clone().unwrap_or_default();
        let stored = match &mut self.store {
            Some(s) => s.ingested_as(&dataset, &sha)?,
            None => None,
        };
        if stored.is_some() || self.seen.contains(&(dataset.clone(), sha.clone())) {
            drop(rx);
            self.summary.duplicate += 1;
            self.summary.datasets.entry(dataset).or_default();
            self.verdict(&meta, "duplicate", |v| v.duplicate_of = stored);
            return Ok(());
        }
        let end = rx.iter().find_map(|m| match m {
            Msg::End(e) => Some(e),
            _ => None,
        });
        match end {
            Some(End::Done {
                records, rejected, ..
            }) => {
                self.seen.insert((dataset.clone(), sha));
                let s = &mut self.summary;
                s.ingested += 1;
                s.records += records;
                s.rejected_records += rejected;
                s.bytes += meta.size;
                let d = s.datasets.entry(dataset).or_default();
                d.files += 1;
                d.records += records;
                d.rejected += rejected;
                self.verdict(&meta, "ingest", |v| {
                    v.records = records;
                    v.rejected_records = rejected;
                });
            }
            Some(End::Rejected {
                reject, rejected, ..
            }) => {
                self.quarantine(&meta, &reject);
                if let Some(v) = self.summary.verdicts.last_mut() {
                    v.rejected_records = rejected;
                }
            }
            Some(End::Changed) => {
                self.summary.released += 1;
                self.verdict(&meta, "changed", |_| {});
            }
            // The worker reads the file again and hands it over anew.
            Some(End::Retry) => {}
            // The worker stopped without an end (a stop was asked for).
            None => {}
        }
        Ok(())
    }

    fn quarantine(&mut self, meta: &FileMeta, r: &Reject) {
        self.summary.quarantined += 1;
        self.summary.bytes += meta.size;
        self.verdict(meta, "quarantine", |v| {
            v.error_kind = Some(r.kind.id());
            v.reason = Some(r.message.clone());
        });
    }

    fn verdict(&mut self, meta: &FileMeta, outcome: &'static str, fill: impl FnOnce(&mut Verdict)) {
        let mut v = Verdict {
            path: meta.rel.display(),
            dataset: meta.dataset().map(str::to_string),
            outcome,
            records: 0,
            rejected_records: 0,
            duplicate_of: None,
            error_kind: None,
            reason: None,
        };
        fill(&mut v);
        self.summary.verdicts.push(v);
        // For the progress bar.
        crate::events::counters()
            .finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
