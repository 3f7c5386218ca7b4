//! Dataset tables in PostgreSQL: creating and growing them, and loading chunks with binary
//! `COPY`.
//!
//! A table has ferry's columns `_id` (the record id, from `ids`), `_file_id`, `_line` (and `_key`
//! for a dataset with a record key), then the data columns, typed: `text` for columns taken from
//! the files, the declared type's PostgreSQL type for declared ones (`binary::PgType::sql_for`).
//! `_id` gets a BRIN index, not a B-tree, once ranges of ids are read by an export: ids grow with
//! the table, so a BRIN index finds a range cheaply, where a primary key costs about a third of
//! the load speed. Even a BRIN index costs the server a fifth of its work per stored row
//! (PostgreSQL 15 looks its range map up for every row), so a table gets it only when an export
//! first reads it (`ensure_id_index`, before planning a batch; a table created for a dataset
//! that has a target gets it at once). A keyed table gets a B-tree on `_id` instead, when a
//! keyed writer first reads records by id (catching up with other hosts' keys, comparing a hash
//! match: `index_ids`): those reads are of a few ids anywhere in the table, and a BRIN index
//! answers them badly — pages added since it was built are read by every lookup until a vacuum
//! summarizes them, and a replaced record's successor, stored in an old page's free space,
//! widens that page range to every later id (measured: a 6.8 M-row set re-sent with 10%
//! changed took 285 s on BRIN, the lookups growing with the table). A dataset with a
//! record key gets `_key` (the key's hash, unindexed): which record is new is decided by `keys`.

use super::binary::{self, PgType};
use super::ids::Ids;
use super::keys::Keys;
use super::session::Session;
use crate::record::{Cell, Chunk};
use crate::store::names::short_hash;
use crate::store::{ChunkInsert, ChunkStored, NewColumn};
use anyhow::{Context, Result};
use postgres::Client;
use std::collections::{HashMap, HashSet};

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The name of one of ferry's indexes on a table (`ferry_` names are never a dataset's).
fn index_name(table: &str, what: &str) -> String {
    format!("ferry_{}_{what}", short_hash(table))
}

/// A table's columns as created, in order, with their types.
#[derive(Debug, Clone, Default)]
pub struct TableInfo {
    pub columns: Vec<(String, Option<PgType>)>,
    by_lower: HashMap<String, usize>,
}

impl TableInfo {
    pub fn lower_map(&self) -> HashMap<String, String> {
        self.columns
            .iter()
            .map(|(n, _)| (n.to_lowercase(), n.clone()))
            .collect()
    }

    pub(super) fn ty(&self, name: &str) -> Option<PgType> {
        self.by_lower
            .get(&name.to_lowercase())
            .and_then(|&i| self.columns[i].1)
    }
}

/// Reads a table's columns (`None`: no such table in ferry's schema).
pub fn describe(c: &mut Client, table: &str) -> Result<Option<TableInfo>> {
    let rows = c.query(
        "SELECT a.attname::text, a.atttypid::oid::bigint FROM pg_attribute a \
         JOIN pg_class r ON r.oid = a.attrelid \
         WHERE r.relname = $1 AND r.relnamespace = current_schema()::regnamespace \
           AND r.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        &[&table],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns: Vec<(String, Option<PgType>)> = rows
        .iter()
        .map(|r| (r.get(0), PgType::from_oid(r.get::<_, i64>(1) as u32)))
        .collect();
    let by_lower = columns
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.to_lowercase(), i))
        .collect();
    Ok(Some(TableInfo { columns, by_lower }))
}

/// The state of a table's `_id` index: `None` none, `Some(false)` left invalid by a concurrent
/// build that failed.
fn id_index(c: &mut Client, table: &str) -> Result<Option<bool>> {
    index_state(c, &index_name(table, "id"))
}

fn index_state(c: &mut Client, name: &str) -> Result<Option<bool>> {
    Ok(c.query_opt(
        "SELECT x.indisvalid FROM pg_class i JOIN pg_index x ON x.indexrelid = i.oid \
         WHERE i.relname = $1 AND i.relnamespace = current_schema()::regnamespace",
        &[&name],
    )?
    .map(|r| r.get(0)))
}

fn create_id_index(table: &str, concurrently: bool) -> String {
    format!(
        "CREATE INDEX {}IF NOT EXISTS {} ON {} USING brin (_id)",
        if concurrently { "CONCURRENTLY " } else { "" },
        ident(&index_name(table, "id")),
        ident(table)
    )
}

