//! Re-keying a table's stored records under a new key definition, exactly and in the store:
//! every record's key hashed again from its stored values (`_key` rewritten where it changes),
//! the index rebuilt from them, and records that share a key under the new definition found —
//! then either refused (nothing changes) or, with `--keep`, resolved by keeping one record of
//! each key.
//!
//! Memory stays bounded: hashes are sorted in batches written as scratch runs, then merged into
//! the table's one new run; records whose hashes meet are compared by their values.

use super::def::{key_hash, key_text, unnormalized, KeyValue};
use super::runs::{RunMeta, RunWriter, Streams};
use super::table::RunStore;
use anyhow::Result;

/// Hashes sorted in memory at a time (16 MB).
const BATCH: usize = 1 << 20;
/// Rows between looks at whether a stop was asked for.
const CHECK_EVERY: u64 = 65_536;
/// Examples kept of each kind of conflict.
const EXAMPLES: usize = 3;

/// Which record of a key `ferry rekey --keep` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The one stored first (lowest record id).
    First,
    /// The one with the greatest version (with `version`), else the one stored last.
    Latest,
}

/// What the store does for a re-key (SQL stays in the backend).
pub trait RekeyStore: RunStore {
    /// Calls `each(id, _key as stored, key values, version)` for every record, in id order.
    fn scan(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        each: &mut dyn FnMut(i64, Option<i64>, Vec<KeyValue>, KeyValue) -> Result<()>,
    ) -> Result<()>;
    /// Records' values (key, then version) by id, for records whose hashes meet.
    fn values(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        ids: &[i64],
    ) -> Result<Vec<(i64, Vec<KeyValue>, KeyValue)>>;
    /// Sets `_key` of these records.
    fn set_hashes(&mut self, table: &str, changes: &[(i64, i64)]) -> Result<()>;
    fn delete_records(&mut self, table: &str, ids: &[i64]) -> Result<()>;
    /// Where the new index reaches: the coordinate every stored record is at or below.
    fn coordinate_now(&mut self, table: &str) -> Result<i64>;
    /// Records the definition (`None`: the table has no key now) with `covered`, as a new
    /// generation of the table's index.
    fn record_definition(&mut self, table: &str, def: Option<&str>, covered: i64) -> Result<()>;
}

/// What a re-key found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rekeyed {
    pub records: u64,
    /// Records whose `_key` changed.
    pub changed: u64,
    /// Records removed by `--keep` (one of each key stays).
    pub removed: u64,
    /// Why the new key cannot be applied (nothing was changed).
    pub conflict: Option<Conflict>,
}

/// Stored records the new key cannot tell apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conflict {
    /// Keys held by more than one record, and the records beyond the first of each.
    pub keys: u64,
    pub duplicates: u64,
    /// Records with an empty value in a key column.
    pub empty: u64,
    /// Records whose key values the new normalisation would change.
    pub unnormalized: u64,
    pub examples: Vec<String>,
}

impl Conflict {
    /// One sentence: how many of each, and examples.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.duplicates > 0 {
            parts.push(format!(
                "{} record{} share{} a key with another ({} key{} held more than once)",
                self.duplicates,
                crate::reject::plural(self.duplicates as usize),
                if self.duplicates == 1 { "s" } else { "" },
                self.keys,
                crate::reject::plural(self.keys as usize)
            ));
        }
        if self.empty > 0 {
            parts.push(format!(
                "{} record{} {} no value in a key column",
                self.empty,
                crate::reject::plural(self.empty as usize),
                if self.empty == 1 { "has" } else { "have" }
            ));
        }
        if self.unnormalized > 0 {
            parts.push(format!(
                "{} record{} {} key values the new normalisation would change",
                self.unnormalized,
                crate::reject::plural(self.unnormalized as usize),
                if self.unnormalized == 1 {
                    "has"
                } else {
                    "have"
                }
            ));
        }
        format!("{} (e.g. {})", parts.join("; "), self.examples.join("; "))
    }
}

