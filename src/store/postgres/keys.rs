//! Record keys across hosts: the in-memory index (`store::keys`), kept exact with a lock per
//! table and a log of the ids each transaction stored.
//!
//! A unique index in the database would decide keys across hosts by itself, but every record
//! then costs a probe and an insertion at random places in a big B-tree (measured: 13% of the
//! unkeyed load speed on the 6.8 M-row benchmark). Instead:
//!
//! - A group that stores keyed records in a table first takes the table's row in `ferry_keys`
//!   (an upsert that adds one to its `epoch`), and holds it to its commit: keyed writers of one
//!   table take turns, on every host. Nobody else can store a key of that table meanwhile.
//! - The group logs, in `ferry_key_log` under its epoch, the id runs it stored in the table,
//!   in the same transaction as the records.
//! - A writer's index knows the epoch it is complete for. Holding the row, it finds the
//!   epochs since (other hosts' groups), and reads their records' `(_id, _key)` by those id
//!   runs (the BRIN index on `_id`, built by the first read that needs it: a host loading
//!   new keys alone never does); an index that is too far behind (its epochs pruned from
//!   the log) or has none is loaded whole.
//! - Then the chunk's keys are decided in memory. A hash seen before is compared exactly with
//!   the stored record by the database (values in their column types), for the whole chunk in
//!   one statement per cluster of ids.
//!
//! A savepoint rolled back gives the row back if the file took it (and undoes the file's
//! keys); a rolled-back group undoes its keys and keeps what it had caught up with. A commit
//! whose outcome is unknown is no different: its epoch, if it committed, is read back from the
//! log like another host's.

use super::binary::{self, PgType};
use super::ids::Ids;
use super::session::Session;
use super::tables::{ident, index_ids, TableInfo};
use crate::record::Cell;
use crate::store::keys::{dedupe, ChunkIds, KeyIndex};
use crate::store::ChunkInsert;
use anyhow::{bail, Context, Result};
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::Instant;

/// Epochs kept in the log per table; an index further behind is loaded whole.
const KEEP_EPOCHS: i64 = 100_000;
/// Ids closer than this are read in one range (the records between are skipped or known).
const RANGE_GAP: i64 = 65_536;
/// At most this many ranges are read one by one for an exact check; more, and one range spans
/// them all.
const MAX_RANGES: usize = 32;

/// What a keyed chunk stores: its kept rows (in order) and their ids.
pub struct NewRows {
    pub kept: Vec<u32>,
    pub ids: Vec<(i64, u64)>,
}

/// The key indexes of the tables this writer stored keyed records in.
#[derive(Default)]
pub struct Keys {
    by_table: HashMap<String, TableKeys>,
}

#[derive(Default)]
struct TableKeys {
    index: KeyIndex,
    /// The table's epoch the index is complete for (`None`: not loaded).
    epoch: Option<i64>,
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
    /// `_id` was seen indexed (or indexed) in this group: hash matches of later chunks need not
    /// ask the catalog again.
    indexed: bool,
}

impl Keys {
    /// The current file is kept.
    pub fn file_done(&mut self) {
        for k in self.by_table.values_mut() {
            k.index.file_done();
            if let Some(h) = &mut k.held {
                h.this_file = false;
                h.file_runs = h.runs.len();
            }
        }
    }

    /// The current file's savepoint was rolled back.
    pub fn undo_file(&mut self) {
        for k in self.by_table.values_mut() {
            k.index.undo_file();
            if k.held.as_ref().is_some_and(|h| h.this_file) {
                k.held = None;
            } else if let Some(h) = &mut k.held {
                h.runs.truncate(h.file_runs);
            }
        }
    }

    /// Before the commit: logs the ids each table got under the group's epoch (and prunes
    /// epochs nobody needs any more).
    pub fn log(&mut self, c: &mut Client) -> Result<()> {
        for (table, k) in &self.by_table {
            let Some(h) = &k.held else { continue };
            if h.runs.is_empty() {
                continue;
            }
            let first: Vec<i64> = h.runs.iter().map(|&(f, _)| f).collect();
            let last: Vec<i64> = h.runs.iter().map(|&(f, n)| f + n as i64 - 1).collect();
            c.execute(
                "WITH pruned AS (DELETE FROM ferry_key_log WHERE table_name = $1 AND epoch <= $2) \
                 INSERT INTO ferry_key_log (table_name, epoch, first_id, last_id) \
                 SELECT $1, $3, f, l FROM unnest($4::int8[], $5::int8[]) AS r(f, l)",
                &[table, &(h.epoch - KEEP_EPOCHS), &h.epoch, &first, &last],
            )
            .with_context(|| format!("logging the record keys stored in {table}"))?;
        }
        Ok(())
    }

