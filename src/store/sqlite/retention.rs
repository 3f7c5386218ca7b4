//! Retention in SQLite: which files `ferry prune` may remove, which ledger rows it may forget,
//! quarantined files given up on, and recent activity for the status page. Ledger times are
//! RFC 3339 text in UTC with milliseconds, so they compare as text.

use super::ledger::{file_row, FILE_COLUMNS, LATEST};
use crate::store::{Area, FileRow, QuarantineCounts};
use anyhow::Result;
use rusqlite::Connection;
use std::collections::BTreeMap;

pub fn candidates(
    conn: &Connection,
    area: Area,
    before: &str,
    after: i64,
    limit: u64,
) -> Result<Vec<FileRow>> {
    let which = match area {
        Area::Archive => "state IN ('ingested', 'duplicate')".to_string(),
        Area::Quarantine => format!("state = 'quarantined' AND {LATEST}"),
    };
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE {which} AND stored_at IS NOT NULL \
         AND pruned_at IS NULL AND finished_at < ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map((before, after, limit as i64), file_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn mark_pruned(conn: &Connection, id: i64, at: &str) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE files SET pruned_at = ?2 WHERE id = ?1 AND pruned_at IS NULL",
        (id, at),
    )? == 1)
}

pub fn forgettable(conn: &Connection, before: &str, pruned_now: &[i64]) -> Result<Vec<i64>> {
    let pruned_now = serde_json::to_string(pruned_now)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT id FROM files WHERE state <> 'ingested' AND finished_at < ?1 \
         AND (pruned_at IS NOT NULL OR stored_at IS NULL \
              OR id IN (SELECT value FROM json_each(?2))) AND {LATEST} \
         AND NOT EXISTS (SELECT 1 FROM files d WHERE d.duplicate_of = files.id) ORDER BY id"
    ))?;
    let ids = stmt
        .query_map((before, pruned_now), |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// A row and its earlier attempts (following `retry_of` back).
const CHAIN: &str = "WITH RECURSIVE chain(id, retry_of) AS ( \
     SELECT id, retry_of FROM files WHERE id = ?1 \
     UNION ALL SELECT f.id, f.retry_of FROM files f JOIN chain c ON f.id = c.retry_of)";

pub fn forget(conn: &mut Connection, id: i64, dry_run: bool) -> Result<u64> {
    let tx = conn.transaction()?;
    let n: i64 = tx.query_row(&format!("{CHAIN} SELECT count(*) FROM chain"), [id], |r| {
        r.get(0)
    })?;
    if !dry_run {
        tx.execute(
            &format!("{CHAIN} DELETE FROM rejects WHERE file_id IN (SELECT id FROM chain)"),
            [id],
        )?;
        tx.execute(
            &format!("{CHAIN} DELETE FROM files WHERE id IN (SELECT id FROM chain)"),
            [id],
        )?;
        tx.commit()?;
    }
    Ok(n as u64)
}

pub fn discard(conn: &Connection, id: i64, reason: &str, at: &str) -> Result<bool> {
    Ok(conn.execute(
        &format!(
            "UPDATE files SET discarded_at = ?3, discard_reason = ?2 WHERE id = ?1 \
             AND state = 'quarantined' AND discarded_at IS NULL AND pruned_at IS NULL AND {LATEST}"
        ),
        (id, reason, at),
    )? == 1)
}

pub fn quarantine_counts(conn: &Connection) -> Result<QuarantineCounts> {
    Ok(conn.query_row(
        &format!(
            "SELECT coalesce(sum(discarded_at IS NULL AND pruned_at IS NULL), 0), \
                    coalesce(sum(discarded_at IS NOT NULL), 0), \
                    coalesce(sum(discarded_at IS NULL AND pruned_at IS NOT NULL), 0) \
             FROM files WHERE state = 'quarantined' AND {LATEST}"
        ),
        [],
        |r| {
            Ok(QuarantineCounts {
                open: r.get::<_, i64>(0)? as u64,
                discarded: r.get::<_, i64>(1)? as u64,
                pruned: r.get::<_, i64>(2)? as u64,
            })
        },
    )?)
}

pub fn activity_since(conn: &Connection, since: &str) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT dataset, count(*), sum(CASE WHEN state = 'ingested' THEN records ELSE 0 END) \
         FROM files WHERE finished_at >= ?1 AND dataset IS NOT NULL GROUP BY dataset",
    )?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
            ))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

pub fn last_success(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT dataset, max(finished_at) FROM files \
         WHERE state = 'ingested' AND dataset IS NOT NULL GROUP BY dataset",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
