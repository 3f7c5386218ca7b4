//! Record keys in SQLite: the key index (`store::keys`) over SQLite's tables — runs in
//! `ferry_key_runs` and `ferry_key_slices`, each table's `covered` mark and highest id in
//! `ferry_keys` — and the exact comparison of hash matches with stored records.
//!
//! SQLite has one writer at a time, and records are numbered in commit order, so a record's id
//! is its coordinate: the tail is every keyed record with `_id > covered`, and a writer is in
//! step with the others once it has read the records after the highest id it knows.
//!
//! Ids never go back: a record replaced under `on_key = "update"` leaves a gap, and the highest
//! id ever given is kept in `ferry_keys.high_id`, so a record stored after the newest one was
//! replaced still gets an id above every id an export may have passed.

use crate::record::{Cell, Chunk};
use crate::store::keys::decide::{compare_versions, Version};
use crate::store::keys::runs::{slice_key, RunMeta};
use crate::store::keys::table::RunSet;
use crate::store::keys::{
    cell_at, learnt, lookup, plan_chunk, Compare, Plan, RunStore, Seen, TableKeys, Wants,
    DEFAULT_CAP,
};
use crate::store::sqlite::tables::{ident, Tables};
use crate::store::ChunkInsert;
use anyhow::Result;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// The key indexes of the tables this connection stored keyed records in, kept in step with
/// the group transaction and the file savepoints.
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

#[derive(Default)]
struct State {
    keys: TableKeys,
    /// The highest id ever given in the table, as recorded.
    high: i64,
    /// Records were replaced in the open transaction: `high` must be recorded.
    replaced: bool,
}

/// What the writer stores of a keyed chunk.
pub struct Stored {
    pub plan: Plan,
    /// The id of the first row of `plan.insert`.
    pub first: i64,
}

impl Keys {
    /// A new group transaction: other processes may have stored records since the last one.
    pub fn begin(&mut self) {
        for s in self.by_table.values_mut() {
            s.keys.fresh = false;
        }
    }

    /// Before the commit: records the highest id where records were replaced, and writes the
    /// tail as a run when it has grown (merging small runs).
    pub fn before_commit(&mut self, conn: &Connection) -> Result<()> {
        for (table, s) in &mut self.by_table {
            if s.replaced {
                record_high(conn, table, s.keys.hi.max(s.high))?;
                s.replaced = false;
            }
            s.keys
                .maintain(&mut Runs(conn), table, false, None, &|| false)?;
        }
        Ok(())
    }

    pub fn committed(&mut self) {
        for s in self.by_table.values_mut() {
            s.keys.committed();
        }
    }

    /// A table was re-keyed: what was held of it is of no use.
    pub fn forget(&mut self, table: &str) {
        self.by_table.remove(table);
    }

    /// The commit failed, or the group was rolled back: nothing known can be trusted.
    pub fn clear(&mut self) {
        self.by_table.clear();
    }

    pub fn file_done(&mut self) {
        for s in self.by_table.values_mut() {
            s.keys.file_done();
        }
    }

    pub fn undo_file(&mut self) {
        for s in self.by_table.values_mut() {
            s.keys.undo_file();
        }
    }

    /// Decides a keyed chunk (`on_key` against the stored records) and gives the rows to store
    /// their ids.
    pub fn plan(
        &mut self,
        conn: &Connection,
        tables: &mut Tables,
        ins: &ChunkInsert,
    ) -> Result<Stored> {
        let cap = self.cap;
        let s = self
            .by_table
            .entry(ins.table.to_string())
            .or_insert_with(|| State {
                keys: TableKeys::new(cap),
                ..State::default()
            });
        if !s.keys.fresh {
            sync(conn, tables, ins.table, s)?;
        }
        let mut cmp = SqliteCompare::new(conn, tables, ins)?;
        let plan = plan_chunk(&mut s.keys, &mut cmp, ins.chunk, ins.key_cells, ins.rule)?;
        Ok(Stored {
            first: s.keys.hi.max(s.high) + 1,
            plan,
        })
    }

    /// The chunk's rows were stored from `first` on, and the records they replace deleted.
    pub fn stored(&mut self, table: &str, chunk: &Chunk, stored: &Stored) {
        let Some(s) = self.by_table.get_mut(table) else {
            return;
        };
        let plan = &stored.plan;
        // A record's coordinate is its id.
        let ids = stored.first..stored.first + plan.insert.len() as i64;
        let Ok((added, swapped)) = learnt(plan, chunk, ids, |id| id) else {
            return;
        };
        s.keys.stored(&added, &swapped);
        s.replaced |= !swapped.is_empty();
    }