    /// The group committed.
    pub fn committed(&mut self) {
        for k in self.by_table.values_mut() {
            if let Some(h) = k.held.take() {
                k.epoch = Some(h.epoch);
            }
            k.index.committed();
        }
    }

    /// The group was rolled back (or its commit failed).
    pub fn rolled_back(&mut self) {
        for k in self.by_table.values_mut() {
            k.held = None;
            k.index.undo_group();
        }
    }

    /// Decides which rows of a keyed chunk are new, and gives them ids.
    pub fn new_rows(
        &mut self,
        s: &mut Session,
        ids: &mut Ids,
        ins: &ChunkInsert,
        info: &TableInfo,
    ) -> Result<NewRows> {
        let k = self.by_table.entry(ins.table.to_string()).or_default();
        if k.held.is_none() {
            k.hold(s.get()?, ins.table)?;
        }
        let n = ins.chunk.rows();
        let runs = ids.take(s, n as u64)?;
        let firsts = k.index.firsts(&ins.chunk.keys);
        let same = stored_same_keys(s, &mut *k, ins, info, &firsts)?;
        let mut duplicates = 0;
        let kept = dedupe(
            &mut k.index,
            ins.chunk,
            ins.key_cells,
            &ChunkIds(&runs),
            Some(&firsts),
            |id, r| Ok(same.contains(&(id, r))),
            &mut duplicates,
        )?;
        let held = k.held.as_mut().expect("held above");
        let mut left = kept.len() as u64;
        for &(first, count) in &runs {
            if left == 0 {
                break;
            }
            let used = count.min(left);
            match held.runs.last_mut() {
                Some((f, c)) if *f + *c as i64 == first => *c += used,
                _ => held.runs.push((first, used)),
            }
            left -= used;
        }
        Ok(NewRows { kept, ids: runs })
    }
}

impl TableKeys {
    /// Takes the table's key row for the group and brings the index up to date with it.
    fn hold(&mut self, c: &mut Client, table: &str) -> Result<()> {
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
        let started = Instant::now();
        let mut indexed = false;
        let loaded = match self.epoch {
            Some(e) if e == before => 0,
            Some(e) if e < before && before - e <= KEEP_EPOCHS => {
                index_ids(c, table)?;
                indexed = true;
                let runs: Vec<(i64, i64)> = c
                    .query(
                        "SELECT first_id, last_id FROM ferry_key_log \
                         WHERE table_name = $1 AND epoch > $2 AND epoch <= $3 ORDER BY first_id",
                        &[&table, &e, &before],
                    )?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let mut n = 0;
                for (lo, hi) in ranges(runs, RANGE_GAP) {
                    n += load(
                        c,
                        table,
                        &format!("_id BETWEEN {lo} AND {hi}"),
                        &mut self.index,
                    )?;
                }
                n
            }
            _ => {
                self.index = KeyIndex::default();
                load(c, table, "true", &mut self.index)?
            }
        };
        if loaded > 100_000 {
            tracing::info!(
                table,
                keys = loaded,
                known = self.index.len(),
                ms = started.elapsed().as_millis() as u64,
                "loaded record keys"
            );
        }
        self.epoch = Some(before);
        self.held = Some(Held {
            epoch,
            this_file: true,
            runs: Vec::new(),
            file_runs: 0,
            indexed,
        });
        Ok(())
    }
}

/// Sorted id runs merged where they are closer than `gap`.
fn ranges(mut runs: Vec<(i64, i64)>, gap: i64) -> Vec<(i64, i64)> {
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

/// Adds the `(_id, _key)` of the table's keyed records matching `filter` to the index (read by
/// a binary COPY); returns how many were read.
fn load(c: &mut Client, table: &str, filter: &str, index: &mut KeyIndex) -> Result<u64> {
    let mut r = c
        .copy_out(&format!(
            "COPY (SELECT _id, _key FROM {} WHERE _key IS NOT NULL AND {filter}) \
             TO STDOUT (FORMAT binary)",
            ident(table)
        ))
        .with_context(|| format!("reading the record keys of {table}"))?;
    binary::read_header(&mut r)?;
    let mut n = 0;
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
        index.add_committed(field(14)?, field(2)?);
        n += 1;
    }
    Ok(n)
}

/// A raw binary parameter (ferry's own encoding of a PostgreSQL array).
#[derive(Debug)]
struct Raw(Vec<u8>);

impl postgres::types::ToSql for Raw {
    fn to_sql(
        &self,
        _: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(postgres::types::IsNull::No)
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One column of a record key: its chunk cell, table column and type.
struct KeyPart<'a> {
    cell: Option<usize>,
    name: &'a str,
    ty: PgType,
}

fn key_parts<'a>(ins: &'a ChunkInsert, info: &TableInfo) -> Result<Vec<KeyPart<'a>>> {
    ins.key_cells
        .iter()
        .map(|&cell| {
            let name = cell
                .and_then(|i| ins.columns.get(i).and_then(Option::as_deref))
                .context("a key column of the dataset is not stored")?;
            let ty = info
                .ty(name)
                .with_context(|| format!("key column {name} has a type ferry cannot write"))?;
            Ok(KeyPart { cell, name, ty })
        })
        .collect()
}

