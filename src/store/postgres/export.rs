//! Export state in PostgreSQL (`exports`, `export_batches`) and reading a batch's records.
//!
//! The protocol is `crate::export`'s and the tables are the SQLite store's. What differs is
//! which ids are safe to export: with several hosts committing concurrently, an id below the
//! watermark could still appear, so a batch only ever reaches below the export horizon (see
//! `ids`): every id under it is final, committed or never to be.

use super::binary::{self, Decoded, PgType};
use super::ids;
use super::tables::{describe, ident};
use crate::format::SYSTEM_COLUMNS;
use crate::store::{BatchPlan, BatchRange, Record, TargetKey, TargetStatus, Value};
use anyhow::{bail, Context, Result};
use postgres::{Client, IsolationLevel};

pub fn upsert_target(c: &mut Client, key: &TargetKey, dir: &str) -> Result<()> {
    c.execute(
        "INSERT INTO exports (dataset, target, dir, created_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (dataset, target) DO UPDATE SET dir = excluded.dir",
        &[&key.dataset, &key.target, &dir],
    )?;
    Ok(())
}

pub fn target_dirs(c: &mut Client, dataset: &str) -> Result<Vec<(String, String)>> {
    Ok(c.query(
        "SELECT target, dir FROM exports WHERE dataset = $1",
        &[&dataset],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

pub fn watermark(c: &mut Client, key: &TargetKey) -> Result<i64> {
    Ok(c.query_one(
        "SELECT watermark FROM exports WHERE dataset = $1 AND target = $2",
        &[&key.dataset, &key.target],
    )?
    .get(0))
}

/// The partner's columns of a table, in table order.
fn data_columns(c: &mut postgres::Transaction<'_>, table: &str) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT a.attname::text FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid \
         WHERE r.relname = $1 AND r.relnamespace = current_schema()::regnamespace \
           AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[&table],
    )?
    .iter()
    .map(|r| r.get::<_, String>(0))
    .filter(|c| !SYSTEM_COLUMNS.contains(&c.as_str()))
    .collect())
}

/// See `Store::plan_batch`.
pub fn plan_batch(
    c: &mut Client,
    key: &TargetKey,
    table: &str,
    max_rows: u64,
    make: &mut dyn FnMut(BatchRange) -> BatchPlan,
) -> Result<Option<(BatchPlan, bool)>> {
    let horizon = ids::horizon(c)?;
    // One snapshot for the range and the columns: these are the columns its records have.
    let mut tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()?;
    let r = tx.query_one(
        "SELECT watermark, pending_name, pending_format, pending_gzip, pending_first, \
                pending_last, pending_rows, pending_created_at, pending_columns::text \
         FROM exports WHERE dataset = $1 AND target = $2 FOR UPDATE",
        &[&key.dataset, &key.target],
    )?;
    let watermark: i64 = r.get(0);
    if let Some(name) = r.get::<_, Option<String>>(1) {
        let plan = BatchPlan {
            name,
            format: r.get(2),
            gzip: r.get(3),
            first: r.get(4),
            last: r.get(5),
            rows: r.get::<_, i64>(6) as u64,
            created_at: r.get(7),
            columns: serde_json::from_str(&r.get::<_, String>(8))?,
        };
        tx.commit()?;
        return Ok(Some((plan, true)));
    }
    let r = tx.query_one(
        &format!(
            "SELECT count(*), min(_id), max(_id) FROM \
             (SELECT _id FROM {} WHERE _id > $1 AND _id < $2 ORDER BY _id LIMIT $3) s",
            ident(table)
        ),
        &[&watermark, &horizon, &(max_rows as i64)],
    )?;
    let (rows, first, last): (i64, Option<i64>, Option<i64>) = (r.get(0), r.get(1), r.get(2));
    let (Some(first), Some(last)) = (first, last) else {
        tx.commit()?;
        return Ok(None);
    };
    let columns = data_columns(&mut tx, table)?;
    if columns.is_empty() {
        bail!("dataset {:?} has no columns to export", key.dataset);
    }
    let plan = make(BatchRange {
        first,
        last,
        rows: rows as u64,
        columns,
    });
    tx.execute(
        "UPDATE exports SET pending_name = $3, pending_format = $4, pending_gzip = $5, \
                pending_first = $6, pending_last = $7, pending_rows = $8, \
                pending_created_at = $9, pending_columns = $10::text::jsonb \
         WHERE dataset = $1 AND target = $2",
        &[
            &key.dataset,
            &key.target,
            &plan.name,
            &plan.format,
            &plan.gzip,
            &plan.first,
            &plan.last,
            &(plan.rows as i64),
            &plan.created_at,
            &serde_json::to_string(&plan.columns)?,
        ],
    )?;
    tx.commit()?;
    Ok(Some((plan, false)))
}

/// One row of a binary COPY, as a `Record`.
pub struct Row<'a> {
    raw: &'a [Option<(usize, usize)>],
    buf: &'a [u8],
    decoded: &'a [Option<Decoded>],
}

