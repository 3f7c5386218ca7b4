//! Record keys in SQLite without an index (R-record-key).
//!
//! A UNIQUE index over the key columns, or even an INTEGER index on a key hash, makes every
//! insert a random B-tree update (7× and 25× slower on the 6.8 M-row benchmark). Instead the
//! workers hash each record's key (64-bit, stored unindexed in `_key`) and the writer keeps
//! `hash → record id` in memory. This works because SQLite has one writer at a time: the index
//! is topped up at each transaction with the records other processes stored since.

use crate::record::{Cell, Chunk};
use crate::store::sqlite::tables::{ident, Tables};
use crate::store::ChunkInsert;
use anyhow::Result;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// The key indexes of the datasets this connection stored keyed records of, kept in step with
/// the group transaction and the file savepoints.
#[derive(Default)]
pub struct Keys {
    by_dataset: HashMap<String, KeyIndex>,
}

impl Keys {
    /// A new group transaction: other processes may have stored records since the last one.
    pub fn begin(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.synced = false;
        }
    }

    pub fn committed(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.committed();
        }
    }

    /// The commit failed: nothing known can be trusted.
    pub fn clear(&mut self) {
        self.by_dataset.clear();
    }

    pub fn file_done(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.file_done();
        }
    }

    pub fn undo_file(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.undo_file();
        }
    }

    /// The rows of a keyed chunk whose key is new, the record id the first of them gets
    /// (SQLite's next: the index is in step with the table), and how many were duplicates.
    pub fn new_rows(
        &mut self,
        conn: &Connection,
        tables: &mut Tables,
        ins: &ChunkInsert,
    ) -> Result<(Vec<u32>, i64, u64)> {
        let idx = self.by_dataset.entry(ins.dataset.to_string()).or_default();
        if !idx.synced {
            let max = tables.max_id(conn, ins.table)?;
            idx.sync(conn, ins.table, max)?;
        }
        let first = idx.through + 1;
        let key_names: Vec<&str> = ins
            .key_cells
            .iter()
            .map(|c| c.and_then(|c| ins.columns[c].as_deref()).unwrap_or("_id"))
            .collect();
        let mut dups = 0;
        let kept = dedupe(
            idx,
            ins.chunk,
            ins.key_cells,
            first,
            |other, r| {
                same_key_stored(
                    conn,
                    ins.table,
                    &key_names,
                    ins.key_cells,
                    other,
                    ins.chunk,
                    r,
                )
            },
            &mut dups,
        )?;
        Ok((kept, first, dups))
    }

    /// `n` records were stored from `first` on.
    pub fn stored(&mut self, dataset: &str, first: i64, n: usize) {
        if let Some(idx) = self.by_dataset.get_mut(dataset) {
            idx.through = idx.through.max(first + n as i64 - 1);
        }
    }
}

/// Key hashes are already well mixed: use them as their own hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// The key hashes of a dataset's stored records, each with the id of a record that has it.
///
/// This is what makes record keys cheap (R-record-key): a new key costs a hash-map insert, not a
/// B-tree insert on disk (a UNIQUE index over the key columns made a 6.8 M-row load several
/// times slower). A hash seen before is checked exactly: the stored record is read by its id and
/// its key values compared, so two different keys that share a hash are both stored. Memory is
/// about 20 bytes per stored record. The index is loaded from the table's `_key` column on first
/// use and topped up at each transaction with the rows other processes stored.
#[derive(Default)]
pub struct KeyIndex {
    map: IdMap<i64>,
    /// Further records whose different keys share a hash with the one in `map`.
    more: IdMap<Vec<i64>>,
    /// Every record with an id up to this is in the index.
    through: i64,
    /// `through` when the current file started (set when the index is first synced, then at
    /// the end of each kept file).
    file_start: Option<i64>,
    /// Hashes added since the last commit, by the current file and before it: (hash, in_more).
    added: Vec<(i64, bool)>,
    /// `added.len()` when the current file started.
    file_mark: usize,
    synced: bool,
}

impl KeyIndex {
    pub fn sync(&mut self, conn: &Connection, table: &str, max: i64) -> Result<()> {
        if max < self.through {
            // Records were removed behind our back: start over.
            *self = KeyIndex::default();
        }
        if max > self.through {
            let started = Instant::now();
            let mut stmt = conn.prepare(&format!(
                "SELECT _id, _key FROM {} WHERE _id > ?1 AND _key IS NOT NULL ORDER BY _id",
                ident(table)
            ))?;
            let mut rows = stmt.query([self.through])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let (id, h): (i64, i64) = (r.get(0)?, r.get(1)?);
                match self.map.get(&h) {
                    None => {
                        self.map.insert(h, id);
                    }
                    Some(_) => self.more.entry(h).or_default().push(id),
                }
                n += 1;
            }
            if n > 100_000 {
                tracing::info!(
                    table,
                    keys = n,
                    ms = started.elapsed().as_millis() as u64,
                    "loaded record keys"
                );
            }
            self.through = max;
        }
        self.synced = true;
        self.file_start.get_or_insert(self.through);
        self.file_mark = self.added.len();
        Ok(())
    }

    fn candidates(&self, h: i64) -> impl Iterator<Item = i64> + '_ {
        self.map
            .get(&h)
            .copied()
            .into_iter()
            .chain(self.more.get(&h).into_iter().flatten().copied())
    }

    fn add(&mut self, h: i64, id: i64) {
        match self.map.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(id);
                self.added.push((h, true));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
                self.added.push((h, false));
            }
        }
    }

    /// The current file is kept: the next one starts here.
    pub fn file_done(&mut self) {
        self.file_start = Some(self.through);
        self.file_mark = self.added.len();
    }

    /// The transaction committed: nothing before this point can be undone any more.
    pub fn committed(&mut self) {
        self.added.clear();
        self.file_mark = 0;
        self.file_start = Some(self.through);
    }

    /// Forgets what the current file added (its savepoint was rolled back).
    pub fn undo_file(&mut self) {
        while self.added.len() > self.file_mark {
            let (h, in_more) = self.added.pop().expect("longer than the mark");
            if in_more {
                if let Some(v) = self.more.get_mut(&h) {
                    v.pop();
                    if v.is_empty() {
                        self.more.remove(&h);
                    }
                }
            } else {
                self.map.remove(&h);
            }
        }
        if let Some(t) = self.file_start.take() {
            self.through = t;
        }
        self.synced = false;
    }
}

