//! Re-keying a table in PostgreSQL (`store::keys::rekey` over its tables), what a table needs
//! before keyed records are stored (`key_ready`), and the key indexes for `ferry status`.

use super::binary::{self, Decoded, PgType};
use super::keys::{Conn, Runs};
use super::session::Session;
use super::tables::{delete_ids, ident, index_ids};
use crate::store::keys::def::{KeyDef, KeyValue};
use crate::store::keys::rekey::{RekeyStore, Rekeyed};
use crate::store::keys::RunStore;
use crate::store::KeyReady;
use anyhow::{Context, Result};
use postgres::Client;

/// A stored key value as the workers' cells would hold it (dates, datetimes and numerics as
/// their canonical text).
fn key_value(raw: Option<(usize, usize)>, buf: &[u8], d: &Option<Decoded>) -> KeyValue {
    match (raw, d) {
        (None, _) | (_, None) => KeyValue::Null,
        (Some((s, e)), Some(Decoded::Borrowed)) => {
            KeyValue::Text(String::from_utf8_lossy(&buf[s..e]).into())
        }
        (_, Some(Decoded::Owned(t))) => KeyValue::Text(t.clone()),
        (_, Some(Decoded::Int(i))) => KeyValue::Int(*i),
        (_, Some(Decoded::Real(x))) => KeyValue::Real(*x),
    }
}

impl Runs<'_> {
    /// Reads `_id`, then the key's columns and the version, of the records `filter` picks, as
    /// the workers' cells would hold them.
    fn read_keys(
        &mut self,
        table: &str,
        cols: &[&str],
        filter: &str,
        each: &mut dyn FnMut(i64, Option<i64>, Vec<KeyValue>, KeyValue) -> Result<()>,
    ) -> Result<()> {
        let info = super::tables::describe(self.c()?, table)?
            .with_context(|| format!("table {table} does not exist"))?;
        let mut types = vec![PgType::Int8, PgType::Int8];
        let mut select = vec!["_id".to_string(), "_key".to_string()];
        for c in cols {
            match info.ty(c) {
                Some(t) => {
                    types.push(t);
                    select.push(ident(c));
                }
                None => {
                    types.push(PgType::Text);
                    select.push("NULL::text".into());
                }
            }
        }
        let key_len = cols.len() - 1;
        let reader = self.c()?.copy_out(&format!(
            "COPY (SELECT {} FROM {} WHERE {filter}) TO STDOUT (FORMAT binary)",
            select.join(", "),
            ident(table)
        ))?;
        binary::read_rows(reader, &types, &mut |raw, buf, decoded| {
            let int = |i: usize| match decoded[i] {
                Some(Decoded::Int(v)) if raw[i].is_some() => Some(v),
                _ => None,
            };
            let id = int(0).context("a record without an id")?;
            let vals = (2..2 + key_len)
                .map(|i| key_value(raw[i], buf, &decoded[i]))
                .collect();
            let v = key_value(raw[2 + key_len], buf, &decoded[2 + key_len]);
            each(id, int(1), vals, v)
        })?;
        Ok(())
    }
}

