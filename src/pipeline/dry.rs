//! `run --dry-run`: the judge that takes the writer's place. Workers read each file in place and
//! run it through the same stages as a real run (format, columns, typed values, keys, bad
//! records against `max_bad_records`); the judge only reads the ledger, to tell a duplicate
//! file, and records what would happen. Nothing is written: no ledger row, no table, no moved
//! or copied file, no report.
//!
//! Record keys are judged too: a record whose key hash is already stored in the dataset's table,
//! or was seen earlier in this run, is counted as a duplicate key, as the run would count it.
//! (The run compares the values behind equal hashes; a dry run takes equal 64-bit hashes for
//! equal keys, which differ only with odds of about one in 2^64 per pair.)

use super::{Body, End, FileMeta, Job, Msg};
use crate::events::{Summary, Verdict};
use crate::reject::Reject;
use crate::store::keys::KeyMap;
use crate::store::{Location, Store};
use anyhow::Result;
use crossbeam_channel::Receiver;
use std::collections::{HashMap, HashSet};

pub fn judge(at: &Location, jobs: Receiver<Job>) -> (Summary, Result<()>) {
    let store = match crate::store::open_existing(at) {
        Ok(s) => s,
        Err(e) => return (Summary::default(), Err(e)),
    };
    let mut j = Judge {
        store,
        seen: HashSet::new(),
        keys: HashMap::new(),
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
    /// Per keyed dataset: the key hashes stored, and those of records this run would store.
    keys: HashMap<String, KeyMap>,
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
        let keyed = meta.spec.as_ref().is_some_and(|s| !s.key.is_empty());
        // Key hashes this file would add, and its records whose key is stored already.
        let (mut added, mut dups) = (Vec::new(), 0u64);
        let mut end = None;
        for m in rx.iter() {
            match m {
                Msg::Rows(chunk) if keyed => {
                    let keys = self.keys_of(&dataset)?;
                    for &h in &chunk.keys {
                        if keys.contains(h) {
                            dups += 1;
                        } else {
                            keys.insert(h, 0);
                            added.push(h);
                        }
                    }
                }
                Msg::End(e) => {
                    end = Some(e);
                    break;
                }
                _ => {}
            }
        }
        if !matches!(end, Some(End::Done { .. })) && !added.is_empty() {
            if let Some(k) = self.keys.get_mut(&dataset) {
                k.remove_all(&added);
            }
        }
        match end {
            Some(End::Done {
                records, rejected, ..
            }) => {
                self.seen.insert((dataset.clone(), sha));
                let stored = records - dups;
                let s = &mut self.summary;
                s.ingested += 1;
                s.records += stored;
                s.duplicate_records += dups;
                s.rejected_records += rejected;
                s.bytes += meta.size;
                let d = s.datasets.entry(dataset).or_default();
                d.files += 1;
                d.records += stored;
                d.rejected += rejected;
                d.duplicate_records += dups;
                self.verdict(&meta, "ingest", |v| {
                    v.records = stored;
                    v.duplicate_records = dups;
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

    /// The key hashes of a keyed dataset: those stored (read once), and this run's since.
    fn keys_of(&mut self, dataset: &str) -> Result<&mut KeyMap> {
        if !self.keys.contains_key(dataset) {
            let mut map = KeyMap::default();
            if let Some(store) = &mut self.store {
                let (table, exists) = store.table_or_planned(dataset)?;
                if exists {
                    store.key_hashes(&table, &mut |h| map.insert(h, 0))?;
                }
            }
            self.keys.insert(dataset.to_string(), map);
        }
        Ok(self.keys.get_mut(dataset).expect("inserted"))
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
        let mut v = Verdict::new(
            meta.rel.display(),
            meta.dataset().map(str::to_string),
            outcome,
        );
        fill(&mut v);
        self.summary.verdicts.push(v);
        // For the progress bar.
        crate::events::counters()
            .finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