/// Gives an existing table's `_id` its BRIN index if it has none, for a reader of id ranges
/// (an export target). Outside any transaction: the index is built `CONCURRENTLY`, so hosts
/// storing into the table are not held up while it is built (one pass over the table). Another
/// process building it at the same moment is fine: the index exists afterwards either way (an
/// index still being built also reads as invalid; dropping it waits for that build to end).
pub fn ensure_id_index(c: &mut Client, table: &str) -> Result<()> {
    if !table_exists(c, table)? {
        return Ok(());
    }
    let index = ident(&index_name(table, "id"));
    match id_index(c, table)? {
        Some(true) => return Ok(()),
        Some(false) => c.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))?,
        None => {}
    }
    match c.batch_execute(&create_id_index(table, true)) {
        Err(e) if id_index(c, table)? != Some(true) => {
            Err(e).with_context(|| format!("creating the _id index of {table}"))
        }
        _ => Ok(()),
    }
}

pub(super) fn table_exists(c: &mut Client, table: &str) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 \
         AND relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p'))",
        &[&table],
    )?
    .get(0))
}

/// Gives a keyed table's `_id` its B-tree inside a keyed writer's group, about to read records
/// by id (the table's key row it holds keeps other keyed writers out). Built once, over the
/// table as it is, then kept up by every insert. Looked up in the catalog first: `CREATE INDEX
/// IF NOT EXISTS` would wait for a lock on the table even when the index is there.
pub fn index_ids(c: &mut Client, table: &str) -> Result<()> {
    let name = index_name(table, "idk");
    let state = index_state(c, &name)?;
    if state == Some(true) {
        return Ok(());
    }
    if state.is_some() {
        c.batch_execute(&format!("DROP INDEX IF EXISTS {}", ident(&name)))?;
    }
    c.batch_execute(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (_id)",
        ident(&name),
        ident(table)
    ))
    .with_context(|| format!("indexing table {table}"))?;
    Ok(())
}

/// Runs `f` with sequential scans priced out, for reads of a table's records by `_id` (a few
/// ranges of ids, or — `one_by_one` — ids looked up each in the `_id` index). Without
/// statistics (a table just loaded, not analyzed yet) the planner takes a join with a list of
/// ids to match a large share of the table: it scanned the whole table for every chunk (80 ms a
/// chunk at 1.4 M rows, growing with the table), or walked the whole index for 1,000 ids
/// spread over it (a second at 3 M rows). JIT is off too: the prices that rule scans out would
/// make it compile every such statement (140 ms each).
pub fn by_id<T>(
    c: &mut Client,
    one_by_one: bool,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    c.batch_execute(if one_by_one {
        "SET enable_seqscan = off; SET jit = off; SET enable_hashjoin = off; \
         SET enable_mergejoin = off"
    } else {
        "SET enable_seqscan = off; SET jit = off"
    })?;
    let out = f(c);
    // After an error the transaction is aborted (and its SETs undone with it).
    let reset = c.batch_execute(
        "RESET enable_seqscan; RESET jit; RESET enable_hashjoin; RESET enable_mergejoin",
    );
    let out = out?;
    reset?;
    Ok(out)
}

/// Deletes the records with these ids; how many there were (by clusters, see `by_clusters`).
pub fn delete_ids(c: &mut Client, table: &str, ids: &[i64]) -> Result<u64> {
    let sql = format!(
        "DELETE FROM {} t USING unnest($1::int8[]) AS d(id) WHERE t._id = d.id",
        ident(table)
    );
    let mut gone = 0;
    by_clusters(c, ids, |c, these, range| {
        gone += c.execute(&within(&sql, range), &[&these])?;
        Ok(())
    })?;
    Ok(gone)
}

/// Which of these ids name a record of the table (read as `delete_ids` deletes).
pub fn live_ids(c: &mut Client, table: &str, ids: &[i64]) -> Result<HashSet<i64>> {
    let sql = format!(
        "SELECT t._id FROM {} t JOIN unnest($1::int8[]) AS d(id) ON t._id = d.id WHERE true",
        ident(table)
    );
    let mut live = HashSet::new();
    by_clusters(c, ids, |c, these, range| {
        let rows = c.query(&within(&sql, range), &[&these])?;
        live.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        Ok(())
    })?;
    Ok(live)
}

/// A statement on `t` narrowed to an id range, if given.
fn within(sql: &str, range: Option<(i64, i64)>) -> String {
    match range {
        Some((lo, hi)) => format!("{sql} AND t._id BETWEEN {lo} AND {hi}"),
        None => sql.to_string(),
    }
}

