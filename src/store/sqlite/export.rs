//! Export state in SQLite: `exports` (one row per dataset and target: watermark and the pending
//! batch) and `export_batches` (every batch written). The protocol is `crate::export`'s; this
//! module keeps its state and reads a batch's records.
//!
//! Record ids only grow in commit order here (SQLite assigns the largest id plus one, one writer
//! at a time, and ferry never deletes records), so "ids after the watermark" is exactly "records
//! not yet exported".

use crate::format::SYSTEM_COLUMNS;
use crate::store::sqlite::tables::ident;
use crate::store::{now, BatchPlan, BatchRange, Record, TargetKey, TargetStatus, Value};
use anyhow::{bail, Result};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

/// Runs `f` in a write transaction taken at once (`BEGIN IMMEDIATE`), committed if it succeeds.
fn in_write_txn<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = f();
    match &r {
        Ok(_) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    r
}

/// The partner's columns of a table, in table order.
fn data_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let cols: Vec<String> = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cols
        .into_iter()
        .filter(|c| !SYSTEM_COLUMNS.contains(&c.as_str()))
        .collect())
}

pub fn upsert_target(conn: &Connection, key: &TargetKey, dir: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO exports (dataset, target, dir, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (dataset, target) DO UPDATE SET dir = excluded.dir",
        params![key.dataset, key.target, dir, now()],
    )?;
    Ok(())
}

pub fn target_dirs(conn: &Connection, dataset: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT target, dir FROM exports WHERE dataset = ?1")?;
    let rows = stmt
        .query_map([dataset], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn watermark(conn: &Connection, key: &TargetKey) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT watermark FROM exports WHERE dataset = ?1 AND target = ?2",
        params![key.dataset, key.target],
        |r| r.get(0),
    )?)
}

/// The pending batch of a target, if an export was interrupted.
fn pending(conn: &Connection, key: &TargetKey) -> Result<(i64, Option<BatchPlan>)> {
    Ok(conn.query_row(
        "SELECT watermark, pending_name, pending_format, pending_gzip, pending_first,
                pending_last, pending_rows, pending_created_at, pending_columns
         FROM exports WHERE dataset = ?1 AND target = ?2",
        params![key.dataset, key.target],
        |r| {
            let name: Option<String> = r.get(1)?;
            let plan = match name {
                Some(name) => Some(BatchPlan {
                    name,
                    format: r.get(2)?,
                    gzip: r.get(3)?,
                    first: r.get(4)?,
                    last: r.get(5)?,
                    rows: r.get::<_, i64>(6)? as u64,
                    created_at: r.get(7)?,
                    columns: serde_json::from_str(&r.get::<_, String>(8)?).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            8,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                }),
                None => None,
            };
            Ok((r.get(0)?, plan))
        },
    )?)
}

/// See `Store::plan_batch`.
pub fn plan_batch(
    conn: &Connection,
    key: &TargetKey,
    table: &str,
    max_rows: u64,
    make: &mut dyn FnMut(BatchRange) -> BatchPlan,
) -> Result<Option<(BatchPlan, bool)>> {
    in_write_txn(conn, || {
        let (watermark, pending) = pending(conn, key)?;
        if let Some(p) = pending {
            return Ok(Some((p, true)));
        }
        let (rows, first, last): (i64, Option<i64>, Option<i64>) = conn.query_row(
            &format!(
                "SELECT count(*), min(_id), max(_id) FROM \
                 (SELECT _id FROM {} WHERE _id > ?1 ORDER BY _id LIMIT ?2)",
                ident(table)
            ),
            params![watermark, max_rows as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };
        // Read in the same transaction as the range: columns are added in the transaction that
        // stores their first values, so these are exactly the columns the range's records have.
        let columns = data_columns(conn, table)?;
        if columns.is_empty() {
            bail!("dataset {:?} has no columns to export", key.dataset);
        }
        let plan = make(BatchRange {
            first,
            last,
            rows: rows as u64,
            columns,
        });
        conn.execute(
            "UPDATE exports SET pending_name = ?3, pending_format = ?4, pending_gzip = ?5,
                    pending_first = ?6, pending_last = ?7, pending_rows = ?8,
                    pending_created_at = ?9, pending_columns = ?10
             WHERE dataset = ?1 AND target = ?2",
            params![
                key.dataset,
                key.target,
                plan.name,
                plan.format,
                plan.gzip,
                plan.first,
                plan.last,
                plan.rows as i64,
                plan.created_at,
                serde_json::to_string(&plan.columns)?
            ],
        )?;
        Ok(Some((plan, false)))
    })
}

/// A row of SQLite's, as a `Record`.
struct Row<'a, 'b>(&'a rusqlite::Row<'b>);

impl Record for Row<'_, '_> {
    fn value(&self, i: usize) -> Result<Value<'_>> {
        Ok(match self.0.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(t),
        })
    }
}

