//! The registry of names in SQLite: `datasets` (dataset → table) and `dataset_columns` (a
//! dataset's file column → table column), and the writer's cache of them. The naming rules are
//! `store::names`; this module stores and finds their results.

use crate::format::{ColumnKey, SYSTEM_COLUMNS};
use crate::store::names::{column_name_for, reserved_table, table_name_for};
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
    if let Some(t) = table_of(conn, dataset)? {
        return Ok((t, true));
    }
    let taken = taken_table_names(conn)?;
    let name = table_name_for(dataset, |n| taken.contains(n) || reserved_table(n));
    Ok((name, false))
}

/// What the writer knows of one dataset's names.
#[derive(Debug, Default, Clone)]
struct Names {
    table: Option<String>,
    /// File column name → (occurrence, table column).
    columns: HashMap<String, Vec<(u32, String)>>,
    /// Lowercased table columns that a file column owns.
    owned: HashSet<String>,
}

/// The writer's cache of the registry. Reloaded whenever another connection committed, and
/// dropped when a savepoint that may have added names rolls back.
#[derive(Default)]
pub struct Registry {
    data_version: Option<i64>,
    known: HashMap<String, Names>,
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

    fn names(&mut self, conn: &Connection, dataset: &str) -> Result<&mut Names> {
        if !self.known.contains_key(dataset) {
            let mut n = Names {
                table: table_of(conn, dataset)?,
                ..Names::default()
            };
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
                n.owned.insert(col.to_lowercase());
                n.columns.entry(source).or_default().push((occ, col));
            }
            self.known.insert(dataset.to_string(), n);
        }
        Ok(self.known.get_mut(dataset).expect("just loaded"))
    }

    pub fn table(&mut self, conn: &Connection, dataset: &str) -> Result<Option<String>> {
        Ok(self.names(conn, dataset)?.table.clone())
    }

    /// Decides and records the table of a dataset that has none yet.
    pub fn create_table(&mut self, conn: &Connection, dataset: &str) -> Result<String> {
        let (table, existing) = table_or_planned(conn, dataset)?;
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
        Ok(self
            .names(conn, dataset)?
            .columns
            .get(&key.name)
            .and_then(|v| v.iter().find(|(o, _)| *o == key.occurrence))
            .map(|(_, c)| c.clone()))
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
        let lower = key.name.to_lowercase();
        let adopt = key.occurrence == 1
            && !key.name.is_empty()
            && existing.get(&lower).is_some_and(|c| *c == key.name)
            && !names.owned.contains(&lower)
            && !reserved.contains(&lower);
        let (column, new) = if adopt {
            (key.name.clone(), false)
        } else {
            let taken = |n: &str| {
                existing.contains_key(n)
                    || names.owned.contains(n)
                    || reserved.contains(n)
                    || SYSTEM_COLUMNS.iter().any(|s| s.eq_ignore_ascii_case(n))
            };
            (column_name_for(key, taken), true)
        };
        if record {
            conn.prepare_cached(
                "INSERT INTO dataset_columns (dataset, source, occurrence, column_name, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute((dataset, &key.name, key.occurrence, &column, now()))?;
            names.owned.insert(column.to_lowercase());
            names
                .columns
                .entry(key.name.clone())
                .or_default()
                .push((key.occurrence, column.clone()));
        }
        Ok((column, new))
    }
}