impl RekeyStore for Runs<'_> {
    fn scan(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        each: &mut dyn FnMut(i64, Option<i64>, Vec<KeyValue>, KeyValue) -> Result<()>,
    ) -> Result<()> {
        let mut cols: Vec<&str> = key.iter().map(String::as_str).collect();
        cols.push(version.unwrap_or(""));
        self.read_keys(table, &cols, "true", each)
    }

    fn values(
        &mut self,
        table: &str,
        key: &[String],
        version: Option<&str>,
        ids: &[i64],
    ) -> Result<Vec<(i64, Vec<KeyValue>, KeyValue)>> {
        let mut cols: Vec<&str> = key.iter().map(String::as_str).collect();
        cols.push(version.unwrap_or(""));
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let mut out = Vec::new();
        self.read_keys(
            table,
            &cols,
            &format!("_id IN ({})", list.join(",")),
            &mut |id, _, vals, v| {
                out.push((id, vals, v));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn set_hashes(&mut self, table: &str, changes: &[(i64, i64)]) -> Result<()> {
        let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
        let hashes: Vec<i64> = changes.iter().map(|c| c.1).collect();
        self.c()?.execute(
            &format!(
                "UPDATE {} t SET _key = c.h FROM unnest($1::int8[], $2::int8[]) AS c(id, h) \
                 WHERE t._id = c.id",
                ident(table)
            ),
            &[&ids, &hashes],
        )?;
        Ok(())
    }

    fn delete_records(&mut self, table: &str, ids: &[i64]) -> Result<()> {
        delete_ids(self.c()?, table, ids)?;
        Ok(())
    }

    fn coordinate_now(&mut self, table: &str) -> Result<i64> {
        Ok(self
            .c()?
            .query_opt(
                "SELECT epoch FROM ferry_keys WHERE table_name = $1",
                &[&table],
            )?
            .map_or(0, |r| r.get(0)))
    }

    fn record_definition(&mut self, table: &str, def: Option<&str>, covered: i64) -> Result<()> {
        record_definition(self.c()?, table, def, covered)
    }
}

/// Records a table's key definition as a new generation of its index, its runs covering up to
/// epoch `covered`.
fn record_definition(c: &mut Client, table: &str, def: Option<&str>, covered: i64) -> Result<()> {
    c.execute(
        "INSERT INTO ferry_keys (table_name, epoch, covered, definition, defined_at, generation) \
         VALUES ($1, $2, $2, $3, now(), 1) \
         ON CONFLICT (table_name) DO UPDATE SET covered = $2, definition = $3, \
         defined_at = now(), generation = ferry_keys.generation + 1",
        &[&table, &covered, &def],
    )?;
    c.execute(
        "DELETE FROM ferry_key_log WHERE table_name = $1 AND epoch <= $2",
        &[&table, &covered],
    )?;
    Ok(())
}

/// What a table needs before records are stored with `def` (see `Ingest::key_ready`).
pub fn key_ready(c: &mut Client, table: &str, def: Option<&KeyDef>) -> Result<KeyReady> {
    let recorded: Option<String> = c
        .query_opt(
            "SELECT definition FROM ferry_keys WHERE table_name = $1",
            &[&table],
        )?
        .and_then(|r| r.get(0));
    let old = recorded.as_deref().and_then(KeyDef::parse);
    match def {
        Some(d) if old.as_ref().is_some_and(|o| o.same(d)) => Ok(KeyReady::Ready),
        Some(d) => {
            let rows: bool = c
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", ident(table)),
                    &[],
                )?
                .get(0);
            if rows {
                return Ok(KeyReady::Rekey { from: old });
            }
            drop_all_runs(c, table)?;
            let epoch = Runs::of(c).coordinate_now(table)?;
            record_definition(c, table, Some(&d.json()), epoch)?;
            Ok(KeyReady::Ready)
        }
        None if recorded.is_some() => {
            drop_all_runs(c, table)?;
            let epoch = Runs::of(c).coordinate_now(table)?;
            record_definition(c, table, None, epoch)?;
            tracing::info!(
                table,
                "the dataset has no record key any more; its key index is dropped"
            );
            Ok(KeyReady::Ready)
        }
        None => Ok(KeyReady::Ready),
    }
}

fn drop_all_runs(c: &mut Client, table: &str) -> Result<()> {
    let mut runs = Runs::of(c);
    let old: Vec<i64> = runs.runs(table)?.runs.iter().map(|r| r.id).collect();
    runs.drop_runs(table, &old)
}

/// Takes a table's key row for a re-key (no keyed writer of it on any host meanwhile) and
/// re-keys its records.
pub fn rekey(
    session: &mut Session,
    table: &str,
    how: &crate::store::Rekey,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Rekeyed>> {
    let c = session.get()?;
    c.query_one(
        "INSERT INTO ferry_keys (table_name, epoch) VALUES ($1, 1) \
         ON CONFLICT (table_name) DO UPDATE SET epoch = ferry_keys.epoch + 1 RETURNING epoch",
        &[&table],
    )
    .with_context(|| format!("taking the record key lock of {table}"))?;
    c.batch_execute(&format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS _key bigint",
        ident(table)
    ))?;
    index_ids(c, table)?;
    crate::store::keys::rekey::rekey(&mut Runs(Conn::Session(session)), table, how, stop)
}

/// Every keyed table's index, for `ferry status`.
pub fn key_indexes(c: &mut Client) -> Result<Vec<crate::store::KeyIndexStatus>> {
    let rows = c.query(
        "SELECT k.table_name, k.definition, to_char(k.defined_at AT TIME ZONE 'UTC', \
                'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                (SELECT count(*) FROM ferry_key_runs r WHERE r.table_name = k.table_name), \
                (SELECT coalesce(sum(r.entries), 0)::bigint FROM ferry_key_runs r \
                  WHERE r.table_name = k.table_name), \
                (SELECT coalesce(sum(l.last_id - l.first_id + 1), 0)::bigint FROM ferry_key_log l \
                  WHERE l.table_name = k.table_name AND l.epoch > k.covered) \
         FROM ferry_keys k WHERE k.definition IS NOT NULL ORDER BY k.table_name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let def: String = r.get(1);
            crate::store::KeyIndexStatus {
                table: r.get(0),
                key: KeyDef::parse(&def).map_or(def.clone(), |d| d.describe()),
                defined_at: r.get::<_, Option<String>>(2).unwrap_or_default(),
                runs: r.get::<_, i64>(3) as u64,
                indexed: r.get::<_, i64>(4) as u64,
                tail: r.get::<_, i64>(5) as u64,
            }
        })
        .collect())
}