/// Re-keys `table` under `def`: `None` when `stop` ended it (the caller rolls back). With a
/// conflict the caller rolls back too, unless `keep` resolved every duplicate.
pub fn rekey(
    rs: &mut dyn RekeyStore,
    table: &str,
    how: &crate::store::Rekey,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Rekeyed>> {
    let (def, version, keep) = (how.def, how.version, how.keep);
    let names = def.names();
    let norm = def.normalizers();
    let mut out = Rekeyed::default();
    let mut conflict = Conflict::default();
    let mut scratch: Vec<RunMeta> = Vec::new();
    // Scratch runs are slices only: never recorded as runs of the table.
    let mut batch: Vec<(u64, i64)> = Vec::new();
    let mut changes: Vec<(i64, i64)> = Vec::new();
    let mut stopped = false;
    rs.scan(
        table,
        &names,
        version.map(|v| v.0),
        &mut |id, old, vals, _| {
            out.records += 1;
            if out.records % CHECK_EVERY == 0 && stop() {
                stopped = true;
                anyhow::bail!("stopped");
            }
            let Some(h) = key_hash(&vals) else {
                conflict.empty += 1;
                example(
                    &mut conflict,
                    format!("record {id}: {}", key_text(&names, &vals)),
                );
                return Ok(());
            };
            if let Some((i, would)) = unnormalized(&norm, &vals) {
                conflict.unnormalized += 1;
                example(
                    &mut conflict,
                    format!("record {id}: {}={} would be {would:?}", names[i], vals[i]),
                );
            }
            if old != Some(h) {
                changes.push((id, h));
            }
            batch.push((h as u64, id));
            Ok(())
        },
    )
    .or_else(|e| if stopped { Ok(()) } else { Err(e) })?;
    if stopped {
        return Ok(None);
    }
    // The scan is done: write what it found (the scan holds the connection while it runs).
    out.changed = changes.len() as u64;
    for c in changes.chunks(CHECK_EVERY as usize) {
        rs.set_hashes(table, c)?;
        if stop() {
            return Ok(None);
        }
    }
    for b in batch.chunks_mut(BATCH) {
        b.sort_unstable();
        let mut w = RunWriter::new(rs, b.len() as u64)?;
        for &(h, id) in b.iter() {
            w.push(rs, h, id)?;
        }
        scratch.push(w.finish(rs, 0, 0)?);
    }
    drop(batch);
    // Merge the scratch runs into the table's new run; hashes that meet are compared.
    let covered = rs.coordinate_now(table)?;
    let total: i64 = scratch.iter().map(|r| r.entries).sum();
    let mut out_run = RunWriter::new(rs, total as u64)?;
    let mut group: Vec<(u64, i64)> = Vec::new();
    let mut settle = Settle {
        table,
        names: &names,
        version,
        keep,
        groups: Vec::new(),
        waiting: 0,
    };
    let mut streams = Streams::new(rs, &scratch)?;
    while let Some((h, id)) = streams.next(rs)? {
        if group.last().is_some_and(|&(g, _)| g != h) {
            let g = std::mem::take(&mut group);
            settle.push(rs, g, (&mut conflict, &mut out), &mut out_run)?;
        }
        group.push((h, id));
    }
    settle.push(rs, group, (&mut conflict, &mut out), &mut out_run)?;
    settle.flush(rs, (&mut conflict, &mut out), &mut out_run)?;
    let meta = out_run.finish(rs, 0, covered)?;
    for r in &scratch {
        rs.drop_runs(table, &[r.id])?;
    }
    let unresolved = conflict.empty > 0
        || conflict.unnormalized > 0
        || (conflict.duplicates > 0 && keep.is_none());
    if unresolved {
        out.conflict = Some(conflict);
        return Ok(Some(out));
    }
    let old: Vec<i64> = rs.runs(table)?.runs.iter().map(|r| r.id).collect();
    rs.drop_runs(table, &old)?;
    rs.add_run(table, &meta)?;
    rs.record_definition(table, Some(&def.json()), covered)?;
    Ok(Some(out))
}

fn example(c: &mut Conflict, e: String) {
    if c.examples.len() < EXAMPLES {
        c.examples.push(e);
    }
}

/// Hashes that meet, settled a few thousand records at a time (their values read in one go):
/// records with the same key values are duplicates — counted, or (with `keep`) all but one
/// removed. Entries go to the new run in hash order.
struct Settle<'a> {
    table: &'a str,
    names: &'a [String],
    version: Option<(&'a str, crate::typed::ColType)>,
    keep: Option<Keep>,
    /// Groups of one hash waiting, and how many of their records need their values read.
    groups: Vec<Vec<(u64, i64)>>,
    waiting: usize,
}

/// Records whose values are read per statement.
const SETTLE_BATCH: usize = 4096;

type Values = (Vec<KeyValue>, KeyValue);

impl Settle<'_> {
    fn push(
        &mut self,
        rs: &mut dyn RekeyStore,
        group: Vec<(u64, i64)>,
        found: (&mut Conflict, &mut Rekeyed),
        to: &mut RunWriter,
    ) -> Result<()> {
        if group.len() > 1 {
            self.waiting += group.len();
        }
        self.groups.push(group);
        if self.waiting >= SETTLE_BATCH || self.groups.len() >= SETTLE_BATCH {
            self.flush(rs, found, to)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        rs: &mut dyn RekeyStore,
        (conflict, out): (&mut Conflict, &mut Rekeyed),
        to: &mut RunWriter,
    ) -> Result<()> {
        let ids: Vec<i64> = self
            .groups
            .iter()
            .filter(|g| g.len() > 1)
            .flatten()
            .map(|e| e.1)
            .collect();
        let values: std::collections::HashMap<i64, Values> = if ids.is_empty() {
            Default::default()
        } else {
            rs.values(self.table, self.names, self.version.map(|v| v.0), &ids)?
                .into_iter()
                .map(|(id, k, v)| (id, (k, v)))
                .collect()
        };
        let mut gone = Vec::new();
        for g in std::mem::take(&mut self.groups) {
            for (h, id) in self.settle(&g, &values, conflict, &mut gone) {
                to.push(rs, h, id)?;
            }
        }
        if !gone.is_empty() {
            rs.delete_records(self.table, &gone)?;
            out.removed += gone.len() as u64;
        }
        self.waiting = 0;
        Ok(())
    }

    /// One hash's records: those that stay in the index (ids to remove go to `gone`).
    fn settle(
        &self,
        group: &[(u64, i64)],
        values: &std::collections::HashMap<i64, Values>,
        conflict: &mut Conflict,
        gone: &mut Vec<i64>,
    ) -> Vec<(u64, i64)> {
        if group.len() < 2 {
            return group.to_vec();
        }
        let h = group[0].0;
        let mut rows: Vec<(i64, &Values)> = group
            .iter()
            .filter_map(|&(_, id)| values.get(&id).map(|v| (id, v)))
            .collect();
        rows.sort_by_key(|r| r.0);
        let mut kept = Vec::new();
        let mut done = vec![false; rows.len()];
        for i in 0..rows.len() {
            if done[i] {
                continue;
            }
            let same: Vec<usize> = (i..rows.len())
                .filter(|&j| !done[j] && rows[j].1 .0 == rows[i].1 .0)
                .collect();
            for &j in &same {
                done[j] = true;
            }
            if same.len() == 1 {
                kept.push((h, rows[i].0));
                continue;
            }
            conflict.keys += 1;
            conflict.duplicates += same.len() as u64 - 1;
            let list: Vec<String> = same.iter().map(|&j| rows[j].0.to_string()).collect();
            example(
                conflict,
                format!(
                    "{}: records {}",
                    key_text(self.names, &rows[i].1 .0),
                    list.join(", ")
                ),
            );
            let Some(keep) = self.keep else {
                continue;
            };
            let winner = match (keep, self.version) {
                (Keep::First, _) => same[0],
                (Keep::Latest, None) => same[same.len() - 1],
                (Keep::Latest, Some((_, ty))) => {
                    let mut best = same[0];
                    for &j in &same[1..] {
                        let (a, b) = (version_view(&rows[j].1 .1), version_view(&rows[best].1 .1));
                        if super::decide::compare_versions(ty, a, b) != std::cmp::Ordering::Less {
                            best = j;
                        }
                    }
                    best
                }
            };
            gone.extend(same.iter().filter(|&&j| j != winner).map(|&j| rows[j].0));
            kept.push((h, rows[winner].0));
        }
        kept
    }
}

fn version_view(v: &KeyValue) -> super::decide::Version<'_> {
    use super::decide::Version;
    match v {
        KeyValue::Int(i) => Version::Int(*i),
        KeyValue::Text(t) => Version::Text(t),
        _ => Version::Null,
    }
}