/// Picks the rows of a chunk whose key is new; counts the others in `dups`. Row ids are
/// assigned from `first` in order. `stored_same(id, row)` says whether the stored record `id`
/// has the key of chunk row `row`.
pub fn dedupe(
    idx: &mut KeyIndex,
    chunk: &Chunk,
    key_cols: &[Option<usize>],
    first: i64,
    mut stored_same: impl FnMut(i64, usize) -> Result<bool>,
    dups: &mut u64,
) -> Result<Vec<u32>> {
    let mut kept: Vec<u32> = Vec::with_capacity(chunk.rows());
    for r in 0..chunk.rows() {
        let h = chunk.keys[r];
        if !idx.map.contains_key(&h) {
            // The common case: a key never seen.
            idx.add(h, first + kept.len() as i64);
            kept.push(r as u32);
            continue;
        }
        let mut dup = false;
        for other in idx.candidates(h).collect::<Vec<_>>() {
            let same = if other >= first {
                let o = kept[(other - first) as usize] as usize;
                same_key_in_chunk(chunk, key_cols, o, r)
            } else {
                stored_same(other, r)?
            };
            if same {
                dup = true;
                break;
            }
        }
        if dup {
            *dups += 1;
            continue;
        }
        idx.add(h, first + kept.len() as i64);
        kept.push(r as u32);
    }
    Ok(kept)
}

fn cell_at(chunk: &Chunk, row: usize, col: Option<usize>) -> Cell {
    col.map_or(Cell::Null, |c| chunk.row(row)[c])
}

fn same_key_in_chunk(chunk: &Chunk, key_cols: &[Option<usize>], a: usize, b: usize) -> bool {
    key_cols.iter().all(|&c| {
        let (x, y) = (cell_at(chunk, a, c), cell_at(chunk, b, c));
        match (x, y) {
            (Cell::Text { .. }, Cell::Text { .. }) => chunk.text(x) == chunk.text(y),
            (Cell::Real(p), Cell::Real(q)) => p == q,
            _ => x == y,
        }
    })
}

/// Whether stored record `id` has the key of chunk row `r`: the exact check behind a hash match.
pub fn same_key_stored(
    conn: &Connection,
    table: &str,
    key_names: &[&str],
    key_cols: &[Option<usize>],
    id: i64,
    chunk: &Chunk,
    r: usize,
) -> Result<bool> {
    let cols: Vec<String> = key_names.iter().map(|k| ident(k)).collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM {} WHERE _id = ?1",
        cols.join(", "),
        ident(table)
    ))?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(false);
    };
    for (i, &c) in key_cols.iter().enumerate() {
        let cell = cell_at(chunk, r, c);
        let same = match (row.get_ref(i)?, cell) {
            (ValueRef::Null, Cell::Null) => true,
            (ValueRef::Integer(a), Cell::Int(b)) => a == b,
            (ValueRef::Real(a), Cell::Real(b)) => a == b,
            (ValueRef::Text(a), t @ Cell::Text { .. }) => {
                Some(a) == chunk.text(t).map(str::as_bytes)
            }
            _ => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of one-column text rows with the given (forced) key hashes.
    fn chunk(rows: &[(&str, i64)]) -> Chunk {
        let mut c = Chunk::new(1);
        for (i, (v, h)) in rows.iter().enumerate() {
            c.push_row(i as u64 + 2, v, &[Some((0, v.len()))]);
            c.keys.push(*h);
        }
        c
    }

    #[test]
    fn equal_hashes_are_checked_against_the_values() {
        let mut idx = KeyIndex::default();
        // "a" and "b" collide on purpose; the second "a" is a true duplicate.
        let c = chunk(&[("a", 7), ("b", 7), ("a", 7), ("c", 9)]);
        let mut dups = 0;
        let kept = dedupe(&mut idx, &c, &[Some(0)], 100, |_, _| Ok(false), &mut dups).unwrap();
        assert_eq!(kept, [0, 1, 3]);
        assert_eq!(dups, 1);
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        // A later chunk: hash 7 is checked against the stored records by id.
        let c2 = chunk(&[("b", 7), ("d", 7)]);
        let mut dups = 0;
        let kept = dedupe(
            &mut idx,
            &c2,
            &[Some(0)],
            103,
            |id, r| Ok(id == 101 && r == 0),
            &mut dups,
        )
        .unwrap();
        assert_eq!(kept, [1]);
        assert_eq!(dups, 1);
        // Undoing the file forgets only what it added.
        idx.file_mark = 3;
        idx.undo_file();
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        assert_eq!(idx.candidates(9).collect::<Vec<_>>(), [102]);
    }
}