    /// Writes every table's tail as a run and merges runs as far as `stop` lets it (at the end
    /// of a run or when the writer is idle); whether anything changed.
    pub fn finish(
        &mut self,
        conn: &Connection,
        tables: &mut Tables,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<bool>> {
        let mut changed = false;
        for (table, s) in &mut self.by_table {
            if !s.keys.fresh {
                sync(conn, tables, table, s)?;
            }
            match s
                .keys
                .maintain(&mut Runs(conn), table, true, Some(u64::MAX), stop)?
            {
                Some(c) => changed |= c,
                None => return Ok(None),
            }
        }
        Ok(Some(changed))
    }
}

/// Brings a table's index in step: its runs as recorded, and the keyed records stored since
/// the highest id it knows (by any process).
fn sync(conn: &Connection, tables: &mut Tables, table: &str, s: &mut State) -> Result<()> {
    ensure_row(conn, table)?;
    s.high = conn.query_row(
        "SELECT high_id FROM ferry_keys WHERE table_name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let max = tables.max_id(conn, table)?;
    let from = catch_up(conn, table, &mut s.keys, max)?;
    // Records removed behind ferry's back (the index ahead of the table) change no answer:
    // every match is compared with the table. Only new ids must stay above every old one.
    s.high = s.high.max(from);
    Ok(())
}

/// Reads the runs again and the tail records after what the index knows, up to id `max`;
/// returns the id it read from.
fn catch_up(conn: &Connection, table: &str, keys: &mut TableKeys, max: i64) -> Result<i64> {
    let from = keys.refresh(&mut Runs(conn), table)?;
    if max > from {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT _id, _key FROM {} WHERE _id > ?1 AND _key IS NOT NULL ORDER BY _id",
            ident(table)
        ))?;
        let entries: Vec<(i64, i64, i64)> = stmt
            .query_map([from], |r| {
                let id: i64 = r.get(0)?;
                Ok((id, r.get(1)?, id))
            })?
            .collect::<rusqlite::Result<_>>()?;
        keys.learn(from, max, &entries);
    }
    Ok(from)
}

/// For a dry run: each keyed row's stored record, as a run would find it, reading only.
pub fn read_lookup(
    conn: &Connection,
    keys: &mut TableKeys,
    ins: &ChunkInsert,
) -> Result<Vec<Option<(i64, Seen)>>> {
    let mut tables = Tables::default();
    if !keys.fresh {
        let max = tables.max_id(conn, ins.table)?;
        catch_up(conn, ins.table, keys, max)?;
    }
    let mut cmp = SqliteCompare::new(conn, &mut tables, ins)?;
    lookup(keys, &mut cmp, ins.chunk)
}

/// The table's row in `ferry_keys`, made when its first keyed record is stored.
fn ensure_row(conn: &Connection, table: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ferry_keys (table_name, covered, high_id) VALUES (?1, 0, 0) \
         ON CONFLICT (table_name) DO NOTHING",
    )?
    .execute([table])?;
    Ok(())
}

fn record_high(conn: &Connection, table: &str, high: i64) -> Result<()> {
    conn.prepare_cached("UPDATE ferry_keys SET high_id = max(high_id, ?2) WHERE table_name = ?1")?
        .execute(params![table, high])?;
    Ok(())
}

/// The runs of the key index, in SQLite's tables.
pub struct Runs<'c>(pub &'c Connection);

