//! Record keys across hosts: the key index (`store::keys`) over PostgreSQL's tables, kept exact
//! with a lock per table and a log of the ids each transaction stored.
//!
//! - A group that stores keyed records in a table first takes the table's row in `ferry_keys`
//!   (an upsert adding one to its `epoch`) and holds it to its commit: keyed writers of one
//!   table take turns, on every host. Nobody else can store (or replace) a key of that table
//!   meanwhile, so the decisions the group makes stay true until it commits.
//! - The group logs, in `ferry_key_log` under its epoch, the id runs it stored in the table, in
//!   the same transaction as the records. A record's epoch is its coordinate: the tail is every
//!   keyed record stored in an epoch after the table's `covered` mark, and everything up to it
//!   is in runs (`ferry_key_runs`, `ferry_key_slices`).
//! - Holding the row, a writer reads the log for the epochs since the last it knows (other
//!   hosts' groups) and their records' `(_id, _key)` by `_id` range (the BRIN index, built by
//!   the first such read): then its index is complete. A new writer reads the tail only.
//! - Hash matches are compared with the stored records by the database, in the columns' types
//!   (keys, and the version or every value where `on_key` needs them), one statement per
//!   cluster of ids.
//!
//! A savepoint rolled back gives the row back if the file took it (and undoes the file's keys);
//! a rolled-back group forgets the table's index (the next group reads the tail again). A
//! commit whose outcome is unknown is no different: its epoch, if it committed, is read back
//! from the log like another host's.

use super::binary;
use super::compare::PgCompare;
use super::ids::Ids;
use super::session::Session;
use super::tables::{by_id, ident, index_ids, live_ids, TableInfo};
use crate::store::keys::runs::{slice_key, RunMeta};
use crate::store::keys::table::RunSet;
use crate::store::keys::{
    learnt, lookup, plan_chunk, Plan, RunStore, Seen, TableKeys, DEFAULT_CAP,
};
use crate::store::ChunkInsert;
use anyhow::{bail, Context, Result};
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::io::Read;

/// Ids closer than this are read in one range of the `_id` index (the records between are
/// skipped or known): about a page of records. Farther apart, each is its own range — a wider
/// gap let 1,000 ids spread over a 10 M-row table be read as one range of all of it.
pub(super) const RANGE_GAP: i64 = 32;
/// At most this many ranges are read one by one for an exact check; more, and one range spans
/// them all.
pub(super) const MAX_RANGES: usize = 32;

/// What a keyed chunk stores: what `on_key` decided, and the ids of the rows it inserts.
pub struct NewRows {
    pub plan: Plan,
    pub ids: Vec<(i64, u64)>,
}

/// The key indexes of the tables this writer stored keyed records in.
pub struct Keys {
    by_table: HashMap<String, State>,
    cap: usize,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            by_table: HashMap::new(),
            cap: DEFAULT_CAP,
        }
    }
}

struct State {
    keys: TableKeys,
    held: Option<Held>,
}

/// The table's key row, held by the open group.
struct Held {
    /// The epoch the group's records are logged under.
    epoch: i64,
    /// Taken by the current file (rolling back its savepoint gives it back).
    this_file: bool,
    /// Ids the group stored in the table, and how many runs of them before the current file.
    runs: Vec<(i64, u64)>,
    file_runs: usize,
    /// `_id` was seen indexed (or indexed) in this group.
    indexed: bool,
}

impl Keys {
    /// The current file is kept.
    pub fn file_done(&mut self) {
        for s in self.by_table.values_mut() {
            s.keys.file_done();
            if let Some(h) = &mut s.held {
                h.this_file = false;
                h.file_runs = h.runs.len();
            }
        }
    }

    /// The current file's savepoint was rolled back.
    pub fn undo_file(&mut self) {
        self.by_table.retain(|_, s| {
            s.keys.undo_file();
            if s.held.as_ref().is_some_and(|h| h.this_file) {
                // The file took the row: with it, what the row let it learn is gone too.
                return false;
            }
            if let Some(h) = &mut s.held {
                h.runs.truncate(h.file_runs);
            }
            true
        });
    }

