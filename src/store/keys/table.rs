//! One table's key index as a writer (or a dry run) sees it: the runs in the store, the tail in
//! memory, and what of the runs is held in memory too.
//!
//! - **Probing.** A chunk's hashes are looked up in memory first; hashes not found there are
//!   looked up in every run memory does not hold (*cold* runs), one slice per hash and run,
//!   fetched together per run. Every match is then compared with the stored record by the store
//!   (`Compare`), so the index may hold stale or colliding entries, never decide wrongly.
//! - **Loading.** Probing a cold run costs about a hundred times what reading one entry of it
//!   in a scan costs, so once the hashes probed against a run would have paid for reading it
//!   whole, it is read into memory (if memory allows): a small run by a big load at once, a big
//!   run by a small file never. What a run costs is bounded by twice the better of the two.
//! - **Flushing.** The tail (records after `covered`) is held by every writer; when it grows
//!   past `FLUSH` entries, or when a writer finishes, it is written as a run and `covered`
//!   moves, so a new process reads at most a bounded tail from the table.
//! - **Merging.** Runs are merged so each is at least twice everything newer (`merge_plan`):
//!   a handful of runs to probe, each entry rewritten a few times.

use super::index::KeyIndex;
use super::runs::{decode, find, merge_plan, slice_of, RunMeta, RunWriter, Streams, SCAN_SLICES};
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// Tail entries that make a writer write a run at its next commit.
pub const FLUSH: usize = 1 << 16;
/// What probing a hash in a cold run costs against reading one of its entries in a scan.
const PROBE_TO_SCAN: u64 = 100;
/// Entries a merge may take at a commit in the middle of the work (bigger merges wait until the
/// writer has finished or is idle).
const MERGE_AT_COMMIT: u64 = 4 * FLUSH as u64;

