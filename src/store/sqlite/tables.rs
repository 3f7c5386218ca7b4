//! Dataset tables: creating them, growing them, and inserting chunks fast.
//!
//! Every dataset is one table (its name decided by the `registry`) with the system columns `_id` (the record id, increasing in stored
//! order), `_file_id` (the ledger row of the file it came from) and `_line`, then the data
//! columns. Inserts bind many rows per statement: the per-statement cost dominates SQLite's
//! insert path, and binding 16 rows at once roughly doubles throughput.
//!
//! The column lists are cached here; the cache is dropped whenever a transaction or savepoint
//! that may have changed them rolls back, and reloaded when another process changed the schema.

use crate::record::{Cell, Chunk};
use crate::store::NewColumn;
use anyhow::{Context, Result};
use rusqlite::{types::Null, Connection};
use std::collections::HashMap;

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rows bound per INSERT statement, keeping under SQLite's bound-parameter limit.
fn rows_per_statement(columns: usize) -> usize {
    (16usize).min((4096 / columns.max(1)).max(1))
}

#[derive(Debug, Clone)]
struct TableInfo {
    /// Lowercased column name → the name as created (SQLite matches names without case).
    columns: HashMap<String, String>,
}

/// What the writer knows about dataset tables, and their insert statements.
#[derive(Default)]
pub struct Tables {
    known: HashMap<String, TableInfo>,
    schema_version: i64,
}

impl Tables {
    /// Forgets everything cached (after a rollback, or when another process changed the schema).
    pub fn invalidate(&mut self) {
        self.known.clear();
    }

    /// Checks, once per transaction, whether another connection changed the schema.
    pub fn refresh(&mut self, conn: &Connection) -> Result<()> {
        let v: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        if v != self.schema_version {
            self.known.clear();
            self.schema_version = v;
        }
        Ok(())
    }

    fn load(&mut self, conn: &Connection, table: &str) -> Result<Option<&TableInfo>> {
        if !self.known.contains_key(table) {
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", ident(table)))?;
            let cols: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<Result<_, _>>()?;
            if cols.is_empty() {
                return Ok(None);
            }
            let columns = cols.into_iter().map(|c| (c.to_lowercase(), c)).collect();
            self.known.insert(table.to_string(), TableInfo { columns });
        }
        Ok(self.known.get(table))
    }

    /// Makes sure the table exists with at least these columns (and `_key` when `keyed`);
    /// returns the columns it added (none when the table was created with all of them).
    pub fn ensure(
        &mut self,
        conn: &Connection,
        table: &str,
        columns: &[NewColumn],
        keyed: bool,
    ) -> Result<Vec<String>> {
        let existing = self.load(conn, table)?.cloned();
        let sql_type = |c: &NewColumn| c.ty.sql_type();
        let mut wanted: Vec<(&str, &str)> = columns
            .iter()
            .map(|c| (c.name.as_str(), sql_type(c)))
            .collect();
        if keyed {
            wanted.push(("_key", "INTEGER"));
        }
        let mut added = Vec::new();
        match existing {
            None => {
                let mut sql = format!(
                    "CREATE TABLE {} (_id INTEGER PRIMARY KEY, _file_id INTEGER, _line INTEGER",
                    ident(table)
                );
                for (name, ty) in &wanted {
                    sql.push_str(&format!(", {} {ty}", ident(name)));
                }
                sql.push(')');
                conn.execute_batch(&sql)
                    .with_context(|| format!("creating table {table}"))?;
                self.known.remove(table);
            }
            Some(info) => {
                for (name, ty) in &wanted {
                    if !info.columns.contains_key(&name.to_lowercase()) {
                        conn.execute_batch(&format!(
                            "ALTER TABLE {} ADD COLUMN {} {ty}",
                            ident(table),
                            ident(name),
                        ))
                        .with_context(|| format!("adding column {name} to {table}"))?;
                        added.push(name.to_string());
                    }
                }
                if !added.is_empty() {
                    self.known.remove(table);
                }
            }
        }
        Ok(added)
    }

    /// The table's columns: lowercased name → name as created (empty if there is no table yet).
    pub fn columns(&mut self, conn: &Connection, table: &str) -> Result<HashMap<String, String>> {
        Ok(self
            .load(conn, table)?
            .map(|t| t.columns.clone())
            .unwrap_or_default())
    }