/// Row `r`'s value of a key part, as a binary field.
fn encode_key_part(ins: &ChunkInsert, part: &KeyPart, r: usize, out: &mut Vec<u8>) -> Result<()> {
    let chunk = ins.chunk;
    let cell = part.cell.map_or(Cell::Null, |i| chunk.row(r)[i]);
    let text = matches!(cell, Cell::Text { .. })
        .then(|| chunk.text(cell))
        .flatten();
    binary::cell(out, part.ty, cell, text).map_err(|why| {
        let name = part.name;
        binary::Unsupported(format!("line {}, column {name}: {why}", chunk.lines[r])).into()
    })
}

/// The (stored record, chunk row) pairs whose keys are equal, among those the index pairs by
/// hash (`firsts`: the index's id of each row's hash): compared by the database, in the columns'
/// types (NULL equal to NULL, as in memory).
fn stored_same_keys(
    s: &mut Session,
    k: &mut TableKeys,
    ins: &ChunkInsert,
    info: &TableInfo,
    firsts: &[Option<i64>],
) -> Result<HashSet<(i64, usize)>> {
    let mut pairs: Vec<(i64, usize)> = Vec::new();
    for (r, (&h, &first)) in ins.chunk.keys.iter().zip(firsts).enumerate() {
        pairs.extend(k.index.more_after(h, first).map(|id| (id, r)));
    }
    let mut same = HashSet::new();
    if pairs.is_empty() {
        return Ok(same);
    }
    pairs.sort_unstable();
    let parts = key_parts(ins, info)?;
    let mut spans = ranges(pairs.iter().map(|&(id, _)| (id, id)).collect(), RANGE_GAP);
    if spans.len() > MAX_RANGES {
        spans = vec![(spans[0].0, spans[spans.len() - 1].1)];
    }
    let c = s.get()?;
    let held = k.held.as_mut().expect("the key row is held");
    if !held.indexed {
        index_ids(c, ins.table)?;
        held.indexed = true;
    }
    for (lo, hi) in spans {
        let group: Vec<(i64, usize)> = pairs
            .iter()
            .copied()
            .filter(|&(id, _)| (lo..=hi).contains(&id))
            .collect();
        let mut arrays = vec![binary::array_header(PgType::Int8, group.len())];
        for &(id, _) in &group {
            binary::int8(&mut arrays[0], id);
        }
        for part in &parts {
            let mut a = binary::array_header(part.ty, group.len());
            for &(_, r) in &group {
                encode_key_part(ins, part, r, &mut a)?;
            }
            arrays.push(a);
        }
        let unnest: Vec<String> = std::iter::once("$1::int8[]".to_string())
            .chain(
                parts
                    .iter()
                    .enumerate()
                    .map(|(j, p)| format!("${}::{}[]", j + 2, p.ty.name())),
            )
            .collect();
        let names: Vec<String> = (1..=parts.len()).map(|j| format!("p{j}")).collect();
        let equal: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(j, p)| format!("t.{} IS NOT DISTINCT FROM s.p{}", ident(p.name), j + 1))
            .collect();
        let sql = format!(
            "SELECT s.i FROM {} t JOIN unnest({}) WITH ORDINALITY AS s(id, {}, i) ON t._id = s.id \
             WHERE t._id BETWEEN {lo} AND {hi} AND {}",
            ident(ins.table),
            unnest.join(", "),
            names.join(", "),
            equal.join(" AND ")
        );
        let params: Vec<Raw> = arrays.into_iter().map(Raw).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        for row in c
            .query(&sql, &refs)
            .context("comparing record keys with the stored ones")?
        {
            let ordinal: i64 = row.get(0);
            same.insert(group[ordinal as usize - 1]);
        }
    }
    Ok(same)
}

/// Every stored key hash of `table` (a read, for a dry run): none when the table or its `_key`
/// column does not exist.
pub fn key_hashes(c: &mut Client, table: &str, each: &mut dyn FnMut(i64)) -> Result<()> {
    let has_key: bool = c
        .query_one(
            "SELECT count(*) > 0 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = '_key'",
            &[&table],
        )?
        .get(0);
    if !has_key {
        return Ok(());
    }
    let mut rows = c.query_raw(
        &format!("SELECT _key FROM {} WHERE _key IS NOT NULL", ident(table)),
        std::iter::empty::<&str>(),
    )?;
    while let Some(r) = postgres::fallible_iterator::FallibleIterator::next(&mut rows)? {
        each(r.get(0));
    }
    Ok(())
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