/// See `Store::read_batch`.
pub fn read_batch(
    conn: &Connection,
    table: &str,
    plan: &BatchPlan,
    record: &mut dyn FnMut(&dyn Record) -> Result<()>,
) -> Result<u64> {
    let cols: Vec<String> = plan.columns.iter().map(|c| ident(c)).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {} WHERE _id BETWEEN ?1 AND ?2 ORDER BY _id",
        cols.join(", "),
        ident(table)
    ))?;
    let mut rows = stmt.query(params![plan.first, plan.last])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        record(&Row(r))?;
        n += 1;
    }
    Ok(n)
}

/// See `Store::commit_batch`.
pub fn commit_batch(
    conn: &Connection,
    key: &TargetKey,
    plan: &BatchPlan,
    sha256: &str,
    bytes: u64,
) -> Result<()> {
    in_write_txn(conn, || {
        conn.execute(
            "INSERT OR REPLACE INTO export_batches
                 (dataset, target, name, format, first_id, last_id, rows, sha256, bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                key.dataset,
                key.target,
                plan.name,
                plan.format,
                plan.first,
                plan.last,
                plan.rows as i64,
                sha256,
                bytes as i64,
                plan.created_at
            ],
        )?;
        conn.execute(
            "UPDATE exports SET watermark = ?3, batches = batches + 1, rows = rows + ?4,
                    exported_at = ?5, pending_name = NULL, pending_format = NULL,
                    pending_gzip = NULL, pending_first = NULL, pending_last = NULL,
                    pending_rows = NULL, pending_created_at = NULL, pending_columns = NULL
             WHERE dataset = ?1 AND target = ?2",
            params![key.dataset, key.target, plan.last, plan.rows as i64, now()],
        )?;
        Ok(())
    })
}

/// Every export target of the spool, with its pending record count.
pub fn targets(conn: &Connection) -> Result<Vec<TargetStatus>> {
    let mut stmt = conn.prepare(
        "SELECT e.dataset, e.target, e.dir, e.watermark, e.batches, e.rows, e.exported_at,
                e.pending_name, d.table_name
         FROM exports e LEFT JOIN datasets d ON d.name = e.dataset
         ORDER BY e.dataset, e.target",
    )?;
    let rows: Vec<(TargetStatus, Option<String>)> = stmt
        .query_map([], |r| {
            Ok((
                TargetStatus {
                    dataset: r.get(0)?,
                    target: r.get(1)?,
                    dir: r.get(2)?,
                    watermark: r.get(3)?,
                    pending_records: 0,
                    batches: r.get::<_, i64>(4)? as u64,
                    exported_records: r.get::<_, i64>(5)? as u64,
                    last_export: r.get(6)?,
                    interrupted_batch: r.get(7)?,
                },
                r.get(8)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (mut t, table) in rows {
        if let Some(table) = table {
            t.pending_records = conn.query_row(
                &format!("SELECT count(*) FROM {} WHERE _id > ?1", ident(&table)),
                [t.watermark],
                |r| r.get::<_, i64>(0),
            )? as u64;
        }
        out.push(t);
    }
    Ok(out)
}