impl RunStore for Runs<'_> {
    fn runs(&mut self, table: &str) -> Result<RunSet> {
        let (covered, generation): (i64, i64) = self
            .0
            .prepare_cached("SELECT covered, generation FROM ferry_keys WHERE table_name = ?1")?
            .query_row([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, 0));
        let mut stmt = self.0.prepare_cached(
            "SELECT run, lo, hi, entries, bits FROM ferry_key_runs WHERE table_name = ?1 \
             ORDER BY lo",
        )?;
        let runs = stmt
            .query_map([table], |r| {
                Ok(RunMeta {
                    id: r.get(0)?,
                    lo: r.get(1)?,
                    hi: r.get(2)?,
                    entries: r.get(3)?,
                    bits: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
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
        let mut stmt = self
            .0
            .prepare_cached("SELECT data FROM ferry_key_slices WHERE k = ?1")?;
        for &s in wanted {
            let mut rows = stmt.query([slice_key(run, s)])?;
            if let Some(r) = rows.next()? {
                if let ValueRef::Blob(b) = r.get_ref(0)? {
                    each(s, b);
                }
            }
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
        let mut stmt = self.0.prepare_cached(
            "SELECT k, data FROM ferry_key_slices WHERE k >= ?1 AND k < ?2 ORDER BY k",
        )?;
        let mut rows = stmt.query([slice_key(run, from), (run << 32) + to as i64])?;
        while let Some(r) = rows.next()? {
            let k: i64 = r.get(0)?;
            if let ValueRef::Blob(b) = r.get_ref(1)? {
                each((k & 0xFFFF_FFFF) as u32, b);
            }
        }
        Ok(())
    }

    fn new_run(&mut self) -> Result<i64> {
        // Above every run recorded and every run with slices (a re-key's scratch runs are not
        // recorded).
        Ok(self.0.query_row(
            "SELECT max(coalesce((SELECT max(run) FROM ferry_key_runs), 0), \
                        coalesce((SELECT max(k) FROM ferry_key_slices), 0) >> 32) + 1",
            [],
            |r| r.get(0),
        )?)
    }

    fn put_slices(&mut self, run: i64, slices: &[(u32, Vec<u8>)]) -> Result<()> {
        let mut stmt = self
            .0
            .prepare_cached("INSERT INTO ferry_key_slices (k, data) VALUES (?1, ?2)")?;
        for (s, b) in slices {
            stmt.execute(params![slice_key(run, *s), b])?;
        }
        Ok(())
    }

    fn add_run(&mut self, table: &str, m: &RunMeta) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO ferry_key_runs (run, table_name, lo, hi, entries, bits, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                m.id,
                table,
                m.lo,
                m.hi,
                m.entries,
                m.bits,
                crate::store::now()
            ])?;
        Ok(())
    }

    fn drop_runs(&mut self, _table: &str, runs: &[i64]) -> Result<()> {
        for &run in runs {
            self.0
                .prepare_cached("DELETE FROM ferry_key_slices WHERE k >= ?1 AND k < ?2")?
                .execute([run << 32, (run + 1) << 32])?;
            self.0
                .prepare_cached("DELETE FROM ferry_key_runs WHERE run = ?1")?
                .execute([run])?;
        }
        Ok(())
    }

    fn set_covered(&mut self, table: &str, covered: i64) -> Result<()> {
        self.0
            .prepare_cached("UPDATE ferry_keys SET covered = ?2 WHERE table_name = ?1")?
            .execute(params![table, covered])?;
        Ok(())
    }

    fn live(&mut self, table: &str, ids: &[i64]) -> Result<HashSet<i64>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!("SELECT 1 FROM {} WHERE _id = ?1", ident(table)))?;
        let mut live = HashSet::new();
        for &id in ids {
            if stmt.exists([id])? {
                live.insert(id);
            }
        }
        Ok(live)
    }
}

/// Ids closer than this are read with one range scan (about what one lookup by id costs).
const CLUSTER_GAP: i64 = 16;

/// Compares a chunk's rows with stored records, exactly, in Rust: values as SQLite returns them
/// (typed columns hold the cells' own forms) against the chunk's cells.
pub struct SqliteCompare<'a> {
    conn: &'a Connection,
    runs: Runs<'a>,
    ins: &'a ChunkInsert<'a>,
    wants: Wants,
    /// The columns read: the key columns, then the version or every data column.
    select: String,
    /// Per read column after the key: the chunk cell it is compared with (`None`: NULL).
    cells: Vec<Option<usize>>,
}

