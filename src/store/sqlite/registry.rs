//! The registry of names in SQLite: `datasets` (dataset → table) and `dataset_columns` (a
//! dataset's file column → table column), and the writer's cache of them. The naming rules are
//! `store::names`; this module stores and finds their results.

use crate::format::ColumnKey;
use crate::store::names::{self, DatasetNames};
use crate::store::now;
use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// Every name a new table cannot take, lowercased: schema objects and registered tables.
fn taken_table_names(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT lower(name) FROM sqlite_master UNION SELECT lower(table_name) FROM datasets",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<HashSet<String>>>()?;
    Ok(names)
}

/// The table a dataset is stored in, if it has one.
pub fn table_of(conn: &Connection, dataset: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT table_name FROM datasets WHERE name = ?1")?
        .query_row([dataset], |r| r.get(0))
        .optional()?)
}

/// Every dataset with its table, by name.
pub fn tables(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT name, table_name FROM datasets ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The table a dataset has, or would get if a file of it were stored now (`false`: not yet).
pub fn table_or_planned(conn: &Connection, dataset: &str) -> Result<(String, bool)> {
    let table = table_of(conn, dataset)?;
    let taken = match table {
        Some(_) => HashSet::new(),
        None => taken_table_names(conn)?,
    };
    Ok(names::table_or_planned(table, dataset, &taken))
}

/// The dataset whose table `table` is (any case), if one's is.
pub fn table_owner(conn: &Connection, table: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM datasets WHERE table_name = ?1 COLLATE NOCASE")?
        .query_row([table], |r| r.get(0))
        .optional()?)
}

/// SQLite's type affinity of a declared column type (its rules, section 3.1 of "Datatypes").
fn affinity(declared: &str) -> &'static str {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// An existing table's columns with their affinities (`None`: no such table). `_id` counts as
/// `INTEGER` only when it is the table's row id (`INTEGER PRIMARY KEY`), which ferry numbers
/// records with.
pub fn table_types(conn: &Connection, table: &str) -> Result<Option<Vec<names::ColumnType>>> {
    let is_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [table],
        |r| r.get(0),
    )?;
    if !is_table {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let cols: Vec<(String, String, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let pks = cols.iter().filter(|c| c.2 > 0).count();
    Ok(Some(
        cols.into_iter()
            .map(|(name, declared, pk)| {
                let rowid = pk > 0 && pks == 1 && declared.eq_ignore_ascii_case("INTEGER");
                let ty = if name.eq_ignore_ascii_case("_id") && !rowid {
                    format!("{} (not the table's row id)", affinity(&declared))
                } else {
                    affinity(&declared).to_string()
                };
                names::ColumnType {
                    name,
                    ty,
                    pk: pk > 0,
                }
            })
            .collect(),
    ))
}

/// The writer's cache of the registry. Reloaded whenever another connection committed, and
/// dropped when a savepoint that may have added names rolls back.
#[derive(Default)]
pub struct Registry {
    data_version: Option<i64>,
    known: HashMap<String, DatasetNames>,
}

impl Registry {
    /// Once per transaction: forgets everything if another process wrote since.
    pub fn refresh(&mut self, conn: &Connection) -> Result<()> {
        let v: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version != Some(v) {
            self.known.clear();
            self.data_version = Some(v);
        }
        Ok(())
    }

    pub fn invalidate(&mut self) {
        self.known.clear();
    }

    fn names(&mut self, conn: &Connection, dataset: &str) -> Result<&mut DatasetNames> {
        if !self.known.contains_key(dataset) {
            let mut n = DatasetNames::new(table_of(conn, dataset)?);
            let mut stmt = conn.prepare_cached(
                "SELECT source, occurrence, column_name FROM dataset_columns WHERE dataset = ?1",
            )?;
            let rows = stmt.query_map([dataset], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (source, occ, col) = row?;
                n.add(source, occ, col);
            }
            self.known.insert(dataset.to_string(), n);
        }
        Ok(self.known.get_mut(dataset).expect("just loaded"))
    }

    pub fn table(&mut self, conn: &Connection, dataset: &str) -> Result<Option<String>> {
        Ok(self.names(conn, dataset)?.table.clone())
    }

    /// Decides (or takes `wanted`, checked by the caller) and records the table of a dataset
    /// that has none yet.
    pub fn create_table(
        &mut self,
        conn: &Connection,
        dataset: &str,
        wanted: Option<&str>,
    ) -> Result<String> {
        let (table, existing) = match wanted {
            Some(w) => (w.to_string(), false),
            None => table_or_planned(conn, dataset)?,
        };
        if !existing {
            conn.execute(
                "INSERT INTO datasets (name, table_name, created_at) VALUES (?1, ?2, ?3)",
                (dataset, &table, now()),
            )?;
        }
        self.names(conn, dataset)?.table = Some(table.clone());
        Ok(table)
    }

    pub fn column(
        &mut self,
        conn: &Connection,
        dataset: &str,
        key: &ColumnKey,
    ) -> Result<Option<String>> {
        Ok(self.names(conn, dataset)?.column(key))
    }

    /// See `Ingest::assign_column`.
    pub fn assign_column(
        &mut self,
        conn: &Connection,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        record: bool,
    ) -> Result<(String, bool)> {
        let names = self.names(conn, dataset)?;
        let (column, new) = names.choose(key, existing, reserved);
        if record {
            conn.prepare_cached(
                "INSERT INTO dataset_columns (dataset, source, occurrence, column_name, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute((dataset, &key.name, key.occurrence, &column, now()))?;
            names.add(key.name.clone(), key.occurrence, column.clone());
        }
        Ok((column, new))
    }
}
