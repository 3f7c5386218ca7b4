//! The registry of names: which table each dataset is stored in, and which column of that table
//! each of a file's columns lands in.
//!
//! Both are decided once — the first time a dataset or a column name is stored — recorded in the
//! ledger (`datasets`, `dataset_columns`), and read back by every command. So two datasets never
//! share a table (`Orders/` and `orders/`, `files/` and `files_data/` each get their own), and a
//! header name always lands in the same column whatever else the file holds (`Name` and `name`
//! are two columns, in every file). A name that cannot be used as it is gets a deterministic new
//! one, and the writer reports the rename on the file.
//!
//! Names are decided inside the writer's transaction, so concurrent processes agree. This module
//! knows SQLite's naming rules; it does not create tables (see `tables`).

use crate::format::{ColumnKey, SYSTEM_COLUMNS};
use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Table names ferry keeps for itself (its own tables, now and to come).
const RESERVED_TABLES: &[&str] = &[
    "files",
    "datasets",
    "dataset_columns",
    "exports",
    "export_batches",
    "record_keys",
    "rejects",
];

/// Prefixes a dataset table may not start with: SQLite refuses `sqlite_`, PostgreSQL keeps `pg_`,
/// ferry keeps `ferry_`.
const RESERVED_PREFIXES: &[&str] = &["sqlite_", "ferry_", "pg_"];

/// The longest table or column name ferry gives: PostgreSQL's limit, so names stay the same
/// whichever store holds them.
pub const MAX_NAME: usize = 63;

/// The most data columns a dataset table may have (SQLite's limit is 2000 in all, and ferry
/// keeps four for itself).
pub const MAX_DATA_COLUMNS: usize = 2000 - SYSTEM_COLUMNS.len();

/// Eight hex digits of the SHA-256 of `s`: a stable, short tie-breaker.
fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `stem` + `suffix`, cutting `stem` (at a character boundary) so the whole fits `max` bytes.
/// A cut stem also gets a hash of the whole, so two long names that share a beginning differ.
fn fit(stem: &str, suffix: &str, max: usize) -> String {
    if stem.len() + suffix.len() <= max {
        return format!("{stem}{suffix}");
    }
    let tag = format!("_{}", short_hash(stem));
    let mut cut = max.saturating_sub(suffix.len() + tag.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{suffix}", &stem[..cut])
}

/// The table for a dataset that has none yet: its name when that is free and allowed, else a
/// deterministic variant. `taken` answers for lowercased names.
pub fn table_name_for(dataset: &str, taken: impl Fn(&str) -> bool) -> String {
    let lower = dataset.to_lowercase();
    let stem = if RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        format!("data_{dataset}")
    } else if RESERVED_TABLES.contains(&lower.as_str()) {
        format!("{dataset}_data")
    } else {
        dataset.to_string()
    };
    let free = |n: &str| !taken(&n.to_lowercase());
    let first = fit(&stem, "", MAX_NAME);
    if free(&first) {
        return first;
    }
    // Another dataset has this name (in another case, or after the `_data` suffix): a suffix
    // that depends on this dataset's own name only.
    let h = format!("_{}", short_hash(dataset));
    let second = fit(&stem, &h, MAX_NAME);
    if free(&second) {
        return second;
    }
    (2..)
        .map(|n| fit(&stem, &format!("{h}_{n}"), MAX_NAME))
        .find(|c| free(c))
        .expect("some suffix is free")
}

