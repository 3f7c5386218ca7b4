//! Retention in PostgreSQL (see the SQLite store's `retention`): times are `timestamptz`, and
//! ledger text from the caller is cast to it.

use super::ledger::{file_columns, file_row, LATEST};
use crate::store::{Area, FileRow, QuarantineCounts};
use anyhow::Result;
use postgres::Client;
use std::collections::BTreeMap;

pub fn candidates(
    c: &mut Client,
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
        "SELECT {} FROM files WHERE {which} AND stored_at IS NOT NULL AND pruned_at IS NULL \
         AND finished_at < $1::text::timestamptz AND id > $2 ORDER BY id LIMIT $3",
        file_columns()
    );
    c.query(&sql, &[&before, &after, &(limit as i64)])?
        .iter()
        .map(file_row)
        .collect()
}

pub fn mark_pruned(c: &mut Client, id: i64, at: &str) -> Result<bool> {
    Ok(c.execute(
        "UPDATE files SET pruned_at = $2::text::timestamptz WHERE id = $1 AND pruned_at IS NULL",
        &[&id, &at],
    )? == 1)
}

pub fn forgettable(c: &mut Client, before: &str, pruned_now: &[i64]) -> Result<Vec<i64>> {
    Ok(c.query(
        &format!(
            "SELECT id FROM files WHERE state <> 'ingested' \
             AND finished_at < $1::text::timestamptz \
             AND (pruned_at IS NOT NULL OR stored_at IS NULL OR id = ANY($2)) AND {LATEST} \
             AND NOT EXISTS (SELECT 1 FROM files d WHERE d.duplicate_of = files.id) ORDER BY id"
        ),
        &[&before, &pruned_now],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// A row and its earlier attempts (following `retry_of` back).
const CHAIN: &str = "WITH RECURSIVE chain(id, retry_of) AS ( \
     SELECT id, retry_of FROM files WHERE id = $1 \
     UNION ALL SELECT f.id, f.retry_of FROM files f JOIN chain c ON f.id = c.retry_of)";

pub fn forget(c: &mut Client, id: i64, dry_run: bool) -> Result<u64> {
    let mut tx = c.transaction()?;
    let n: i64 = tx
        .query_one(&format!("{CHAIN} SELECT count(*) FROM chain"), &[&id])?
        .get(0);
    if !dry_run {
        tx.execute(
            &format!("{CHAIN} DELETE FROM rejects WHERE file_id IN (SELECT id FROM chain)"),
            &[&id],
        )?;
        tx.execute(
            &format!("{CHAIN} DELETE FROM files WHERE id IN (SELECT id FROM chain)"),
            &[&id],
        )?;
        tx.commit()?;
    }
    Ok(n as u64)
}

pub fn discard(c: &mut Client, id: i64, reason: &str, at: &str) -> Result<bool> {
    Ok(c.execute(
        &format!(
            "UPDATE files SET discarded_at = $3::text::timestamptz, discard_reason = $2 \
             WHERE id = $1 AND state = 'quarantined' AND discarded_at IS NULL \
             AND pruned_at IS NULL AND {LATEST}"
        ),
        &[&id, &reason, &at],
    )? == 1)
}

pub fn quarantine_counts(c: &mut Client) -> Result<QuarantineCounts> {
    let r = c.query_one(
        &format!(
            "SELECT count(*) FILTER (WHERE discarded_at IS NULL AND pruned_at IS NULL), \
                    count(*) FILTER (WHERE discarded_at IS NOT NULL), \
                    count(*) FILTER (WHERE discarded_at IS NULL AND pruned_at IS NOT NULL) \
             FROM files WHERE state = 'quarantined' AND {LATEST}"
        ),
        &[],
    )?;
    Ok(QuarantineCounts {
        open: r.get::<_, i64>(0) as u64,
        discarded: r.get::<_, i64>(1) as u64,
        pruned: r.get::<_, i64>(2) as u64,
    })
}

pub fn activity_since(c: &mut Client, since: &str) -> Result<BTreeMap<String, (u64, u64)>> {
    Ok(c.query(
        "SELECT dataset, count(*), \
                coalesce(sum(records) FILTER (WHERE state = 'ingested'), 0)::bigint \
         FROM files WHERE finished_at >= $1::text::timestamptz AND dataset IS NOT NULL \
         GROUP BY dataset",
        &[&since],
    )?
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64),
        )
    })
    .collect())
}

pub fn last_success(c: &mut Client) -> Result<Vec<(String, String)>> {
    Ok(c.query(
        "SELECT dataset, to_char(max(finished_at) AT TIME ZONE 'UTC', \
                'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
         FROM files WHERE state = 'ingested' AND dataset IS NOT NULL GROUP BY dataset",
        &[],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}