/// What the key index needs of a store (its own tables; SQL stays in the backend).
pub trait RunStore {
    /// The table's `covered` mark, its index's generation and its runs, oldest first.
    fn runs(&mut self, table: &str) -> Result<RunSet>;
    /// The given slices of a run (sorted, distinct); `each` gets those that exist.
    fn get_slices(
        &mut self,
        run: i64,
        wanted: &[u32],
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()>;
    /// Slices `from..to` of a run that exist, in order.
    fn scan_slices(
        &mut self,
        run: i64,
        from: u32,
        to: u32,
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()>;
    /// A new run's id.
    fn new_run(&mut self) -> Result<i64>;
    fn put_slices(&mut self, run: i64, slices: &[(u32, Vec<u8>)]) -> Result<()>;
    /// Records a run whose slices are written.
    fn add_run(&mut self, table: &str, meta: &RunMeta) -> Result<()>;
    /// Removes runs and their slices.
    fn drop_runs(&mut self, table: &str, runs: &[i64]) -> Result<()>;
    fn set_covered(&mut self, table: &str, covered: i64) -> Result<()>;
    /// Which of these record ids name a stored record.
    fn live(&mut self, table: &str, ids: &[i64]) -> Result<HashSet<i64>>;
}

/// A table's runs as recorded.
#[derive(Debug, Clone, Default)]
pub struct RunSet {
    /// Every keyed record stored at a coordinate up to this is in a run.
    pub covered: i64,
    /// One more at each re-key: an index of another generation is of no use.
    pub generation: i64,
    pub runs: Vec<RunMeta>,
}

#[derive(Debug, Clone)]
struct Run {
    meta: RunMeta,
    /// Hashes probed in it by this process.
    probed: u64,
}

/// An entry of the tail: the coordinate it was stored at, its hash and record id.
#[derive(Debug, Clone, Copy)]
struct TailEntry {
    at: i64,
    h: i64,
    id: i64,
}

/// The tail's length, the replaced ids', and what memory reached, at the start of a file.
#[derive(Debug, Clone, Default)]
struct Mark {
    tail: usize,
    gone: usize,
    hi: i64,
    known: Vec<(i64, i64)>,
}

/// A table's key index, for one connection.
#[derive(Default)]
pub struct TableKeys {
    pub mem: KeyIndex,
    /// Every record stored at a coordinate up to this is in a run.
    covered: i64,
    runs: Vec<Run>,
    /// Coordinate ranges `(lo, hi]` whose records are all in `mem`.
    known: Vec<(i64, i64)>,
    /// The highest coordinate whose records `mem` has (the tail reaches up to it).
    pub hi: i64,
    tail: Vec<TailEntry>,
    /// Ids of tail records this connection replaced (kept out of the next run).
    gone: Vec<i64>,
    /// Where the current file started: what to go back to when it is undone.
    file_mark: Mark,
    /// Whether the runs were read in this transaction.
    pub fresh: bool,
    /// Whether `covered` and the runs were ever read.
    started: bool,
    generation: i64,
    /// The most entries memory may hold besides the tail.
    cap: usize,
}

/// How a chunk's hashes were found: per row, the stored ids to compare with.
pub struct Found {
    pub candidates: Vec<Vec<i64>>,
    /// Rows whose hash was looked up in the cold runs too.
    pub probed: Vec<bool>,
    /// Rows whose hash memory does not hold.
    pub absent: Vec<bool>,
}

impl TableKeys {
    pub fn new(cap: usize) -> TableKeys {
        TableKeys {
            cap,
            ..TableKeys::default()
        }
    }

    /// Reads the runs again (another writer may have flushed or merged); returns from which
    /// coordinate the tail must be read (`None`: memory has it all).
    pub fn refresh(&mut self, rs: &mut dyn RunStore, table: &str) -> Result<i64> {
        let RunSet {
            covered,
            generation,
            runs: metas,
        } = rs.runs(table)?;
        if self.started && generation != self.generation {
            // The table was re-keyed: nothing held is of use.
            *self = TableKeys::new(self.cap);
        }
        self.generation = generation;
        let probed: HashMap<i64, u64> = self.runs.iter().map(|r| (r.meta.id, r.probed)).collect();
        self.runs = metas
            .into_iter()
            .map(|meta| Run {
                probed: probed.get(&meta.id).copied().unwrap_or(0),
                meta,
            })
            .collect();
        if !self.started {
            self.started = true;
            self.hi = covered;
            self.known.clear();
        }
        if covered > self.covered {
            // Another writer wrote the tail up to `covered` as runs.
            self.tail.retain(|e| e.at > covered);
            self.gone.clear();
        }
        self.covered = covered;
        self.fresh = true;
        self.mark();
        // Records between what memory has and `covered` are in runs: no need to read them.
        Ok(self.hi.max(covered))
    }

    /// Committed records stored at coordinates `(from, to]` (by anyone), now in memory.
    pub fn learn(&mut self, from: i64, to: i64, entries: &[(i64, i64, i64)]) {
        for &(at, h, id) in entries {
            self.mem.add_committed(h, id);
            if at > self.covered {
                self.tail.push(TailEntry { at, h, id });
            }
        }
        add_range(&mut self.known, from, to);
        self.hi = self.hi.max(to);
        self.mark();
    }

    fn mark(&mut self) {
        self.file_mark = Mark {
            tail: self.tail.len(),
            gone: self.gone.len(),
            hi: self.hi,
            known: self.known.clone(),
        };
    }

    /// Records this connection stored (its own, uncommitted): `(coordinate, hash, id, whether
    /// memory is known not to hold the hash)`, and those that replaced others `(coordinate,
    /// hash, old id, new id)`.
    pub fn stored(&mut self, added: &[(i64, i64, i64, bool)], replaced: &[(i64, i64, i64, i64)]) {
        let mut top = self.hi;
        let hashes: Vec<i64> = added.iter().map(|e| e.1).collect();
        self.mem.touch(&hashes);
        for &(at, h, id, absent) in added {
            if absent {
                self.mem.add_absent(h, id);
            } else {
                self.mem.add(h, id);
            }
            self.tail.push(TailEntry { at, h, id });
            top = top.max(at);
        }
        for &(at, h, old, new) in replaced {
            self.mem.replace(h, old, new);
            self.tail.push(TailEntry { at, h, id: new });
            self.gone.push(old);
            top = top.max(at);
        }
        if top > self.hi {
            add_range(&mut self.known, self.hi, top);
            self.hi = top;
        }
    }

    pub fn file_done(&mut self) {
        self.mem.file_done();
        self.mark();
    }

    /// The current file's savepoint was rolled back: what it stored is forgotten.
    pub fn undo_file(&mut self) {
        self.mem.undo_file();
        let m = std::mem::take(&mut self.file_mark);
        self.tail.truncate(m.tail);
        self.gone.truncate(m.gone);
        self.hi = m.hi;
        self.known = m.known;
        self.mark();
    }

    pub fn committed(&mut self) {
        self.mem.committed();
        self.fresh = false;
        if self.mem.len() > self.cap + self.tail.len() {
            self.evict();
        }
        self.mark();
    }

    /// Keeps only the tail in memory; every run is cold again.
    fn evict(&mut self) {
        self.mem = KeyIndex::default();
        for e in &self.tail {
            self.mem.add_committed(e.h, e.id);
        }
        self.known.clear();
        add_range(&mut self.known, self.covered, self.hi);
    }

    /// Whether a run's records are all in memory.
    fn held(&self, r: &RunMeta) -> bool {
        self.known.iter().any(|&(lo, hi)| lo <= r.lo && r.hi <= hi)
    }

    /// Entries in the tail: what the next flush would write.
    pub fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Finds the stored records that may have each row's key: in memory, then (for rows
    /// memory has nothing for, or `all`) in the cold runs, reading runs whole where that is
    /// cheaper.
    pub fn find(&mut self, rs: &mut dyn RunStore, hashes: &[i64], rows: &[bool]) -> Result<Found> {
        let want: Vec<usize> = (0..hashes.len()).filter(|&r| rows[r]).collect();
        let mut candidates: Vec<Vec<i64>> = vec![Vec::new(); hashes.len()];
        let mut probed = vec![false; hashes.len()];
        let firsts = self.mem.firsts(hashes);
        let missing: Vec<usize> = want
            .iter()
            .copied()
            .filter(|&r| firsts[r].is_none())
            .collect();
        let firsts = if self.load_worthwhile(rs, missing.len() as u64)? {
            self.mem.firsts(hashes)
        } else {
            firsts
        };
        let absent = firsts.iter().map(Option::is_none).collect();
        let mut cold_rows = Vec::new();
        for &r in &want {
            candidates[r].extend(self.mem.ids(hashes[r], firsts[r]));
            if candidates[r].is_empty() {
                cold_rows.push(r);
            }
        }
        self.probe_cold(rs, hashes, &cold_rows, &mut candidates)?;
        for r in cold_rows {
            probed[r] = true;
        }
        Ok(Found {
            candidates,
            probed,
            absent,
        })
    }

    /// Looks rows up in the cold runs (after their candidates in memory proved other keys).
    pub fn find_cold(
        &mut self,
        rs: &mut dyn RunStore,
        hashes: &[i64],
        rows: &[usize],
    ) -> Result<Vec<Vec<i64>>> {
        let mut candidates = vec![Vec::new(); hashes.len()];
        self.probe_cold(rs, hashes, rows, &mut candidates)?;
        Ok(candidates)
    }

    /// Reads into memory every cold run that `n` more probes would have paid for, if memory
    /// allows.
    fn load_worthwhile(&mut self, rs: &mut dyn RunStore, n: u64) -> Result<bool> {
        let mut loaded = false;
        if n == 0 {
            return Ok(loaded);
        }
        for i in 0..self.runs.len() {
            let run = self.runs[i].meta;
            if self.held(&run) {
                continue;
            }
            let probes = self.runs[i].probed + n;
            let fits = self.mem.len() + run.entries as usize <= self.cap + self.tail.len();
            if fits && probes * PROBE_TO_SCAN >= run.entries as u64 {
                self.load(rs, &run)?;
                loaded = true;
            }
        }
        Ok(loaded)
    }

    /// Reads a run whole into memory.
    fn load(&mut self, rs: &mut dyn RunStore, run: &RunMeta) -> Result<()> {
        let started = std::time::Instant::now();
        let mut entries: Vec<(u64, i64)> = Vec::with_capacity(run.entries.max(0) as usize);
        let mut from = 0;
        while from < run.slices() {
            let to = from.saturating_add(SCAN_SLICES).min(run.slices());
            rs.scan_slices(run.id, from, to, &mut |s, blob| {
                entries.extend(decode(blob, run.bits, s))
            })?;
            from = to;
        }
        self.mem.load_sorted(&entries);
        add_range(&mut self.known, run.lo, run.hi);
        if entries.len() > 100_000 {
            tracing::debug!(
                run = run.id,
                keys = entries.len(),
                ms = started.elapsed().as_millis() as u64,
                "read a key run into memory"
            );
        }
        Ok(())
    }

    fn probe_cold(
        &mut self,
        rs: &mut dyn RunStore,
        hashes: &[i64],
        rows: &[usize],
        candidates: &mut [Vec<i64>],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        for i in 0..self.runs.len() {
            let run = self.runs[i].meta;
            if self.held(&run) {
                continue;
            }
            self.runs[i].probed += rows.len() as u64;
            let mut by_slice: Vec<(u32, usize)> = rows
                .iter()
                .map(|&r| (slice_of(hashes[r], run.bits), r))
                .collect();
            by_slice.sort_unstable();
            let mut wanted: Vec<u32> = by_slice.iter().map(|&(s, _)| s).collect();
            wanted.dedup();
            rs.get_slices(run.id, &wanted, &mut |s, blob| {
                let from = by_slice.partition_point(|&(x, _)| x < s);
                for &(_, r) in by_slice[from..].iter().take_while(|&&(x, _)| x == s) {
                    candidates[r].extend(find(blob, run.bits, s, hashes[r]));
                }
            })?;
        }
        Ok(())
    }

    /// Writes the tail as a run if it is big enough (`force`: if it has anything), then merges
    /// runs as `merge_plan` says, up to `limit` entries per merge (`None`: those a commit in the
    /// middle of the work may take). Whether anything changed; `None` when `stop` ended a
    /// merge halfway, and the transaction must be rolled back.
    pub fn maintain(
        &mut self,
        rs: &mut dyn RunStore,
        table: &str,
        force: bool,
        limit: Option<u64>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<bool>> {
        let mut changed = false;
        if (force && !self.tail.is_empty()) || self.tail.len() >= FLUSH {
            self.flush(rs, table)?;
            changed = true;
        }
        let limit = limit.unwrap_or(MERGE_AT_COMMIT);
        loop {
            if stop() {
                break;
            }
            let sizes: Vec<u64> = self.runs.iter().map(|r| r.meta.entries as u64).collect();
            let Some(range) = merge_plan(&sizes, limit) else {
                break;
            };
            // Every run at once, all of them in memory with nothing else: written from memory
            // (already in hash order) instead of read back and merged.
            let whole = range == (0..self.runs.len())
                && self.tail.is_empty()
                && self.runs.iter().all(|r| self.held(&r.meta));
            let done = if whole {
                self.rewrite(rs, table, stop)?
            } else {
                self.merge(rs, table, range, stop)?
            };
            if !done {
                return Ok(None);
            }
            changed = true;
        }
        Ok(Some(changed))
    }

    /// Writes the tail as a run covering `(covered, hi]`.
    fn flush(&mut self, rs: &mut dyn RunStore, table: &str) -> Result<()> {
        let gone: HashSet<i64> = self.gone.iter().copied().collect();
        let mut entries: Vec<(u64, i64)> = self
            .tail
            .iter()
            .filter(|e| !gone.contains(&e.id))
            .map(|e| (e.h as u64, e.id))
            .collect();
        // By hash only (ids of one hash in any order): cheaper than comparing pairs.
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup();
        let mut out = RunWriter::new(rs, entries.len() as u64)?;
        for &(h, i) in &entries {
            out.push(rs, h, i)?;
        }
        let meta = out.finish(rs, self.covered, self.hi)?;
        rs.add_run(table, &meta)?;
        rs.set_covered(table, self.hi)?;
        self.runs.push(Run { meta, probed: 0 });
        self.covered = self.hi;
        self.tail.clear();
        self.gone.clear();
        self.mark();
        Ok(())
    }

    /// Replaces every run by one written from memory, which holds exactly their entries (less
    /// those of records this connection replaced); entries under one hash are checked against
    /// the table. `false` when `stop` ended it halfway.
    fn rewrite(
        &mut self,
        rs: &mut dyn RunStore,
        table: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        let started = std::time::Instant::now();
        let mut out = RunWriter::new(rs, self.mem.len() as u64)?;
        let mut live = LiveOnly {
            pending: Vec::new(),
            checks: 0,
        };
        let mut group: Vec<(u64, i64)> = Vec::new();
        let mut seen = 0u64;
        let mut stopped = false;
        self.mem
            .for_each_sorted(|h, i| {
                if group.last().is_some_and(|&(g, _)| g != h) {
                    live.group(rs, table, &group, &mut out)?;
                    group.clear();
                }
                group.push((h, i));
                seen += 1;
                if seen.is_multiple_of(65_536) && stop() {
                    stopped = true;
                    anyhow::bail!("stopped");
                }
                Ok(())
            })
            .or_else(|e| if stopped { Ok(()) } else { Err(e) })?;
        if stopped {
            return Ok(false);
        }
        live.group(rs, table, &group, &mut out)?;
        live.flush(rs, table, &mut out)?;
        let (lo, hi) = (self.runs[0].meta.lo, self.runs[self.runs.len() - 1].meta.hi);
        let meta = out.finish(rs, lo, hi)?;
        let dropped: Vec<i64> = self.runs.iter().map(|r| r.meta.id).collect();
        rs.drop_runs(table, &dropped)?;
        rs.add_run(table, &meta)?;
        self.runs = vec![Run { meta, probed: 0 }];
        log_merge(table, dropped.len(), &meta, meta.entries, started, true);
        Ok(true)
    }

    /// Merges adjacent runs into one (read in hash order); entries under one hash are checked
    /// against the table and those naming no record are dropped. `false` when `stop` ended it
    /// halfway: the transaction must then be rolled back.
    fn merge(
        &mut self,
        rs: &mut dyn RunStore,
        table: &str,
        range: std::ops::Range<usize>,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        let inputs: Vec<RunMeta> = self.runs[range.clone()].iter().map(|r| r.meta).collect();
        let total: i64 = inputs.iter().map(|r| r.entries).sum();
        let started = std::time::Instant::now();
        let mut out = RunWriter::new(rs, total as u64)?;
        let mut streams = Streams::new(rs, &inputs)?;
        let mut group: Vec<(u64, i64)> = Vec::new();
        let mut live = LiveOnly {
            pending: Vec::new(),
            checks: 0,
        };
        let mut seen = 0u64;
        while let Some((h, i)) = streams.next(rs)? {
            if group.last().is_some_and(|&(g, _)| g != h) {
                live.group(rs, table, &group, &mut out)?;
                group.clear();
            }
            if !group.contains(&(h, i)) {
                group.push((h, i));
            }
            seen += 1;
            if seen.is_multiple_of(65_536) && stop() {
                return Ok(false);
            }
        }
        live.group(rs, table, &group, &mut out)?;
        live.flush(rs, table, &mut out)?;
        let meta = out.finish(rs, inputs[0].lo, inputs[inputs.len() - 1].hi)?;
        let dropped: Vec<i64> = inputs.iter().map(|r| r.id).collect();
        rs.drop_runs(table, &dropped)?;
        rs.add_run(table, &meta)?;
        let probed = self.runs[range.clone()]
            .iter()
            .map(|r| r.probed)
            .max()
            .unwrap_or(0);
        self.runs.splice(range, [Run { meta, probed }]);
        log_merge(table, dropped.len(), &meta, total, started, false);
        Ok(true)
    }

    /// The runs' sizes, oldest first (for `status`).
    pub fn run_sizes(&self) -> Vec<i64> {
        self.runs.iter().map(|r| r.meta.entries).collect()
    }
}

/// A merge's output on its way: entries in hash order, where a hash holds several entries
/// those naming no record any more are dropped — checked with the table a few thousand ids at a
/// time (one statement each), not one hash at a time.
struct LiveOnly {
    /// Entries waiting for the check, and whether each needs it.
    pending: Vec<(u64, i64, bool)>,
    checks: usize,
}

/// Ids checked against the table per statement.
const LIVE_BATCH: usize = 4096;

impl LiveOnly {
    fn group(
        &mut self,
        rs: &mut dyn RunStore,
        table: &str,
        group: &[(u64, i64)],
        out: &mut RunWriter,
    ) -> Result<()> {
        let check = group.len() > 1;
        for &(h, i) in group {
            self.pending.push((h, i, check));
        }
        if check {
            self.checks += group.len();
        }
        if self.checks >= LIVE_BATCH || (self.checks == 0 && self.pending.len() >= LIVE_BATCH) {
            self.flush(rs, table, out)?;
        }
        Ok(())
    }

    fn flush(&mut self, rs: &mut dyn RunStore, table: &str, out: &mut RunWriter) -> Result<()> {
        let ids: Vec<i64> = self.pending.iter().filter(|e| e.2).map(|e| e.1).collect();
        let live = if ids.is_empty() {
            HashSet::new()
        } else {
            rs.live(table, &ids)?
        };
        for &(h, i, check) in &self.pending {
            if !check || live.contains(&i) {
                out.push(rs, h, i)?;
            }
        }
        self.pending.clear();
        self.checks = 0;
        Ok(())
    }
}

/// Adds `(from, to]` to a set of ranges, merging those that touch.
fn add_range(ranges: &mut Vec<(i64, i64)>, from: i64, to: i64) {
    if to <= from {
        return;
    }
    ranges.push((from, to));
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match out.last_mut() {
            Some((_, h)) if lo <= *h => *h = (*h).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *ranges = out;
}

/// Logs a merge that read more than 100,000 entries (`read`), into `meta`.
fn log_merge(
    table: &str,
    runs: usize,
    meta: &RunMeta,
    read: i64,
    started: std::time::Instant,
    from_memory: bool,
) {
    if read > 100_000 {
        tracing::info!(
            table,
            runs,
            keys = meta.entries,
            ms = started.elapsed().as_millis() as u64,
            from_memory,
            "merged record key runs"
        );
    }
}

#[cfg(test)]
mod tests;
