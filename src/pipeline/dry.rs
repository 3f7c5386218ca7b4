//! `run --dry-run`: the judge that takes the writer's place. Workers read each file in place and
//! run it through the same stages as a real run (format, columns, typed values, keys, bad
//! records against `max_bad_records`); the judge only reads the ledger, to tell a duplicate
//! file, and records what would happen. Nothing is written: no ledger row, no table, no moved
//! or copied file, no report.
//!
//! Record keys are judged as the writer judges them (`store::keys`): each keyed chunk's stored
//! records are found through the table's key index and compared by the store, and the dataset's
//! `on_key` decides — so key duplicates, updates and key-exists rejects are counted as the run
//! will count them. Records this run would store are remembered by key hash, with their version
//! and a hash of their values, so a later file of the run meets them as the run would (equal
//! 64-bit hashes are taken for equal keys there: they differ with odds of about one in 2^64).

use super::stages::bad::BadRecords;
use super::{key_rule, Body, ColumnSource, Columns, End, FileMeta, Job, Msg};
use crate::config::DatasetSpec;
use crate::events::{Summary, Verdict};
use crate::record::{Cell, Chunk};
use crate::reject::{Kind, Reject, Stage};
use crate::store::keys::decide::{compare_versions, version_of, Version};
use crate::store::keys::map::IdMap;
use crate::store::keys::{decide, Rule, Seen, TableKeys, DEFAULT_CAP};
use crate::store::{ChunkInsert, Location, Store};
use crate::typed::KeyHasher;
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
    // Keyed files are judged in the order they were found, as the writer stores them.
    let mut order = super::turns::InTurn::default();
    let r = (|| -> Result<()> {
        loop {
            let job = match order.next() {
                Some(job) => job,
                None => match jobs.recv_timeout(std::time::Duration::from_millis(5)) {
                    Ok(job) => match order.admit(job) {
                        Some(job) => job,
                        None => continue,
                    },
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match order.any() {
                        Some(job) => job,
                        None => return Ok(()),
                    },
                },
            };
            j.job(job)?;
            // Its turn ended with it.
            order.committed();
        }
    })();
    (j.summary, r)
}

struct Judge {
    /// The ledger, if the spool has one yet (without, every file is new).
    store: Option<Box<dyn Store>>,
    /// Content already judged `ingest` in this run, per dataset.
    seen: HashSet<(String, String)>,
    /// Per keyed dataset: its table's key index as stored, and what this run would store.
    keys: HashMap<String, DryKeys>,
    summary: Summary,
}

/// A keyed dataset as the dry run sees it.
struct DryKeys {
    /// Its table, when it exists.
    table: Option<String>,
    index: TableKeys,
    /// Records this run would store, by key hash (the latest of each key).
    mine: IdMap<Mine>,
    /// Ids for them: -1, -2, … (never a stored record's).
    next: i64,
}

/// A record this run would store.
#[derive(Clone)]
struct Mine {
    id: i64,
    version: Owned,
    /// A hash of its values by column name.
    content: i64,
}

#[derive(Clone, Debug, PartialEq)]
enum Owned {
    Null,
    Int(i64),
    Text(String),
}

impl Owned {
    fn of(v: Version) -> Owned {
        match v {
            Version::Null => Owned::Null,
            Version::Int(i) => Owned::Int(i),
            Version::Text(t) => Owned::Text(t.to_string()),
        }
    }

    fn view(&self) -> Version<'_> {
        match self {
            Owned::Null => Version::Null,
            Owned::Int(i) => Version::Int(*i),
            Owned::Text(t) => Version::Text(t),
        }
    }
}

