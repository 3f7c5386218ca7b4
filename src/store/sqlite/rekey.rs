//! Re-keying a table in SQLite (`store::keys::rekey` over its tables), what a table needs before
//! keyed records are stored (`key_ready`), and the key indexes for `ferry status`.

use super::keys::Runs;
use super::tables::ident;
use crate::store::keys::def::{KeyDef, KeyValue};
use crate::store::keys::rekey::RekeyStore;
use crate::store::keys::RunStore;
use crate::store::KeyReady;
use anyhow::Result;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

/// A stored value of a key column, owned.
fn key_value(v: ValueRef) -> KeyValue {
    match v {
        ValueRef::Null => KeyValue::Null,
        ValueRef::Integer(i) => KeyValue::Int(i),
        ValueRef::Real(x) => KeyValue::Real(x),
        ValueRef::Text(t) | ValueRef::Blob(t) => KeyValue::Text(String::from_utf8_lossy(t).into()),
    }
}

/// The columns a re-key reads: `_id`, `_key`, the key's, then the version (or NULL).
fn rekey_columns(key: &[String], version: Option<&str>) -> String {
    let mut cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
    cols.push(version.map_or("NULL".into(), ident));
    cols.join(", ")
}

impl RekeyStore for Runs<'_> {
    fn scan(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        each: &mut dyn FnMut(i64, Option<i64>, Vec<KeyValue>, KeyValue) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT _id, _key, {} FROM {} ORDER BY _id",
            rekey_columns(key, version),
            ident(table)
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let vals = (0..key.len())
                .map(|i| r.get_ref(2 + i).map(key_value))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            each(
                r.get(0)?,
                r.get(1)?,
                vals,
                key_value(r.get_ref(2 + key.len())?),
            )?;
        }
        Ok(())
    }

    fn values(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        ids: &[i64],
    ) -> Result<Vec<(i64, Vec<KeyValue>, KeyValue)>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {} FROM {} WHERE _id = ?1",
            rekey_columns(key, version),
            ident(table)
        ))?;
        let mut out = Vec::new();
        for &id in ids {
            let mut rows = stmt.query([id])?;
            if let Some(r) = rows.next()? {
                let vals = (0..key.len())
                    .map(|i| r.get_ref(i).map(key_value))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push((id, vals, key_value(r.get_ref(key.len())?)));
            }
        }
        Ok(out)
    }

    fn set_hashes(&mut self, table: &str, changes: &[(i64, i64)]) -> Result<()> {
        let mut stmt = self.0.prepare_cached(&format!(
            "UPDATE {} SET _key = ?2 WHERE _id = ?1",
            ident(table)
        ))?;
        for &(id, h) in changes {
            stmt.execute([id, h])?;
        }
        Ok(())
    }

    fn delete_records(&mut self, table: &str, ids: &[i64]) -> Result<()> {
        let mut stmt = self
            .0
            .prepare_cached(&format!("DELETE FROM {} WHERE _id = ?1", ident(table)))?;
        for &id in ids {
            stmt.execute([id])?;
        }
        Ok(())
    }

    fn coordinate_now(&mut self, table: &str) -> Result<i64> {
        Ok(self.0.query_row(
            &format!("SELECT coalesce(max(_id), 0) FROM {}", ident(table)),
            [],
            |r| r.get(0),
        )?)
    }

    fn record_definition(&mut self, table: &str, def: Option<&str>, covered: i64) -> Result<()> {
        record_definition(self.0, table, def, covered)
    }
}

/// Records a table's key definition as a new generation of its index, its runs covering up to
/// `covered` (ids never go back below it).
fn record_definition(
    conn: &Connection,
    table: &str,
    def: Option<&str>,
    covered: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ferry_keys (table_name, covered, high_id, definition, defined_at, generation) \
         VALUES (?1, ?2, ?2, ?3, ?4, 1) \
         ON CONFLICT (table_name) DO UPDATE SET covered = ?2, high_id = max(high_id, ?2), \
         definition = ?3, defined_at = ?4, generation = generation + 1",
    )?
    .execute(params![table, covered, def, crate::store::now()])?;
    Ok(())
}

/// What a table needs before records are stored with `def` (`None`: the dataset has no key):
/// ready (the definition recorded is the same, or was just recorded for a table without
/// records, or removed), or a re-key of its records.
pub fn key_ready(conn: &Connection, table: &str, def: Option<&KeyDef>) -> Result<KeyReady> {
    let recorded: Option<Option<String>> = conn
        .prepare_cached("SELECT definition FROM ferry_keys WHERE table_name = ?1")?
        .query_row([table], |r| r.get(0))
        .optional()?;
    let recorded = recorded.flatten();
    let old = recorded.as_deref().and_then(KeyDef::parse);
    match def {
        Some(d) if old.as_ref().is_some_and(|o| o.same(d)) => Ok(KeyReady::Ready),
        Some(d) => {
            let rows: bool = conn
                .prepare_cached(&format!("SELECT EXISTS (SELECT 1 FROM {})", ident(table)))?
                .query_row([], |r| r.get(0))?;
            if rows {
                return Ok(KeyReady::Rekey { from: old });
            }
            drop_all_runs(conn, table)?;
            record_definition(conn, table, Some(&d.json()), 0)?;
            Ok(KeyReady::Ready)
        }
        None if recorded.is_some() => {
            // The key was removed from the config: recorded, its index dropped.
            drop_all_runs(conn, table)?;
            let max = Runs(conn).coordinate_now(table)?;
            record_definition(conn, table, None, max)?;
            tracing::info!(
                table,
                "the dataset has no record key any more; its key index is dropped"
            );
            Ok(KeyReady::Ready)
        }
        None => Ok(KeyReady::Ready),
    }
}

fn drop_all_runs(conn: &Connection, table: &str) -> Result<()> {
    let mut runs = Runs(conn);
    let old: Vec<i64> = runs.runs(table)?.runs.iter().map(|r| r.id).collect();
    runs.drop_runs(table, &old)
}

/// Every keyed table's index, for `ferry status`.
pub fn key_indexes(conn: &Connection) -> Result<Vec<crate::store::KeyIndexStatus>> {
    let mut stmt = conn.prepare(
        "SELECT k.table_name, k.definition, k.defined_at, k.covered, count(r.run), \
                coalesce(sum(r.entries), 0) \
         FROM ferry_keys k LEFT JOIN ferry_key_runs r ON r.table_name = k.table_name \
         WHERE k.definition IS NOT NULL GROUP BY k.table_name ORDER BY k.table_name",
    )?;
    let rows: Vec<(String, String, Option<String>, i64, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (table, def, at, covered, runs, indexed) in rows {
        let tail: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {} WHERE _id > ?1", ident(&table)),
                [covered],
                |r| r.get(0),
            )
            .unwrap_or(0);
        out.push(crate::store::KeyIndexStatus {
            key: KeyDef::parse(&def).map_or(def.clone(), |d| d.describe()),
            table,
            defined_at: at.unwrap_or_default(),
            runs: runs as u64,
            indexed: indexed as u64,
            tail: tail as u64,
        });
    }
    Ok(out)
}
