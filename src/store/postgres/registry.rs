//! The registry of names in PostgreSQL: `datasets` (dataset → table) and `dataset_columns`
//! (a dataset's file column → table column). The naming rules are `store::names`, the same as
//! SQLite's. Several hosts write here: every change is made under the schema lock (see
//! `PgIngest::lock_schema`), and what the writer caches is dropped at each group and whenever
//! that lock is taken, so a decision is always made on what every host has committed.

use crate::format::ColumnKey;
use crate::store::names::{self, DatasetNames};
use anyhow::Result;
use postgres::Client;
use std::collections::{HashMap, HashSet};

/// Every name a new table cannot take, lowercased: relations in ferry's schema and registered
/// tables.
fn taken_table_names(c: &mut Client) -> Result<HashSet<String>> {
    Ok(c.query(
        "SELECT lower(relname) FROM pg_class WHERE relnamespace = current_schema()::regnamespace \
         UNION SELECT lower(table_name) FROM datasets",
        &[],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub fn table_of(c: &mut Client, dataset: &str) -> Result<Option<String>> {
    Ok(c.query_opt(
        "SELECT table_name FROM datasets WHERE name = $1",
        &[&dataset],
    )?
    .map(|r| r.get(0)))
}

pub fn tables(c: &mut Client) -> Result<Vec<(String, String)>> {
    Ok(c.query(
        "SELECT name, table_name FROM datasets ORDER BY name COLLATE \"C\"",
        &[],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

pub fn table_or_planned(c: &mut Client, dataset: &str) -> Result<(String, bool)> {
    let table = table_of(c, dataset)?;
    let taken = match table {
        Some(_) => HashSet::new(),
        None => taken_table_names(c)?,
    };
    Ok(names::table_or_planned(table, dataset, &taken))
}

/// The dataset whose table `table` is (any case), if one's is.
pub fn table_owner(c: &mut Client, table: &str) -> Result<Option<String>> {
    Ok(c.query_opt(
        "SELECT name FROM datasets WHERE lower(table_name) = lower($1)",
        &[&table],
    )?
    .map(|r| r.get(0)))
}

/// An existing table's columns with their types as ferry names them (`bigint`, `text`,
/// `numeric` without a precision, `timestamptz`, …; anything else as PostgreSQL writes it),
/// `None` when there is no such table in ferry's schema.
pub fn table_types(c: &mut Client, table: &str) -> Result<Option<Vec<names::ColumnType>>> {
    let rows = c.query(
        "SELECT a.attname::text, a.atttypid::oid::bigint, a.atttypmod,                 format_type(a.atttypid, a.atttypmod),                 coalesce(a.attnum = ANY(i.indkey), false)          FROM pg_class r JOIN pg_attribute a ON a.attrelid = r.oid          LEFT JOIN pg_index i ON i.indrelid = r.oid AND i.indisprimary          WHERE r.relname = $1 AND r.relnamespace = current_schema()::regnamespace            AND r.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped          ORDER BY a.attnum",
        &[&table],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .map(|r| {
                let (oid, typmod, shown): (i64, i32, String) = (r.get(1), r.get(2), r.get(3));
                let ty = match (oid, typmod) {
                    (20, _) => "bigint".to_string(),
                    (25, _) => "text".to_string(),
                    (701, _) => "double precision".to_string(),
                    (1700, -1) => "numeric".to_string(),
                    (16, _) => "boolean".to_string(),
                    (1082, _) => "date".to_string(),
                    (1184, _) => "timestamptz".to_string(),
                    _ => shown,
                };
                names::ColumnType {
                    name: r.get(0),
                    ty,
                    pk: r.get(4),
                }
            })
            .collect(),
    ))
}

/// The writer's view of the registry within one group transaction.
#[derive(Default)]
pub struct Registry {
    known: HashMap<String, DatasetNames>,
}

impl Registry {
    pub fn invalidate(&mut self) {
        self.known.clear();
    }

    fn names(&mut self, c: &mut Client, dataset: &str) -> Result<&mut DatasetNames> {
        if !self.known.contains_key(dataset) {
            let mut n = DatasetNames::new(table_of(c, dataset)?);
            for r in c.query(
                "SELECT source, occurrence, column_name FROM dataset_columns WHERE dataset = $1",
                &[&dataset],
            )? {
                n.add(r.get(0), r.get::<_, i32>(1) as u32, r.get(2));
            }
            self.known.insert(dataset.to_string(), n);
        }
        Ok(self.known.get_mut(dataset).expect("just loaded"))
    }

    pub fn table(&mut self, c: &mut Client, dataset: &str) -> Result<Option<String>> {
        Ok(self.names(c, dataset)?.table.clone())
    }

    /// Decides and records the table of a dataset that has none (under the schema lock).
    pub fn create_table(
        &mut self,
        c: &mut Client,
        dataset: &str,
        wanted: Option<&str>,
    ) -> Result<String> {
        let (table, existing) = match wanted {
            Some(w) => (w.to_string(), false),
            None => table_or_planned(c, dataset)?,
        };
        if wanted.is_some() && super::tables::table_exists(c, &table)? {
            // An adopted table's rows keep their ids: ferry's next ids come after them.
            let max: Option<i64> = c
                .query_one(
                    &format!("SELECT max(_id) FROM {}", super::tables::ident(&table)),
                    &[],
                )?
                .get(0);
            if let Some(m) = max {
                c.execute(
                    "SELECT setval('ferry_record_ids', \
                     greatest((SELECT last_value FROM ferry_record_ids), $1), true)",
                    &[&m],
                )?;
            }
        }
        if !existing {
            c.execute(
                "INSERT INTO datasets (name, table_name, created_at) VALUES ($1, $2, now())",
                &[&dataset, &table],
            )?;
        }
        self.names(c, dataset)?.table = Some(table.clone());
        Ok(table)
    }

    pub fn column(
        &mut self,
        c: &mut Client,
        dataset: &str,
        key: &ColumnKey,
    ) -> Result<Option<String>> {
        Ok(self.names(c, dataset)?.column(key))
    }

    /// See `Ingest::assign_column`; recording happens under the schema lock.
    pub fn assign_column(
        &mut self,
        c: &mut Client,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        record: bool,
    ) -> Result<(String, bool)> {
        let (column, new) = self.names(c, dataset)?.choose(key, existing, reserved);
        if record {
            c.execute(
                "INSERT INTO dataset_columns (dataset, source, occurrence, column_name, \
                 created_at) VALUES ($1, $2, $3, $4, now())",
                &[&dataset, &key.name, &(key.occurrence as i32), &column],
            )?;
            self.names(c, dataset)?
                .add(key.name.clone(), key.occurrence, column.clone());
        }
        Ok((column, new))
    }
}