/// Calls `each(ids, range)` per cluster of close ids (sorted, within the range): each cluster
/// is one range scan of the `_id` index. Ids spread over more than `MAX_RANGES` clusters go in
/// one statement without a range (one index lookup per id). Sequential scans are priced out
/// (`by_id`).
fn by_clusters(
    c: &mut Client,
    ids: &[i64],
    mut each: impl FnMut(&mut Client, &[i64], Option<(i64, i64)>) -> Result<()>,
) -> Result<()> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let spans = super::keys::ranges(
        sorted.iter().map(|&i| (i, i)).collect(),
        super::keys::RANGE_GAP,
    );
    let one_by_one = spans.len() > super::keys::MAX_RANGES;
    by_id(c, one_by_one, |c| {
        if one_by_one {
            return each(c, &sorted, None);
        }
        let mut rest = sorted.as_slice();
        for (lo, hi) in spans {
            let (these, after) = rest.split_at(rest.partition_point(|&i| i <= hi));
            each(c, these, Some((lo, hi)))?;
            rest = after;
        }
        Ok(())
    })
}

/// Whether the dataset stored in `table` has an export target (in the writer's transaction).
fn exported(c: &mut Client, table: &str) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM exports e JOIN datasets d ON d.name = e.dataset \
         WHERE lower(d.table_name) = lower($1))",
        &[&table],
    )?
    .get(0))
}

/// What the writer knows about dataset tables within one group transaction.
#[derive(Default)]
pub struct Tables {
    known: HashMap<String, Option<TableInfo>>,
    /// Records the current file replaced, per table, deleted at its end (`delete_replaced`):
    /// a delete per chunk would end the file's copy every time. Until then a replaced record
    /// and its successor are both in the table; the successor has the greater id, and the
    /// greater id is what a comparison keeps.
    replaced: HashMap<String, Vec<i64>>,
}

/// Replaced records held for one delete, at most (more, and they go at once).
const REPLACED_AT_ONCE: usize = 1 << 16;

impl Tables {
    /// Deletes the records the current file replaced (before its savepoint is released).
    pub fn delete_replaced(&mut self, c: &mut Client) -> Result<()> {
        for (table, old) in std::mem::take(&mut self.replaced) {
            let gone = delete_ids(c, &table, &old)?;
            anyhow::ensure!(
                gone == old.len() as u64,
                "{gone} of {} records replaced in {table} were there to delete",
                old.len(),
            );
        }
        Ok(())
    }

    /// The current file was undone: so were its replacements.
    pub fn forget_replaced(&mut self) {
        self.replaced.clear();
    }

    pub fn invalidate(&mut self) {
        self.known.clear();
    }

    pub fn info(&mut self, c: &mut Client, table: &str) -> Result<Option<&TableInfo>> {
        if !self.known.contains_key(table) {
            let info = describe(c, table)?;
            self.known.insert(table.to_string(), info);
        }
        Ok(self.known.get(table).and_then(Option::as_ref))
    }