impl<'a> SqliteCompare<'a> {
    pub fn new(
        conn: &'a Connection,
        tables: &mut Tables,
        ins: &'a ChunkInsert<'a>,
    ) -> Result<Self> {
        let name_of = |c: Option<usize>| {
            c.and_then(|c| ins.columns.get(c).cloned().flatten())
                .unwrap_or_else(|| "NULL".into())
        };
        let mut cols: Vec<String> = ins
            .key_cells
            .iter()
            .map(|&c| match name_of(c).as_str() {
                "NULL" => "NULL".to_string(),
                n => ident(n),
            })
            .collect();
        let wants = ins.rule.wants();
        let mut cells = Vec::new();
        match wants {
            Wants::Key => {}
            Wants::Version => {
                let (cell, _) = ins.rule.version.expect("a version");
                cols.push(match cell.and_then(|c| ins.columns[c].as_deref()) {
                    Some(n) => ident(n),
                    None => "NULL".into(),
                });
                cells.push(cell);
            }
            Wants::Content => {
                let by_name: HashMap<String, usize> = ins
                    .columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_ref().map(|n| (n.to_lowercase(), i)))
                    .collect();
                let mut all: Vec<(String, String)> =
                    tables.columns(conn, ins.table)?.into_iter().collect();
                all.sort();
                for (lower, name) in all {
                    if crate::format::SYSTEM_COLUMNS.contains(&lower.as_str()) || lower == "_key" {
                        continue;
                    }
                    cols.push(ident(&name));
                    cells.push(by_name.get(&lower).copied());
                }
            }
        }
        Ok(SqliteCompare {
            conn,
            runs: Runs(conn),
            ins,
            wants,
            select: cols.join(", "),
            cells,
        })
    }

    /// What stored row `row` (its values after `_id`) is to chunk row `r`.
    fn seen(&self, row: &rusqlite::Row, r: usize) -> Result<Seen> {
        let chunk = self.ins.chunk;
        let keys = self.ins.key_cells.len();
        for (i, &c) in self.ins.key_cells.iter().enumerate() {
            if !same_value(row.get_ref(1 + i)?, chunk, cell_at(chunk, r, c)) {
                return Ok(Seen::Other);
            }
        }
        let (mut newer, mut equal) = (None, None);
        match self.wants {
            Wants::Key => {}
            Wants::Version => {
                let (cell, ty) = self.ins.rule.version.expect("a version");
                let mine = crate::store::keys::decide::version_of(chunk, cell_at(chunk, r, cell));
                let theirs = match row.get_ref(1 + keys)? {
                    ValueRef::Integer(i) => Version::Int(i),
                    ValueRef::Text(t) => {
                        std::str::from_utf8(t).map_or(Version::Null, Version::Text)
                    }
                    _ => Version::Null,
                };
                newer = Some(compare_versions(ty, mine, theirs));
            }
            Wants::Content => {
                let mut same = true;
                for (j, &c) in self.cells.iter().enumerate() {
                    if !same_value(row.get_ref(1 + keys + j)?, chunk, cell_at(chunk, r, c)) {
                        same = false;
                        break;
                    }
                }
                equal = Some(same);
            }
        }
        Ok(Seen::Same { newer, equal })
    }
}

impl Compare for SqliteCompare<'_> {
    fn runs(&mut self) -> &mut dyn RunStore {
        &mut self.runs
    }

    fn compare(&mut self, pairs: &[(i64, usize)]) -> Result<Vec<Seen>> {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_unstable_by_key(|&i| pairs[i].0);
        let mut out = vec![Seen::Gone; pairs.len()];
        let table = ident(self.ins.table);
        let mut one = self.conn.prepare_cached(&format!(
            "SELECT _id, {} FROM {table} WHERE _id = ?1",
            self.select
        ))?;
        let mut range = self.conn.prepare_cached(&format!(
            "SELECT _id, {} FROM {table} WHERE _id BETWEEN ?1 AND ?2 ORDER BY _id",
            self.select
        ))?;
        let mut i = 0;
        while i < order.len() {
            // A cluster of ids close together: one scan.
            let mut j = i + 1;
            while j < order.len() && pairs[order[j]].0 - pairs[order[j - 1]].0 <= CLUSTER_GAP {
                j += 1;
            }
            let (lo, hi) = (pairs[order[i]].0, pairs[order[j - 1]].0);
            let mut rows = if lo == hi {
                one.query([lo])?
            } else {
                range.query([lo, hi])?
            };
            let mut k = i;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                while k < j && pairs[order[k]].0 < id {
                    k += 1;
                }
                let mut m = k;
                while m < j && pairs[order[m]].0 == id {
                    out[order[m]] = self.seen(row, pairs[order[m]].1)?;
                    m += 1;
                }
            }
            i = j;
        }
        Ok(out)
    }
}

/// Whether a stored value is exactly a chunk cell.
pub fn same_value(v: ValueRef, chunk: &Chunk, cell: Cell) -> bool {
    match (v, cell) {
        (ValueRef::Null, Cell::Null) => true,
        (ValueRef::Integer(a), Cell::Int(b)) => a == b,
        (ValueRef::Real(a), Cell::Real(b)) => a == b,
        (ValueRef::Text(a), t @ Cell::Text { .. }) => Some(a) == chunk.text(t).map(str::as_bytes),
        _ => false,
    }
}
