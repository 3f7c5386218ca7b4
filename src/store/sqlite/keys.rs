//! Record keys in SQLite: the in-memory index (`store::keys`) kept in step with the table.
//!
//! SQLite has one writer at a time, and the writer numbers keyed records itself, so the index is
//! complete once it has every record up to the table's highest id: it is topped up at each
//! transaction with the records other processes stored since (`_id > through`).

use crate::record::{Cell, Chunk};
use crate::store::keys::{cell_at, dedupe, ChunkIds, KeyIndex};
use crate::store::sqlite::tables::{ident, Tables};
use crate::store::ChunkInsert;
use anyhow::Result;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::collections::HashMap;
use std::time::Instant;

/// The key indexes of the datasets this connection stored keyed records of, kept in step with
/// the group transaction and the file savepoints.
#[derive(Default)]
pub struct Keys {
    by_dataset: HashMap<String, TableKeys>,
}

/// A dataset's index and how far it reaches.
#[derive(Default)]
struct TableKeys {
    index: KeyIndex,
    /// Every record with an id up to this is in the index.
    through: i64,
    /// `through` when the current file started (set when the index is first synced, then at
    /// the end of each kept file).
    file_start: Option<i64>,
    synced: bool,
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
            k.index.committed();
            k.file_start = Some(k.through);
        }
    }

    /// The commit failed: nothing known can be trusted.
    pub fn clear(&mut self) {
        self.by_dataset.clear();
    }

    pub fn file_done(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.index.file_done();
            k.file_start = Some(k.through);
        }
    }

    pub fn undo_file(&mut self) {
        for k in self.by_dataset.values_mut() {
            k.index.undo_file();
            if let Some(t) = k.file_start.take() {
                k.through = t;
            }
            k.synced = false;
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
        let k = self.by_dataset.entry(ins.dataset.to_string()).or_default();
        if !k.synced {
            let max = tables.max_id(conn, ins.table)?;
            k.sync(conn, ins.table, max)?;
        }
        let first = k.through + 1;
        let key_names: Vec<&str> = ins
            .key_cells
            .iter()
            .map(|c| c.and_then(|c| ins.columns[c].as_deref()).unwrap_or("_id"))
            .collect();
        let mut dups = 0;
        let kept = dedupe(
            &mut k.index,
            ins.chunk,
            ins.key_cells,
            &ChunkIds(&[(first, ins.chunk.rows() as u64)]),
            None,
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
        if let Some(k) = self.by_dataset.get_mut(dataset) {
            k.through = k.through.max(first + n as i64 - 1);
        }
    }
}

impl TableKeys {
    fn sync(&mut self, conn: &Connection, table: &str, max: i64) -> Result<()> {
        if max < self.through {
            // Records were removed behind our back: start over.
            *self = TableKeys::default();
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
                self.index.add_committed(h, id);
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
        self.index.file_done();
        Ok(())
    }
}

/// Every stored key hash of `table` (a read, for a dry run): none when the table or its `_key`
/// column does not exist.
pub fn key_hashes(conn: &Connection, table: &str, each: &mut dyn FnMut(i64)) -> Result<()> {
    let has_key: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = '_key'",
        [table],
        |r| r.get(0),
    )?;
    if !has_key {
        return Ok(());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT _key FROM {} WHERE _key IS NOT NULL",
        ident(table)
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        each(r.get(0)?);
    }
    Ok(())
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