    /// Before the commit: logs the ids each table got under the group's epoch, and writes the
    /// tail as a run when it has grown.
    pub fn log(&mut self, session: &mut Session) -> Result<()> {
        for (table, s) in &mut self.by_table {
            let Some(h) = &s.held else { continue };
            if !h.runs.is_empty() {
                let c = session.get()?;
                let first: Vec<i64> = h.runs.iter().map(|&(f, _)| f).collect();
                let last: Vec<i64> = h.runs.iter().map(|&(f, n)| f + n as i64 - 1).collect();
                c.execute(
                    "INSERT INTO ferry_key_log (table_name, epoch, first_id, last_id) \
                     SELECT $1, $2, f, l FROM unnest($3::int8[], $4::int8[]) AS r(f, l)",
                    &[table, &h.epoch, &first, &last],
                )
                .with_context(|| format!("logging the record keys stored in {table}"))?;
            }
            s.keys.maintain(
                &mut Runs(Conn::Session(session)),
                table,
                false,
                None,
                &|| false,
            )?;
        }
        Ok(())
    }

    /// The group committed.
    pub fn committed(&mut self) {
        for s in self.by_table.values_mut() {
            if let Some(h) = s.held.take() {
                // Nothing else was stored in the table under the group's epoch.
                let hi = s.keys.hi;
                s.keys.learn(hi, h.epoch, &[]);
            }
            s.keys.committed();
        }
    }

    /// A table was re-keyed: what was held of it is of no use.
    pub fn forget(&mut self, table: &str) {
        self.by_table.remove(table);
    }

    /// The group was rolled back (or its commit failed): the indexes start again.
    pub fn rolled_back(&mut self) {
        self.by_table.clear();
    }

    /// Decides a keyed chunk (`on_key` against the stored records) and gives the rows it
    /// inserts their ids.
    pub fn new_rows(
        &mut self,
        s: &mut Session,
        ids: &mut Ids,
        ins: &ChunkInsert,
        info: &TableInfo,
    ) -> Result<NewRows> {
        let cap = self.cap;
        let st = self
            .by_table
            .entry(ins.table.to_string())
            .or_insert_with(|| State {
                keys: TableKeys::new(cap),
                held: None,
            });
        if st.held.is_none() {
            hold(st, s.get()?, ins.table)?;
        }
        let held = st.held.as_mut().expect("held above");
        let plan = {
            let mut cmp = PgCompare {
                runs: Runs(Conn::Session(s)),
                ins,
                info,
                indexed: &mut held.indexed,
            };
            plan_chunk(&mut st.keys, &mut cmp, ins.chunk, ins.key_cells, ins.rule)?
        };
        let n = plan.insert.len() as u64;
        let runs = if n > 0 { ids.take(s, n)? } else { Vec::new() };
        for &(first, count) in &runs {
            match held.runs.last_mut() {
                Some((f, c)) if *f + *c as i64 == first => *c += count,
                _ => held.runs.push((first, count)),
            }
        }
        // The index learns the rows with their ids, replaced records their successors.
        // A record's coordinate is the group's epoch.
        let ids = runs.iter().flat_map(|&(f, n)| f..f + n as i64);
        let epoch = held.epoch;
        let (added, swapped) = learnt(&plan, ins.chunk, ids, |_| epoch)?;
        st.keys.stored(&added, &swapped);
        Ok(NewRows { plan, ids: runs })
    }

