//! Dataset tables in PostgreSQL: creating and growing them, and loading chunks with binary
//! `COPY`.
//!
//! A table has ferry's columns `_id` (the record id, from `ids`), `_file_id`, `_line` (and `_key`
//! for a dataset with a record key), then the data columns, typed: `text` for columns taken from
//! the files, the declared type's PostgreSQL type for declared ones (`binary::PgType::sql_for`).
//! `_id` has a BRIN index, not a B-tree: ids grow with the table, so a BRIN index finds a range
//! of them for an export at almost no cost per insert, where a primary key costs about a third of
//! the load speed. A dataset with a record key gets a unique index over `_key` (the key's hash)
//! and the key columns themselves: the database decides which record is new, exactly, across
//! every host.

use super::binary::{self, PgType};
use super::ids::Ids;
use super::session::Session;
use crate::record::{Cell, Chunk};
use crate::store::names::short_hash;
use crate::store::{ChunkInsert, ChunkStored, NewColumn};
use anyhow::{Context, Result};
use postgres::Client;
use std::collections::HashMap;

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

    fn ty(&self, name: &str) -> Option<PgType> {
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

/// What the writer knows about dataset tables within one group transaction.
#[derive(Default)]
pub struct Tables {
    known: HashMap<String, Option<TableInfo>>,
    /// Key indexes known to exist, by table.
    key_index: HashMap<String, String>,
}

impl Tables {
    pub fn invalidate(&mut self) {
        self.known.clear();
        self.key_index.clear();
    }

    pub fn info(&mut self, c: &mut Client, table: &str) -> Result<Option<&TableInfo>> {
        if !self.known.contains_key(table) {
            let info = describe(c, table)?;
            self.known.insert(table.to_string(), info);
        }
        Ok(self.known.get(table).and_then(Option::as_ref))
    }

    /// Creates the table, or adds the missing columns (and `_key` when `keyed`). Call under
    /// the schema lock.
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
                sql.push_str(&format!(
                    "); CREATE INDEX {} ON {} USING brin (_id)",
                    ident(&index_name(table, "id")),
                    ident(table)
                ));
                c.batch_execute(&sql)
                    .with_context(|| format!("creating table {table}"))?;
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

    /// The unique index a keyed insert resolves conflicts on, `(_key, key columns…)`, if it
    /// exists already.
    pub fn key_index(&mut self, c: &mut Client, table: &str, keys: &[String]) -> Result<bool> {
        let name = key_index_name(table, keys);
        if self.key_index.get(table) == Some(&name) {
            return Ok(true);
        }
        let exists: bool = c
            .query_one("SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[&name])?
            .get(0);
        if exists {
            self.key_index.insert(table.to_string(), name);
        }
        Ok(exists)
    }

    /// Creates the key index (under the schema lock), replacing one over other key columns.
    pub fn create_key_index(&mut self, c: &mut Client, table: &str, keys: &[String]) -> Result<()> {
        let name = key_index_name(table, keys);
        let old: Vec<String> = c
            .query(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename = $1 AND indexname LIKE 'ferry\\_%\\_key' AND indexname <> $2",
                &[&table, &name],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for o in old {
            c.batch_execute(&format!("DROP INDEX {}", ident(&o)))?;
        }
        let cols: Vec<String> = std::iter::once("_key".to_string())
            .chain(keys.iter().map(|k| ident(k)))
            .collect();
        c.batch_execute(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            ident(&name),
            ident(table),
            cols.join(", ")
        ))
        .with_context(|| format!("creating the record key index of {table}"))?;
        self.key_index.insert(table.to_string(), name);
        Ok(())
    }

    /// Stores a chunk by binary COPY, streamed (the copy stays open for the file's next chunk);
    /// with a record key, less the records whose key is stored already or repeats one earlier in
    /// the chunk, which the database finds by the unique key index. Ids come from `ids` in row
    /// order, for stored records only.
    pub fn insert(
        &mut self,
        s: &mut Session,
        ids: &mut Ids,
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
        // With a record key: the rows whose key is new — to this chunk, and to the table as
        // this transaction sees it (other hosts' commits, this group's earlier files).
        let keep = if keyed {
            Some(new_keys(s.get()?, ins, info)?)
        } else {
            None
        };
        let rows = keep
            .as_ref()
            .map_or(n, |k| k.iter().filter(|&&new| new).count());
        if rows > 0 {
            let first_ids = ids.take(s, rows as u64)?;
            let mut data = Vec::new();
            encode(&mut data, ins, &cells, &first_ids, keyed, keep.as_deref())?;
            let mut names: Vec<String> = ["_id", "_file_id", "_line"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if keyed {
                names.push("_key".into());
            }
            names.extend(cells.iter().map(|(_, n, _)| ident(n)));
            // Streamed: the copy stays open for the file's next chunk. A key that another host
            // stores at this very moment makes it fail on the unique index (`unique_violation`):
            // the group is redone, and then that key is found stored.
            let into = format!("{} ({})", ident(ins.table), names.join(", "));
            s.copy_rows(&into, &data, rows as u64)?;
        }
        Ok(ChunkStored {
            stored: rows as u64,
            duplicates: (n - rows) as u64,
        })
    }
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
    cell: usize,
    name: &'a str,
    ty: PgType,
}

/// Row `r`'s value of a key part, as a binary field.
fn encode_key_part(ins: &ChunkInsert, part: &KeyPart, r: usize, out: &mut Vec<u8>) -> Result<()> {
    let chunk = ins.chunk;
    let cell = chunk.row(r)[part.cell];
    let text = matches!(cell, Cell::Text { .. })
        .then(|| chunk.text(cell))
        .flatten();
    binary::cell(out, part.ty, cell, text).map_err(|why| {
        let name = part.name;
        binary::Unsupported(format!("line {}, column {name}: {why}", chunk.lines[r])).into()
    })
}

/// Per row: whether no earlier row of the chunk has the same key (same hash, same encoded
/// values).
fn first_in_chunk(ins: &ChunkInsert, key: &[KeyPart]) -> Result<Vec<bool>> {
    let n = ins.chunk.rows();
    let mut keep = vec![true; n];
    let mut seen: HashMap<(i64, Vec<u8>), ()> = HashMap::with_capacity(n);
    for (r, new) in keep.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        for part in key {
            encode_key_part(ins, part, r, &mut bytes)?;
        }
        *new = seen.insert((ins.chunk.keys[r], bytes), ()).is_none();
    }
    Ok(keep)
}

/// Per row of a keyed chunk: whether its key is new. A key seen earlier in the chunk is not;
/// the others are looked up in the table by the key index (`_key`, then the key columns
/// compared exactly by the database), all of the chunk in one statement.
fn new_keys(c: &mut Client, ins: &ChunkInsert, info: &TableInfo) -> Result<Vec<bool>> {
    let chunk = ins.chunk;
    let n = chunk.rows();
    let names = key_columns(ins)?;
    let mut key = Vec::with_capacity(names.len());
    for (cell, name) in ins.key_cells.iter().zip(&names) {
        let ty = info
            .ty(name)
            .with_context(|| format!("key column {name} has a type ferry cannot write"))?;
        key.push(KeyPart {
            cell: cell.context("a key column is not stored")?,
            name: name.as_str(),
            ty,
        });
    }
    let encoded = |r: usize, j: usize, out: &mut Vec<u8>| encode_key_part(ins, &key[j], r, out);
    let mut keep = first_in_chunk(ins, &key)?;
    let candidates: Vec<usize> = (0..n).filter(|&r| keep[r]).collect();
    if candidates.is_empty() {
        return Ok(keep);
    }
    // One array per key part: the hashes, then each key column in its table type.
    let mut arrays = vec![binary::array_header(PgType::Int8, candidates.len())];
    for &r in &candidates {
        binary::int8(&mut arrays[0], chunk.keys[r]);
    }
    for (j, part) in key.iter().enumerate() {
        let mut a = binary::array_header(part.ty, candidates.len());
        for &r in &candidates {
            encoded(r, j, &mut a)?;
        }
        arrays.push(a);
    }
    let types: Vec<String> = std::iter::once("bigint".to_string())
        .chain(key.iter().map(|part| part.ty.name().to_string()))
        .enumerate()
        .map(|(p, t)| format!("${}::{t}[]", p + 1))
        .collect();
    let parts: Vec<String> = (0..=key.len()).map(|p| format!("p{p}")).collect();
    let matches: Vec<String> = std::iter::once("t._key = s.p0".to_string())
        .chain(
            key.iter()
                .enumerate()
                .map(|(j, part)| format!("t.{} = s.p{}", ident(part.name), j + 1)),
        )
        .collect();
    // A scalar subquery with LIMIT stays a per-row probe of the key index whatever the table's
    // statistics say (a semi-join could turn into a scan of the whole table). Measured: as fast
    // as one index scan over the array of hashes joined to the chunk's keys.
    let sql = format!(
        "SELECT s.i FROM unnest({}) WITH ORDINALITY AS s({}, i) \
         WHERE (SELECT true FROM {} t WHERE {} LIMIT 1)",
        types.join(", "),
        parts.join(", "),
        ident(ins.table),
        matches.join(" AND ")
    );
    let params: Vec<Raw> = arrays.into_iter().map(Raw).collect();
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect();
    for row in c.query(&sql, &refs)? {
        let ordinal: i64 = row.get(0);
        keep[candidates[ordinal as usize - 1]] = false;
    }
    Ok(keep)
}

/// The table columns of a keyed chunk's key, in key order.
pub fn key_columns(ins: &ChunkInsert) -> Result<Vec<String>> {
    ins.key_cells
        .iter()
        .map(|k| k.and_then(|i| ins.columns.get(i).cloned().flatten()))
        .collect::<Option<Vec<String>>>()
        .context("a key column of the dataset is not stored")
}

fn key_index_name<S: AsRef<str>>(table: &str, keys: &[S]) -> String {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    index_name(&format!("{table}\u{0}{}", keys.join("\u{0}")), "key")
}

/// The chunk's rows (those `keep` says, if given) as binary COPY tuples (no header, no trailer): `_id`, `_file_id`, `_line`,
/// `_key` when keyed, then the stored cells.
fn encode(
    out: &mut Vec<u8>,
    ins: &ChunkInsert,
    cells: &[(usize, &str, PgType)],
    ids: &[(i64, u64)],
    keyed: bool,
    keep: Option<&[bool]>,
) -> Result<()> {
    let chunk: &Chunk = ins.chunk;
    out.reserve(chunk.text.len() + chunk.rows() * (40 + 4 * cells.len()));
    let fields = 3 + keyed as usize + cells.len();
    let mut next = ids.iter().flat_map(|&(first, n)| first..first + n as i64);
    for r in 0..chunk.rows() {
        if keep.is_some_and(|k| !k[r]) {
            continue;
        }
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