/// One file's keyed records as the judge counts them.
#[derive(Default)]
struct FileKeys {
    /// Per chunk cell: its table column (`None`: not in the table yet).
    columns: Vec<Option<String>>,
    /// Per chunk cell: the name its values are hashed under for `Mine::content`.
    names: Vec<String>,
    key_cells: Vec<Option<usize>>,
    rule: Rule,
    stored: u64,
    updated: u64,
    duplicates: u64,
    key_rejected: u64,
    bad: Option<BadRecords>,
    /// What the file changed in `DryKeys::mine`: the hash and what it held before.
    undo: Vec<(i64, Option<Mine>)>,
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
            Body::Unit(unit) => self.unit(meta, unit)?,
        }
        Ok(())
    }

    /// A container judged as the writer judges it: a duplicate of a stored one, or its members
    /// one by one; in unit mode a member that would fail sets the whole container aside (what
    /// the members would have done is not counted then).
    fn unit(&mut self, meta: FileMeta, unit: crate::pipeline::Unit) -> Result<()> {
        let dataset = meta.dataset().unwrap_or_default().to_string();
        let sha = meta.sha256.clone().unwrap_or_default();
        let stored = match &mut self.store {
            Some(s) => s.ingested_as(&dataset, &sha)?,
            None => None,
        };
        let done = |u: crate::pipeline::Unit| {
            let _ = u.verdict.send(crate::pipeline::Verdict::Done);
            let _ = std::fs::remove_dir_all(&u.dir);
        };
        if stored.is_some() || !self.seen.insert((dataset.clone(), sha)) {
            done(unit);
            self.summary.duplicate += 1;
            self.verdict(&meta, "duplicate", |v| v.duplicate_of = stored);
            return Ok(());
        }
        let before = self.summary.clone();
        let mut failed = None;
        let mut ended = false;
        for part in unit.parts.iter() {
            match part {
                crate::pipeline::Part::Member(job) => {
                    let at = self.summary.verdicts.len();
                    let path = job.meta.rel.display();
                    self.job(*job)?;
                    let bad = self.summary.verdicts[at..]
                        .iter()
                        .find(|v| v.outcome == "quarantine");
                    if let (Some(v), false) = (bad, unit.each) {
                        let why = v.reason.clone().unwrap_or_default();
                        let kind = v
                            .error_kind
                            .and_then(Kind::from_id)
                            .unwrap_or(Kind::Internal);
                        let r = Reject::new(kind, Stage::Decode, why);
                        failed = Some(super::unit::unit_failed(&path, r));
                        break;
                    }
                }
                crate::pipeline::Part::Failed(r) => {
                    failed = Some(r);
                    break;
                }
                crate::pipeline::Part::End(_) => ended = true,
            }
        }
        done(unit);
        match failed {
            Some(r) => {
                self.summary = before;
                self.quarantine(&meta, &r);
            }
            None if !ended => {
                let r = Reject::new(
                    Kind::Internal,
                    Stage::Decode,
                    "the container was not opened whole",
                );
                self.quarantine(&meta, &r);
            }
            None => {
                self.summary.unpacked += 1;
                self.verdict(&meta, "unpack", |_| {});
            }
        }
        Ok(())
    }

    fn records(&mut self, meta: FileMeta, rx: Receiver<Msg>) -> Result<()> {
        let dataset = meta.dataset().unwrap_or_default().to_string();
        let mut sha = meta.sha256.clone().unwrap_or_default();
        let stored = match &mut self.store {
            Some(s) => s.ingested_as(&dataset, &sha)?,
            None => None,
        };
        if meta.sha256.is_some()
            && (stored.is_some() || self.seen.contains(&(dataset.clone(), sha.clone())))
        {
            drop(rx);
            self.summary.duplicate += 1;
            self.summary.datasets.entry(dataset).or_default();
            self.verdict(&meta, "duplicate", |v| v.duplicate_of = stored);
            return Ok(());
        }
        let spec = meta.spec.clone();
        let keyed = spec.as_ref().is_some_and(|s| !s.key.is_empty());
        let mut file = FileKeys::default();
        let mut end = None;
        // An identity learned after the records (an OpenPGP file's plaintext) that is stored.
        let mut late_duplicate = None;
        for m in rx.iter() {
            match m {
                Msg::Identity { sha256, .. } => {
                    sha = sha256;
                    let stored = match &mut self.store {
                        Some(s) => s.ingested_as(&dataset, &sha)?,
                        None => None,
                    };
                    if stored.is_some() || self.seen.contains(&(dataset.clone(), sha.clone())) {
                        late_duplicate = Some(stored);
                        break;
                    }
                }
                Msg::Columns(cols) if keyed => {
                    let spec = spec.as_deref().expect("keyed");
                    self.columns(spec, &cols, &mut file)?;
                }
                Msg::Rows(chunk) if keyed => {
                    let spec = spec.as_deref().expect("keyed");
                    if let Some(r) = self.chunk(spec, &chunk, &mut file)? {
                        end = Some(r);
                        break;
                    }
                }
                Msg::Rejects(r) if keyed => {
                    let spec = spec.as_deref().expect("keyed");
                    let bad = file
                        .bad
                        .get_or_insert_with(|| BadRecords::new(spec.max_bad));
                    r.into_iter().for_each(|x| bad.record(x));
                }
                Msg::End(e) => {
                    end = Some(self.ended(e, &file));
                    break;
                }
                _ => {}
            }
        }
        if !matches!(end, Some(End::Done { .. })) {
            // Nothing of the file would be stored: later files must not meet its records.
            if let Some(k) = self.keys.get_mut(&dataset) {
                for (h, before) in file.undo.drain(..).rev() {
                    match before {
                        Some(m) => k.mine.insert(h, m),
                        None => k.mine.remove(&h),
                    };
                }
            }
        }
        if let Some(stored) = late_duplicate {
            self.summary.duplicate += 1;
            self.summary.datasets.entry(dataset).or_default();
            self.verdict(&meta, "duplicate", |v| v.duplicate_of = stored);
            return Ok(());
        }
        match end {
            Some(End::Done {
                records, rejected, ..
            }) => {
                self.seen.insert((dataset.clone(), sha));
                let (stored, dups, updated) = if keyed {
                    (file.stored, file.duplicates, file.updated)
                } else {
                    (records, 0, 0)
                };
                let rejected = rejected + file.key_rejected;
                let s = &mut self.summary;
                s.ingested += 1;
                s.records += stored;
                s.duplicate_records += dups;
                s.updated_records += updated;
                s.rejected_records += rejected;
                s.bytes += meta.size;
                let d = s.datasets.entry(dataset).or_default();
                d.files += 1;
                d.records += stored;
                d.rejected += rejected;
                d.duplicate_records += dups;
                d.updated_records += updated;
                self.verdict(&meta, "ingest", |v| {
                    v.records = stored;
                    v.duplicate_records = dups;
                    v.rejected_records = rejected;
                    v.updated_records = updated;
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

    /// How the stream ended, with the keys this file had refused counted against
    /// `max_bad_records` as the writer counts them.
    fn ended(&self, end: End, file: &FileKeys) -> End {
        if let End::Done {
            records, rejected, ..
        } = &end
        {
            if let Some(bad) = file.bad.as_ref().filter(|_| file.key_rejected > 0) {
                if let Some(reject) = bad.verdict(records + rejected, true) {
                    return End::Rejected {
                        format: None,
                        reject,
                        rejects: Vec::new(),
                        rejected: bad.count,
                    };
                }
            }
        }
        end
    }

    /// A keyed file's columns: where each cell would land (a read of the registry).
    fn columns(&mut self, spec: &DatasetSpec, cols: &Columns, file: &mut FileKeys) -> Result<()> {
        let k = self.keys_of(spec)?;
        let exists = k.table.is_some();
        file.columns.clear();
        file.names.clear();
        for d in &cols.defs {
            let (column, name) = match &d.source {
                ColumnSource::Declared(n) => (Some(n.clone()), n.clone()),
                ColumnSource::File(key) => {
                    let col = match (&mut self.store, exists) {
                        (Some(s), true) => s.file_column(&spec.name, key)?,
                        _ => None,
                    };
                    let name = col.clone().unwrap_or_else(|| key.describe());
                    (col, name)
                }
            };
            file.columns.push(column);
            file.names.push(name.to_lowercase());
        }
        file.key_cells = cols.key.clone();
        file.rule = key_rule(spec, cols);
        Ok(())
    }

    /// Judges a keyed chunk as the writer would; the file's end if its bad records are over the
    /// limit whatever follows.
    fn chunk(
        &mut self,
        spec: &DatasetSpec,
        chunk: &Chunk,
        file: &mut FileKeys,
    ) -> Result<Option<End>> {
        let n = chunk.rows();
        let k = self.keys.get_mut(&spec.name).expect("columns came first");
        let mut stored: Vec<Option<(i64, Seen)>> = vec![None; n];
        if let (Some(table), Some(store)) = (&k.table, &mut self.store) {
            let ins = ChunkInsert {
                dataset: &spec.name,
                table,
                columns: &file.columns,
                key_cells: &file.key_cells,
                rule: &file.rule,
                file_id: 0,
                chunk,
            };
            stored = store.key_lookup(&mut k.index, &ins)?;
            // A value in a column the table does not have yet: the stored record has NULL there.
            let new_cols: Vec<usize> = (0..chunk.width)
                .filter(|&c| file.columns.get(c).is_some_and(Option::is_none))
                .collect();
            for (r, s) in stored.iter_mut().enumerate() {
                if let Some((_, Seen::Same { equal, .. })) = s {
                    if new_cols.iter().any(|&c| chunk.row(r)[c] != Cell::Null) {
                        *equal = Some(false);
                    }
                }
            }
        }
        // Records this run would have stored are met before anything stored.
        for (r, s) in stored.iter_mut().enumerate() {
            if let Some(m) = k.mine.get(&chunk.keys[r]) {
                *s = Some((m.id, mine_seen(chunk, file, r, m)));
            }
        }
        let plan = decide(chunk, &file.key_cells, &file.rule, &stored);
        for &r in &plan.insert {
            let r = r as usize;
            let h = chunk.keys[r];
            k.next -= 1;
            let version = match file.rule.version {
                Some((cell, _)) => Owned::of(version_of(
                    chunk,
                    crate::store::keys::cell_at(chunk, r, cell),
                )),
                None => Owned::Null,
            };
            let m = Mine {
                id: k.next,
                version,
                content: content_hash(chunk, &file.names, r),
            };
            file.undo.push((h, k.mine.insert(h, m)));
        }
        file.stored += plan.new + plan.updated;
        file.updated += plan.updated;
        file.duplicates += plan.duplicates;
        if !plan.rejects.is_empty() {
            file.key_rejected += plan.rejects.len() as u64;
            let bad = file
                .bad
                .get_or_insert_with(|| BadRecords::new(spec.max_bad));
            for r in plan.rejects {
                bad.record(r);
            }
            if bad.doomed {
                let reject = bad.verdict(0, false).expect("doomed");
                return Ok(Some(End::Rejected {
                    format: None,
                    reject,
                    rejects: Vec::new(),
                    rejected: bad.count,
                }));
            }
        }
        Ok(None)
    }

    /// The dataset's key index as stored (read once), and what this run would store.
    fn keys_of(&mut self, spec: &DatasetSpec) -> Result<&mut DryKeys> {
        if !self.keys.contains_key(&spec.name) {
            let table = match &mut self.store {
                Some(store) => match store.table_or_planned(&spec.name)? {
                    (t, true) => Some(t),
                    _ => None,
                },
                None => None,
            };
            self.keys.insert(
                spec.name.clone(),
                DryKeys {
                    table,
                    index: TableKeys::new(DEFAULT_CAP),
                    mine: IdMap::default(),
                    next: 0,
                },
            );
        }
        Ok(self.keys.get_mut(&spec.name).expect("inserted"))
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

/// How a record this run would store compares with row `r` (which has its key hash).
fn mine_seen(chunk: &Chunk, file: &FileKeys, r: usize, m: &Mine) -> Seen {
    let newer = file.rule.version.map(|(cell, ty)| {
        let v = version_of(chunk, crate::store::keys::cell_at(chunk, r, cell));
        compare_versions(ty, v, m.version.view())
    });
    Seen::Same {
        newer,
        equal: Some(content_hash(chunk, &file.names, r) == m.content),
    }
}

/// A hash of a row's values by column name (NULLs left out: a column the record lacks is NULL).
fn content_hash(chunk: &Chunk, names: &[String], r: usize) -> i64 {
    let mut cells: Vec<(&str, Cell)> = names
        .iter()
        .zip(chunk.row(r))
        .filter(|(_, c)| **c != Cell::Null)
        .map(|(n, c)| (n.as_str(), *c))
        .collect();
    cells.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = KeyHasher::default();
    for (n, c) in cells {
        h.text(n);
        match c {
            Cell::Int(i) => h.int(i),
            Cell::Real(x) => h.real(x),
            t => h.text(chunk.text(t).unwrap_or_default()),
        }
    }
    h.finish()
}