impl Record for Row<'_> {
    fn value(&self, i: usize) -> Result<Value<'_>> {
        match (self.raw[i], &self.decoded[i]) {
            (None, _) => Ok(Value::Null),
            (Some((s, e)), Some(d)) => Ok(binary::value(d, &self.buf[s..e])),
            (Some(_), None) => bail!("a stored value could not be read"),
        }
    }
}

/// See `Store::read_batch`: the records come as a binary `COPY … TO STDOUT`.
pub fn read_batch(
    c: &mut Client,
    table: &str,
    plan: &BatchPlan,
    record: &mut dyn FnMut(&dyn Record) -> Result<()>,
) -> Result<u64> {
    let info = describe(c, table)?.with_context(|| format!("table {table} is missing"))?;
    let types: Vec<PgType> = plan
        .columns
        .iter()
        .map(|col| {
            info.columns
                .iter()
                .find(|(n, _)| n == col)
                .and_then(|(_, t)| *t)
                .with_context(|| {
                    format!("column {col} of {table} is missing or of a type ferry cannot read")
                })
        })
        .collect::<Result<_>>()?;
    let cols: Vec<String> = plan.columns.iter().map(|c| ident(c)).collect();
    let reader = c.copy_out(&format!(
        "COPY (SELECT {} FROM {} WHERE _id BETWEEN {} AND {} ORDER BY _id) TO STDOUT \
         (FORMAT binary)",
        cols.join(", "),
        ident(table),
        plan.first,
        plan.last
    ))?;
    binary::read_rows(reader, &types, &mut |raw, buf, decoded| {
        record(&Row { raw, buf, decoded })
    })
}

/// See `Store::commit_batch`.
pub fn commit_batch(
    c: &mut Client,
    key: &TargetKey,
    plan: &BatchPlan,
    sha256: &str,
    bytes: u64,
) -> Result<()> {
    let mut tx = c.transaction()?;
    tx.execute(
        "INSERT INTO export_batches \
             (dataset, target, name, format, first_id, last_id, rows, sha256, bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (dataset, target, first_id) DO UPDATE SET name = excluded.name, \
             format = excluded.format, last_id = excluded.last_id, rows = excluded.rows, \
             sha256 = excluded.sha256, bytes = excluded.bytes, created_at = excluded.created_at",
        &[
            &key.dataset,
            &key.target,
            &plan.name,
            &plan.format,
            &plan.first,
            &plan.last,
            &(plan.rows as i64),
            &sha256,
            &(bytes as i64),
            &plan.created_at,
        ],
    )?;
    tx.execute(
        "UPDATE exports SET watermark = $3, batches = batches + 1, rows = rows + $4, \
                exported_at = now(), pending_name = NULL, pending_format = NULL, \
                pending_gzip = NULL, pending_first = NULL, pending_last = NULL, \
                pending_rows = NULL, pending_created_at = NULL, pending_columns = NULL \
         WHERE dataset = $1 AND target = $2",
        &[&key.dataset, &key.target, &plan.last, &(plan.rows as i64)],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn targets(c: &mut Client) -> Result<Vec<TargetStatus>> {
    let rows = c.query(
        "SELECT e.dataset, e.target, e.dir, e.watermark, e.batches, e.rows, \
                to_char(e.exported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                e.pending_name, d.table_name \
         FROM exports e LEFT JOIN datasets d ON d.name = e.dataset \
         ORDER BY e.dataset COLLATE \"C\", e.target COLLATE \"C\"",
        &[],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut t = TargetStatus {
            dataset: r.get(0),
            target: r.get(1),
            dir: r.get(2),
            watermark: r.get(3),
            pending_records: 0,
            batches: r.get::<_, i64>(4) as u64,
            exported_records: r.get::<_, i64>(5) as u64,
            last_export: r.get(6),
            interrupted_batch: r.get(7),
        };
        if let Some(table) = r.get::<_, Option<String>>(8) {
            t.pending_records = c
                .query_one(
                    &format!("SELECT count(*) FROM {} WHERE _id > $1", ident(&table)),
                    &[&t.watermark],
                )?
                .get::<_, i64>(0) as u64;
        }
        out.push(t);
    }
    Ok(out)
}