    /// Writes every table's tail as a run and merges runs as far as `stop` lets it (at the end
    /// of a run or when the writer is idle), holding each table's key row.
    pub fn finish(
        &mut self,
        session: &mut Session,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<bool>> {
        let mut changed = false;
        for (table, st) in &mut self.by_table {
            if st.held.is_none() {
                hold(st, session.get()?, table)?;
            }
            match st.keys.maintain(
                &mut Runs(Conn::Session(session)),
                table,
                true,
                Some(u64::MAX),
                stop,
            )? {
                Some(x) => changed |= x,
                None => return Ok(None),
            }
        }
        Ok(Some(changed))
    }
}

/// Takes the table's key row for the group and brings the index up to date with it: the runs
/// as they are, and the records of the epochs since the last it knows.
fn hold(st: &mut State, c: &mut Client, table: &str) -> Result<()> {
    let epoch: i64 = c
        .query_one(
            "INSERT INTO ferry_keys (table_name, epoch) VALUES ($1, 1) \
             ON CONFLICT (table_name) DO UPDATE SET epoch = ferry_keys.epoch + 1 \
             RETURNING epoch",
            &[&table],
        )
        .with_context(|| format!("taking the record key lock of {table}"))?
        .get(0);
    let before = epoch - 1;
    let from = st.keys.refresh(&mut Runs::of(c), table)?;
    let mut indexed = false;
    if before > from {
        let entries = logged_since(c, table, from, before, Some(&mut indexed))?;
        st.keys.learn(from, before, &entries);
    }
    st.held = Some(Held {
        epoch,
        this_file: true,
        runs: Vec::new(),
        file_runs: 0,
        indexed,
    });
    Ok(())
}

/// The keyed records the log names for epochs `(from, to]`: `(epoch, key hash, id)`. A writer
/// passes `indexed`: `_id` gets its index before records are read by range (and it is noted).
fn logged_since(
    c: &mut Client,
    table: &str,
    from: i64,
    to: i64,
    indexed: Option<&mut bool>,
) -> Result<Vec<(i64, i64, i64)>> {
    let logged: Vec<(i64, i64, i64)> = c
        .query(
            "SELECT epoch, first_id, last_id FROM ferry_key_log \
             WHERE table_name = $1 AND epoch > $2 AND epoch <= $3 ORDER BY first_id",
            &[&table, &from, &to],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut entries = Vec::new();
    if logged.is_empty() {
        return Ok(entries);
    }
    if let Some(indexed) = indexed {
        index_ids(c, table)?;
        *indexed = true;
    }
    let spans: Vec<(i64, i64)> = logged.iter().map(|&(_, f, l)| (f, l)).collect();
    for (lo, hi) in ranges(spans, RANGE_GAP) {
        by_id(c, false, |c| {
            load(c, table, lo, hi, &mut |id, h| {
                // Only the logged records: ids between belong to epochs already known.
                let at = logged.partition_point(|&(_, f, _)| f <= id);
                if let Some(&(e, f, l)) = at.checked_sub(1).map(|i| &logged[i]) {
                    if (f..=l).contains(&id) {
                        entries.push((e, h, id));
                    }
                }
            })
        })?;
    }
    if entries.len() > 100_000 {
        tracing::info!(
            table,
            keys = entries.len(),
            "read the record keys of other writers"
        );
    }
    Ok(entries)
}

/// Sorted id runs merged where they are closer than `gap`.
pub(super) fn ranges(mut runs: Vec<(i64, i64)>, gap: i64) -> Vec<(i64, i64)> {
    runs.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in runs {
        match out.last_mut() {
            Some((_, h)) if lo.saturating_sub(*h) <= gap => *h = (*h).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Calls `each(id, key hash)` for the table's keyed records with ids in `lo..=hi` (read by a
/// binary COPY).
fn load(
    c: &mut Client,
    table: &str,
    lo: i64,
    hi: i64,
    each: &mut dyn FnMut(i64, i64),
) -> Result<()> {
    let mut r = c
        .copy_out(&format!(
            "COPY (SELECT _id, _key FROM {} WHERE _key IS NOT NULL AND _id BETWEEN {lo} AND {hi}) \
             TO STDOUT (FORMAT binary)",
            ident(table)
        ))
        .with_context(|| format!("reading the record keys of {table}"))?;
    binary::read_header(&mut r)?;
    let mut tuple = [0u8; 2 + 2 * 12];
    loop {
        r.read_exact(&mut tuple[..2])?;
        match i16::from_be_bytes([tuple[0], tuple[1]]) {
            -1 => break,
            2 => {}
            f => bail!("reading the record keys of {table}: a tuple of {f} fields"),
        }
        r.read_exact(&mut tuple[2..])?;
        let field = |at: usize| -> Result<i64> {
            let len = i32::from_be_bytes(tuple[at..at + 4].try_into().expect("4 bytes"));
            anyhow::ensure!(
                len == 8,
                "reading the record keys of {table}: a field of {len} bytes"
            );
            Ok(i64::from_be_bytes(
                tuple[at + 4..at + 12].try_into().expect("8 bytes"),
            ))
        };
        each(field(2)?, field(14)?);
    }
    Ok(())
}

/// The runs of the key index, in PostgreSQL's tables.
pub struct Runs<'c>(pub Conn<'c>);

impl<'c> Runs<'c> {
    pub fn of(c: &'c mut Client) -> Runs<'c> {
        Runs(Conn::Client(c))
    }

    pub(super) fn c(&mut self) -> Result<&mut Client> {
        self.0.client()
    }
}

impl RunStore for Runs<'_> {
    fn runs(&mut self, table: &str) -> Result<RunSet> {
        let (covered, generation): (i64, i64) = self
            .c()?
            .query_opt(
                "SELECT covered, generation FROM ferry_keys WHERE table_name = $1",
                &[&table],
            )?
            .map_or((0, 0), |r| (r.get(0), r.get(1)));
        let runs = self
            .c()?
            .query(
                "SELECT run, lo, hi, entries, bits FROM ferry_key_runs WHERE table_name = $1 \
                 ORDER BY lo",
                &[&table],
            )?
            .iter()
            .map(|r| RunMeta {
                id: r.get(0),
                lo: r.get(1),
                hi: r.get(2),
                entries: r.get(3),
                bits: r.get::<_, i16>(4) as u8,
            })
            .collect();
        Ok(RunSet {
            covered,
            generation,
            runs,
        })
    }

    fn get_slices(
        &mut self,
        run: i64,
        wanted: &[u32],
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()> {
        let keys: Vec<i64> = wanted.iter().map(|&s| slice_key(run, s)).collect();
        for row in self.c()?.query(
            "SELECT k, data FROM ferry_key_slices WHERE k = ANY($1)",
            &[&keys],
        )? {
            let k: i64 = row.get(0);
            each((k & 0xFFFF_FFFF) as u32, row.get::<_, &[u8]>(1));
        }
        Ok(())
    }

    fn scan_slices(
        &mut self,
        run: i64,
        from: u32,
        to: u32,
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()> {
        let (lo, hi) = (slice_key(run, from), (run << 32) + to as i64);
        for row in self.c()?.query(
            "SELECT k, data FROM ferry_key_slices WHERE k >= $1 AND k < $2 ORDER BY k",
            &[&lo, &hi],
        )? {
            let k: i64 = row.get(0);
            each((k & 0xFFFF_FFFF) as u32, row.get::<_, &[u8]>(1));
        }
        Ok(())
    }

    fn new_run(&mut self) -> Result<i64> {
        Ok(self
            .c()?
            .query_one("SELECT nextval('ferry_key_run_ids')", &[])?
            .get(0))
    }

    fn put_slices(&mut self, run: i64, slices: &[(u32, Vec<u8>)]) -> Result<()> {
        if slices.is_empty() {
            return Ok(());
        }
        // Into the session's copy: the server stores these slices while the writer cuts the
        // next ones (a statement each time would make the two take turns).
        let Conn::Session(session) = &mut self.0 else {
            bail!("key runs are written through the writer's session");
        };
        let mut data = Vec::with_capacity(slices.iter().map(|(_, b)| b.len() + 20).sum());
        for (slice, b) in slices {
            binary::tuple(&mut data, 2);
            binary::int8(&mut data, slice_key(run, *slice));
            binary::bytes(&mut data, b);
        }
        session.copy_rows("ferry_key_slices (k, data)", &data, slices.len() as u64)
    }

    fn add_run(&mut self, table: &str, m: &RunMeta) -> Result<()> {
        self.c()?.execute(
            "INSERT INTO ferry_key_runs (run, table_name, lo, hi, entries, bits, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now())",
            &[&m.id, &table, &m.lo, &m.hi, &m.entries, &(m.bits as i16)],
        )?;
        Ok(())
    }

    fn drop_runs(&mut self, _table: &str, runs: &[i64]) -> Result<()> {
        for &run in runs {
            self.c()?.execute(
                "DELETE FROM ferry_key_slices WHERE k >= $1 AND k < $2",
                &[&(run << 32), &((run + 1) << 32)],
            )?;
            self.c()?
                .execute("DELETE FROM ferry_key_runs WHERE run = $1", &[&run])?;
        }
        Ok(())
    }

    fn set_covered(&mut self, table: &str, covered: i64) -> Result<()> {
        self.c()?.execute(
            "UPDATE ferry_keys SET covered = $2 WHERE table_name = $1",
            &[&table, &covered],
        )?;
        // Epochs up to `covered` are in runs: nobody reads their log rows any more.
        self.c()?.execute(
            "DELETE FROM ferry_key_log WHERE table_name = $1 AND epoch <= $2",
            &[&table, &covered],
        )?;
        Ok(())
    }

    fn live(&mut self, table: &str, ids: &[i64]) -> Result<HashSet<i64>> {
        index_ids(self.c()?, table)?;
        live_ids(self.c()?, table, ids)
    }
}

/// The connection a chunk's decision uses: the writer's session is asked for its connection
/// (which ends the file's open copy) only when a run is read or a record compared, so chunks
/// decided from memory alone keep streaming into one copy (the server stores one chunk while
/// ferry decides the next, instead of the two taking turns).
pub(super) enum Conn<'a> {
    Client(&'a mut Client),
    Session(&'a mut Session),
}

impl Conn<'_> {
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        match self {
            Conn::Client(c) => Ok(c),
            Conn::Session(s) => s.get(),
        }
    }
}

/// For a dry run: each keyed row's stored record, as a run would find it, reading only (no
/// key row taken, no index built: a read by id range may be a scan).
pub fn read_lookup(
    c: &mut Client,
    keys: &mut TableKeys,
    ins: &ChunkInsert,
) -> Result<Vec<Option<(i64, Seen)>>> {
    if !keys.fresh {
        let from = keys.refresh(&mut Runs::of(c), ins.table)?;
        let last: i64 = c
            .query_opt(
                "SELECT epoch FROM ferry_keys WHERE table_name = $1",
                &[&ins.table],
            )?
            .map_or(0, |r| r.get(0));
        if last > from {
            let entries = logged_since(c, ins.table, from, last, None)?;
            keys.learn(from, last, &entries);
        }
    }
    let info = super::tables::describe(c, ins.table)?
        .with_context(|| format!("table {} does not exist", ins.table))?;
    let mut indexed = true;
    let mut cmp = PgCompare {
        runs: Runs::of(c),
        ins,
        info: &info,
        indexed: &mut indexed,
    };
    lookup(keys, &mut cmp, ins.chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_runs_close_together_are_read_as_one_range() {
        assert_eq!(
            ranges(
                vec![(200_000, 200_010), (1, 10), (20, 30), (60_000, 60_001)],
                65_536
            ),
            [(1, 60_001), (200_000, 200_010)]
        );
        assert_eq!(ranges(vec![(5, 5), (5, 5), (3, 9)], 0), [(3, 9)]);
        assert_eq!(
            ranges(vec![(i64::MIN, 0), (i64::MAX, i64::MAX)], 10).len(),
            2
        );
    }
}