/// The column for a file column that has none yet: its name when free, else numbered
/// (`name_2`, …; a repeat starts at its occurrence). `taken` answers for lowercased names.
pub fn column_name_for(key: &ColumnKey, taken: impl Fn(&str) -> bool) -> String {
    let stem = key.stem();
    let free = |n: &str| !taken(&n.to_lowercase());
    if key.occurrence == 1 {
        let plain = fit(&stem, "", MAX_NAME);
        if free(&plain) {
            return plain;
        }
    }
    (key.occurrence.max(2)..)
        .map(|k| fit(&stem, &format!("_{k}"), MAX_NAME))
        .find(|c| free(c))
        .expect("some number is free")
}

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
    let name = table_name_for(dataset, |n| {
        taken.contains(n)
            || RESERVED_TABLES.contains(&n)
            || RESERVED_PREFIXES.iter().any(|p| n.starts_with(p))
    });
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

    /// The dataset's table, if it has one.
    pub fn table(&mut self, conn: &Connection, dataset: &str) -> Result<Option<String>> {
        Ok(self.names(conn, dataset)?.table.clone())
    }

    /// Decides and records the table of a dataset that has none yet.
    pub fn create_table(&mut self, conn: &Connection, dataset: &str, now: &str) -> Result<String> {
        let (table, existing) = table_or_planned(conn, dataset)?;
        if !existing {
            conn.execute(
                "INSERT INTO datasets (name, table_name, created_at) VALUES (?1, ?2, ?3)",
                (dataset, &table, now),
            )?;
        }
        self.names(conn, dataset)?.table = Some(table.clone());
        Ok(table)
    }

    /// The table column a file column lands in, if it has one.
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

    /// Whether a file column without a column yet would take an existing table column: one of
    /// exactly its name that no other file column owns and the caller does not hold (a column
    /// created before ferry kept this registry, or through the dataset's declaration).
    /// `existing`: the table's columns by lowercased name; `reserved`: lowercased names the
    /// caller holds (declared columns, names picked for other columns of the same file).
    pub fn adoptable(
        &mut self,
        conn: &Connection,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
    ) -> Result<bool> {
        let names = self.names(conn, dataset)?;
        let lower = key.name.to_lowercase();
        Ok(key.occurrence == 1
            && !key.name.is_empty()
            && existing.get(&lower).is_some_and(|c| *c == key.name)
            && !names.owned.contains(&lower)
            && !reserved.contains(&lower))
    }

    /// Decides the column of a file column that has none: the existing column it may adopt,
    /// else a new free name. Records the choice; returns the column and whether it must be
    /// created.
    pub fn assign_column(
        &mut self,
        conn: &Connection,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        now: &str,
    ) -> Result<(String, bool)> {
        let adopt = self.adoptable(conn, dataset, key, existing, reserved)?;
        let names = self.names(conn, dataset)?;
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
        conn.prepare_cached(
            "INSERT INTO dataset_columns (dataset, source, occurrence, column_name, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute((dataset, &key.name, key.occurrence, &column, now))?;
        names.owned.insert(column.to_lowercase());
        names
            .columns
            .entry(key.name.clone())
            .or_default()
            .push((key.occurrence, column.clone()));
        Ok((column, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, occurrence: u32, position: u32) -> ColumnKey {
        ColumnKey {
            name: name.into(),
            occurrence,
            position,
        }
    }

    #[test]
    fn tables_never_collide_and_are_loadable() {
        let mut taken: HashSet<String> = HashSet::new();
        let mut give = |d: &str| {
            let t = table_name_for(d, |n| taken.contains(n));
            assert!(taken.insert(t.to_lowercase()), "{d} → {t} twice");
            assert!(!t.to_lowercase().starts_with("sqlite_"), "{t}");
            assert!(t.len() <= MAX_NAME, "{t}");
            t
        };
        assert_eq!(give("Orders"), "Orders");
        let second = give("orders");
        assert!(
            second.starts_with("orders_") && second.len() == 15,
            "{second}"
        );
        assert_eq!(give("files"), "files_data");
        let clash = give("files_data");
        assert_ne!(clash.to_lowercase(), "files_data");
        give("FILES");
        assert_eq!(give("sqlite_stat1"), "data_sqlite_stat1");
        assert_eq!(give("ferry_x"), "data_ferry_x");
        let long = "x".repeat(200);
        let a = give(&long);
        let b = give(&format!("{long}y"));
        assert_ne!(a, b);
        // Deterministic: the same registry state gives the same name.
        let again = table_name_for("orders", |n| n == "orders");
        assert_eq!(again, second);
    }

    #[test]
    fn columns_are_numbered_past_clashes() {
        let taken: HashSet<&str> = ["name", "name_2", "_line"].into_iter().collect();
        let t = |n: &str| taken.contains(n);
        assert_eq!(column_name_for(&key("Name", 1, 2), t), "Name_3");
        assert_eq!(column_name_for(&key("name", 3, 5), t), "name_3");
        assert_eq!(column_name_for(&key("", 1, 4), t), "column_4");
        assert_eq!(column_name_for(&key("_line", 1, 1), t), "_line_2");
        let long = "h".repeat(100);
        let c = column_name_for(&key(&long, 1, 1), t);
        assert!(c.len() <= MAX_NAME && c.starts_with("hhh"), "{c}");
    }
}