    /// Creates the table (with the `_id` index if its dataset has an export target already), or
    /// adds the missing columns (and `_key` when `keyed`). Call under the schema lock.
    pub fn ensure(
        &mut self,
        c: &mut Client,
        table: &str,
        columns: &[NewColumn],
        keyed: bool,
    ) -> Result<()> {
        let existing = self.info(c, table)?.cloned();
        let mut wanted: Vec<(String, &str)> = columns
            .iter()
            .map(|col| (col.name.clone(), PgType::sql_for(col.ty)))
            .collect();
        if keyed {
            wanted.push(("_key".into(), "bigint"));
        }
        match existing {
            None => {
                let mut sql = format!(
                    "CREATE TABLE {} (_id bigint NOT NULL, _file_id bigint NOT NULL, \
                     _line bigint NOT NULL",
                    ident(table)
                );
                for (name, ty) in &wanted {
                    sql.push_str(&format!(", {} {ty}", ident(name)));
                }
                sql.push(')');
                c.batch_execute(&sql)
                    .with_context(|| format!("creating table {table}"))?;
                if exported(c, table)? {
                    c.batch_execute(&create_id_index(table, false))
                        .with_context(|| format!("indexing table {table}"))?;
                }
            }
            Some(info) => {
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|(n, _)| !info.by_lower.contains_key(&n.to_lowercase()))
                    .map(|(n, ty)| format!("ADD COLUMN IF NOT EXISTS {} {ty}", ident(n)))
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                c.batch_execute(&format!(
                    "ALTER TABLE {} {}",
                    ident(table),
                    missing.join(", ")
                ))
                .with_context(|| format!("adding columns to {table}"))?;
            }
        }
        self.known.remove(table);
        Ok(())
    }

    /// Stores a chunk by binary COPY, streamed (the copy stays open for the file's next chunk);
    /// with a record key, less the records whose key is stored already or repeats one earlier in
    /// the chunk (decided by `keys`). Ids come from `ids` in row order, for stored records only.
    pub fn insert(
        &mut self,
        s: &mut Session,
        ids: &mut Ids,
        keys: &mut Keys,
        ins: &ChunkInsert,
    ) -> Result<ChunkStored> {
        let n = ins.chunk.rows();
        if n == 0 {
            return Ok(ChunkStored::default());
        }
        let keyed = !ins.key_cells.is_empty();
        // Known after the chunk's file was set up: asking the session only when it is not keeps
        // the file's copy open.
        if !self.known.contains_key(ins.table) {
            self.info(s.get()?, ins.table)?;
        }
        let info = self.known[ins.table]
            .as_ref()
            .with_context(|| format!("table {} does not exist", ins.table))?;
        // The chunk cells stored, their table columns and types.
        let mut cells = Vec::new();
        for (i, col) in ins.columns[..ins.chunk.width].iter().enumerate() {
            if let Some(name) = col {
                let ty = info.ty(name).with_context(|| {
                    format!(
                        "column {name} of {} has a type ferry cannot write",
                        ins.table
                    )
                })?;
                cells.push((i, name.as_str(), ty));
            }
        }
        // With a record key: what `on_key` decided, and the ids of the rows to store.
        let new = if keyed {
            Some(keys.new_rows(s, ids, ins, info)?)
        } else {
            None
        };
        if let Some(plan) = new
            .as_ref()
            .map(|k| &k.plan)
            .filter(|p| !p.replaces.is_empty())
        {
            // The records replaced go at the file's end (their successors are in the copy).
            let held = self.replaced.entry(ins.table.to_string()).or_default();
            held.extend(plan.replaces.iter().map(|&(_, id)| id));
            if held.len() >= REPLACED_AT_ONCE {
                self.delete_replaced(s.get()?)?;
            }
        }
        let pick = new.as_ref().map(|k| k.plan.insert.as_slice());
        let rows = pick.map_or(n, <[u32]>::len);
        if rows > 0 {
            let first_ids = match &new {
                Some(k) => k.ids.clone(),
                None => ids.take(s, rows as u64)?,
            };
            let mut data = Vec::new();
            encode(&mut data, ins, &cells, &first_ids, keyed, pick)?;
            let mut names: Vec<String> = ["_id", "_file_id", "_line"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if keyed {
                names.push("_key".into());
            }
            names.extend(cells.iter().map(|(_, n, _)| ident(n)));
            // Streamed: the copy stays open for the file's next chunk.
            let into = format!("{} ({})", ident(ins.table), names.join(", "));
            s.copy_rows(&into, &data, rows as u64)?;
        }
        let Some(new) = new else {
            return Ok(ChunkStored {
                stored: n as u64,
                ..ChunkStored::default()
            });
        };
        let plan = new.plan;
        Ok(ChunkStored {
            stored: plan.new + plan.updated,
            updated: plan.updated,
            duplicates: plan.duplicates,
            rejects: plan.rejects,
        })
    }
}

/// The chunk's rows (those `pick` names, in its order, if given) as binary COPY tuples (no
/// header, no trailer): `_id`, `_file_id`, `_line`, `_key` when keyed, then the stored cells.
fn encode(
    out: &mut Vec<u8>,
    ins: &ChunkInsert,
    cells: &[(usize, &str, PgType)],
    ids: &[(i64, u64)],
    keyed: bool,
    pick: Option<&[u32]>,
) -> Result<()> {
    let chunk: &Chunk = ins.chunk;
    out.reserve(chunk.text.len() + chunk.rows() * (40 + 4 * cells.len()));
    let fields = 3 + keyed as usize + cells.len();
    let mut next = ids.iter().flat_map(|&(first, n)| first..first + n as i64);
    let all: Vec<u32>;
    let rows = match pick {
        Some(p) => p,
        None => {
            all = (0..chunk.rows() as u32).collect();
            &all
        }
    };
    for &r in rows {
        let r = r as usize;
        binary::tuple(out, fields);
        binary::int8(out, next.next().context("fewer ids than rows")?);
        binary::int8(out, ins.file_id);
        binary::int8(out, chunk.lines[r] as i64);
        if keyed {
            binary::int8(out, chunk.keys[r]);
        }
        let row = chunk.row(r);
        for &(i, name, ty) in cells {
            let cell = row[i];
            let text = match cell {
                Cell::Text { .. } => chunk.text(cell),
                _ => None,
            };
            binary::cell(out, ty, cell, text).map_err(|why| {
                binary::Unsupported(format!("line {}, column {name}: {why}", chunk.lines[r]))
            })?;
        }
    }
    Ok(())
}