    /// Inserts chunk rows into the dataset's table. `columns` names the chunk's cells (`None`:
    /// not stored); `rows` picks the rows to insert (all when `None`); `keyed` stores each row's
    /// key hash. Record ids are SQLite's: the largest id plus one, row after row. A caller that
    /// predicted them passes `expect_first`, and the insert fails if SQLite numbered otherwise;
    /// a keyed insert gives its first row that id itself (the largest id may have been replaced:
    /// ids never go back).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        conn: &Connection,
        table: &str,
        columns: &[Option<String>],
        keyed: bool,
        file_id: i64,
        chunk: &Chunk,
        rows: Option<&[u32]>,
        expect_first: Option<i64>,
    ) -> Result<()> {
        let n = rows.map_or(chunk.rows(), <[u32]>::len);
        if n == 0 {
            return Ok(());
        }
        debug_assert!(chunk.width <= columns.len());
        let stored: Vec<&str> = columns[..chunk.width]
            .iter()
            .filter_map(|c| c.as_deref())
            .collect();
        // Binding the id instead would make SQLite check it for a conflict (a seek per row, and
        // a statement journal for the multi-row INSERT).
        let system = if keyed { 3 } else { 2 };
        let k = rows_per_statement(stored.len() + system);
        let sql = |count: usize| insert_sql(table, keyed, &stored, count, false);
        let row_at = |i: usize| rows.map_or(i, |r| r[i] as usize);
        let row = RowBind {
            chunk,
            columns,
            keyed,
            file_id,
        };
        let bind = |stmt: &mut rusqlite::Statement<'_>, p: &mut usize, i: usize| {
            row.bind(stmt, p, row_at(i))
        };
        let mut i = 0;
        if let (true, Some(first)) = (keyed, expect_first) {
            let mut stmt = conn.prepare_cached(&insert_sql(table, keyed, &stored, 1, true))?;
            stmt.raw_bind_parameter(1, first)?;
            let mut p = 2;
            bind(&mut stmt, &mut p, 0)?;
            stmt.raw_execute()?;
            i = 1;
        }
        if n - i >= k {
            let mut stmt = conn.prepare_cached(&sql(k))?;
            while i + k <= n {
                let mut p = 1;
                for j in i..i + k {
                    bind(&mut stmt, &mut p, j)?;
                }
                stmt.raw_execute()?;
                i += k;
            }
        }
        if i < n {
            let mut stmt = conn.prepare_cached(&sql(1))?;
            while i < n {
                let mut p = 1;
                bind(&mut stmt, &mut p, i)?;
                stmt.raw_execute()?;
                i += 1;
            }
        }
        if let Some(first) = expect_first {
            let last = conn.last_insert_rowid();
            anyhow::ensure!(
                last == first + n as i64 - 1,
                "record ids in {table} are not where ferry expected them (last {last}, expected \
                 {}); was the table changed outside ferry?",
                first + n as i64 - 1
            );
        }
        Ok(())
    }

    /// The highest record id in a table (0 when empty or missing).
    pub fn max_id(&mut self, conn: &Connection, table: &str) -> Result<i64> {
        if self.load(conn, table)?.is_none() {
            return Ok(0);
        }
        Ok(conn
            .prepare_cached(&format!(
                "SELECT coalesce(max(_id), 0) FROM {}",
                ident(table)
            ))?
            .query_row([], |r| r.get(0))?)
    }
}

/// A multi-row INSERT of `count` rows into `table`: ferry's columns (`_id` too when
/// `with_id`), then `stored`.
fn insert_sql(table: &str, keyed: bool, stored: &[&str], count: usize, with_id: bool) -> String {
    let params = stored.len() + if keyed { 3 } else { 2 } + usize::from(with_id);
    let mut s = format!("INSERT INTO {} (", ident(table));
    if with_id {
        s.push_str("_id, ");
    }
    if keyed {
        s.push_str("_key, ");
    }
    s.push_str("_file_id, _line");
    for c in stored {
        s.push_str(", ");
        s.push_str(&ident(c));
    }
    s.push_str(") VALUES ");
    let one = format!("({})", vec!["?"; params].join(","));
    s.push_str(&vec![one; count].join(","));
    s
}

/// Binds chunk rows to an INSERT made by `insert_sql`.
struct RowBind<'a> {
    chunk: &'a Chunk,
    columns: &'a [Option<String>],
    keyed: bool,
    file_id: i64,
}

impl RowBind<'_> {
    /// Binds row `r` from parameter `*p` on, and moves `*p` past it.
    fn bind(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        p: &mut usize,
        r: usize,
    ) -> rusqlite::Result<()> {
        let chunk = self.chunk;
        if self.keyed {
            stmt.raw_bind_parameter(*p, chunk.keys[r])?;
            *p += 1;
        }
        stmt.raw_bind_parameter(*p, self.file_id)?;
        stmt.raw_bind_parameter(*p + 1, chunk.lines[r] as i64)?;
        *p += 2;
        for (cell, col) in chunk.row(r).iter().zip(self.columns) {
            if col.is_none() {
                continue;
            }
            match *cell {
                Cell::Null => stmt.raw_bind_parameter(*p, Null)?,
                Cell::Text { start, end } => {
                    stmt.raw_bind_parameter(*p, &chunk.text[start as usize..end as usize])?
                }
                Cell::Int(v) => stmt.raw_bind_parameter(*p, v)?,
                Cell::Real(v) => stmt.raw_bind_parameter(*p, v)?,
            }
            *p += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::ColType;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn tables_grow_and_take_chunks() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let mut t = Tables::default();
        let text = |n: &str| NewColumn {
            name: n.into(),
            ty: ColType::String,
        };
        assert!(t
            .ensure(&conn, "s", &[text("a")], false)
            .unwrap()
            .is_empty());
        assert_eq!(
            t.ensure(&conn, "s", &[text("A"), text("b")], false)
                .unwrap(),
            ["b"]
        );
        let mut c = Chunk::new(2);
        for i in 0..37 {
            let v = format!("{i}x");
            c.push_row(i + 2, &v, &[Some((0, v.len())), None]);
        }
        t.insert(
            &conn,
            "s",
            &[Some("b".into()), Some("a".into())],
            false,
            7,
            &c,
            None,
            Some(1),
        )
        .unwrap();
        let (n, sum): (i64, i64) = conn
            .query_row(
                "SELECT count(*), sum(_line) FROM s WHERE _file_id = 7 AND a IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, sum), (37, (2..39).sum::<i64>()));
    }
}
