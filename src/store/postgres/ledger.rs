//! The ledger in PostgreSQL: `files` (one row per file and attempt) and `rejects`. Times are
//! `timestamptz` in the database and read back as the same RFC 3339 text the SQLite store
//! keeps, so reports are the same whichever store holds them. The caller owns transactions.

use crate::reject::{Kind, RecordReject};
use crate::store::{DatasetCounts, FileFilter, FileRow, FileState, FileUpdate, NewFile};
use anyhow::{Context, Result};
use postgres::types::ToSql;
use postgres::{Client, Row};
use std::collections::BTreeMap;

/// A `timestamptz` column as ferry's ledger text (UTC, milliseconds).
fn ts(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

pub(super) fn file_columns() -> String {
    format!(
        "id, path, source, claim, sha256, size, state, dataset, format, records, rejected, \
         duplicate_of, stored_at, error_kind, error_stage, error_message, error_line, \
         error_offset, error_field, attempt, retry_of, {}, {}, {}, {}, duplicate_records, \
         rejects_at, warnings::text, {}, {}, discard_reason, updated_records, remote_source, \
         remote_path, remote_version, container_id, signer",
        ts("received_at"),
        ts("hashed_at"),
        ts("parsed_at"),
        ts("finished_at"),
        ts("pruned_at"),
        ts("discarded_at"),
    )
}

/// Rows that are a file's latest attempt (see the SQLite ledger).
pub(super) const LATEST: &str = "NOT EXISTS (SELECT 1 FROM files r WHERE r.retry_of = files.id)";

pub(super) fn file_row(r: &Row) -> Result<FileRow> {
    let state: String = r.get(6);
    Ok(FileRow {
        id: r.get(0),
        path: r.get(1),
        source: r.get(2),
        claim: r.get(3),
        sha256: r.get(4),
        size: r.get(5),
        state: FileState::from_id(&state)
            .with_context(|| format!("unknown file state {state:?}"))?,
        dataset: r.get(7),
        format: r.get(8),
        records: r.get(9),
        rejected: r.get(10),
        duplicate_of: r.get(11),
        stored_at: r.get(12),
        error_kind: r.get(13),
        error_stage: r.get(14),
        error_message: r.get(15),
        error_line: r.get(16),
        error_offset: r.get(17),
        error_field: r.get(18),
        attempt: r.get::<_, i32>(19) as i64,
        retry_of: r.get(20),
        received_at: r.get(21),
        hashed_at: r.get(22),
        parsed_at: r.get(23),
        finished_at: r.get(24),
        duplicate_records: r.get(25),
        rejects_at: r.get(26),
        warnings: r
            .get::<_, Option<String>>(27)
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
        pruned_at: r.get(28),
        discarded_at: r.get(29),
        discard_reason: r.get(30),
        updated_records: r.get(31),
        remote_source: r.get(32),
        remote_path: r.get(33),
        remote_version: r.get(34),
        container_id: r.get(35),
        signer: r.get(36),
    })
}

pub fn insert(c: &mut Client, f: &NewFile<'_>) -> Result<i64> {
    let e = f.error;
    let size = f.size as i64;
    let attempt = f.attempt as i32;
    let (kind, stage) = (e.map(|e| e.kind.id()), e.map(|e| e.stage.id()));
    let message = e.map(|e| e.message.as_str());
    let line = e.and_then(|e| e.line).map(|v| v as i64);
    let offset = e.and_then(|e| e.offset).map(|v| v as i64);
    let field = e.and_then(|e| e.field.as_deref());
    let rejected = f.rejected as i64;
    let (remote_source, remote_path, remote_version) = (
        f.remote.map(|r| r.source.as_str()),
        f.remote.map(|r| r.path.as_str()),
        f.remote.map(|r| r.version.as_str()),
    );
    let params: [&(dyn ToSql + Sync); 25] = [
        &f.path,
        &f.source,
        &f.claim,
        &f.sha256,
        &size,
        &f.state.id(),
        &f.dataset,
        &f.format,
        &f.duplicate_of,
        &kind,
        &stage,
        &message,
        &line,
        &offset,
        &field,
        &attempt,
        &f.retry_of,
        &f.received_at,
        &f.hashed_at,
        &f.finished_at,
        &f.worker,
        &rejected,
        &remote_source,
        &remote_path,
        &remote_version,
    ];
    let row = c.query_one(
        "INSERT INTO files (path, source, claim, sha256, size, state, dataset, format, \
         duplicate_of, error_kind, error_stage, error_message, error_line, error_offset, \
         error_field, attempt, retry_of, received_at, hashed_at, finished_at, worker, rejected, \
         remote_source, remote_path, remote_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18::text::timestamptz, $19::text::timestamptz, $20::text::timestamptz, $21, $22, $23, \
         $24, $25) RETURNING id",
        &params,
    )?;
    Ok(row.get(0))
}

pub fn update(c: &mut Client, id: i64, u: &FileUpdate<'_>) -> Result<()> {
    match u {
        FileUpdate::Parsed {
            counts,
            format,
            warnings,
            parsed_at,
        } => {
            let warnings = (!warnings.is_empty())
                .then(|| serde_json::to_string(warnings))
                .transpose()?;
            c.execute(
                "UPDATE files SET records = $2, rejected = $3, duplicate_records = $4, \
                 format = $5, warnings = $6::text::jsonb, parsed_at = $7::text::timestamptz, \
                 updated_records = $8 WHERE id = $1",
                &[
                    &id,
                    &(counts.stored as i64),
                    &(counts.rejected as i64),
                    &(counts.duplicates as i64),
                    format,
                    &warnings,
                    parsed_at,
                    &(counts.updated as i64),
                ],
            )?;
        }
        FileUpdate::StoredAt(at) => {
            c.execute("UPDATE files SET stored_at = $2 WHERE id = $1", &[&id, at])?;
        }
        FileUpdate::Identity { sha256, size } => {
            c.execute(
                "UPDATE files SET sha256 = $2, size = $3 WHERE id = $1",
                &[&id, sha256, &(*size as i64)],
            )?;
        }
        FileUpdate::MemberOf(container) => {
            c.execute(
                "UPDATE files SET container_id = $2 WHERE id = $1",
                &[&id, container],
            )?;
        }
        FileUpdate::Signer(fp) => {
            c.execute("UPDATE files SET signer = $2 WHERE id = $1", &[&id, fp])?;
        }
        FileUpdate::RejectsAt(at) => {
            c.execute("UPDATE files SET rejects_at = $2 WHERE id = $1", &[&id, at])?;
        }
    }
    Ok(())
}

/// Whether this exact file (same relative path, same content) is already in the ledger.
pub fn seen(c: &mut Client, path: &str, sha256: Option<&str>) -> Result<bool> {
    Ok(c.query_opt(
        "SELECT 1 FROM files WHERE path = $1 AND sha256 IS NOT DISTINCT FROM $2 LIMIT 1",
        &[&path, &sha256],
    )?
    .is_some())
}

/// The ledger id of the file of this dataset ingested with this content, if any.
pub fn ingested_with(c: &mut Client, dataset: &str, sha256: &str) -> Result<Option<i64>> {
    Ok(c.query_opt(
        "SELECT id FROM files WHERE dataset = $1 AND sha256 = $2 AND state = 'ingested'",
        &[&dataset, &sha256],
    )?
    .map(|r| r.get(0)))
}

pub fn place_taken(c: &mut Client, rel: &str) -> Result<bool> {
    Ok(c.query_opt(
        "SELECT 1 FROM files WHERE stored_at = $1 UNION ALL \
         SELECT 1 FROM files WHERE rejects_at = $1 LIMIT 1",
        &[&rel],
    )?
    .is_some())
}

pub fn add_rejects(c: &mut Client, file_id: i64, rejects: &[RecordReject]) -> Result<()> {
    if rejects.is_empty() {
        return Ok(());
    }
    let stmt = c.prepare(
        "INSERT INTO rejects (file_id, line, field, value, reason, kind) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )?;
    for r in rejects {
        c.execute(
            &stmt,
            &[
                &file_id,
                &(r.line as i64),
                &r.field,
                &r.value,
                &r.reason,
                &r.kind.id(),
            ],
        )?;
    }
    Ok(())
}

pub fn rejects(c: &mut Client, file_id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
    let limit = limit.map_or(i64::MAX, |l| l as i64);
    let rows = c.query(
        "SELECT line, field, value, reason, kind FROM rejects WHERE file_id = $1 \
         ORDER BY id LIMIT $2",
        &[&file_id, &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| RecordReject {
            kind: r
                .get::<_, Option<String>>(4)
                .and_then(|k| Kind::from_id(&k))
                .unwrap_or(Kind::RecordInvalid),
            line: r.get::<_, Option<i64>>(0).unwrap_or(0) as u64,
            field: r.get(1),
            value: r.get(2),
            reason: r.get(3),
        })
        .collect())
}

pub fn retried_by(c: &mut Client, id: i64) -> Result<Option<i64>> {
    Ok(c.query_opt(
        "SELECT id FROM files WHERE retry_of = $1 ORDER BY id LIMIT 1",
        &[&id],
    )?
    .map(|r| r.get(0)))
}

pub fn by_claim(c: &mut Client, claim: &str) -> Result<Option<FileRow>> {
    c.query_opt(
        &format!("SELECT {} FROM files WHERE claim = $1", file_columns()),
        &[&claim],
    )?
    .map(|r| file_row(&r))
    .transpose()
}

pub fn get(c: &mut Client, id: i64) -> Result<Option<FileRow>> {
    c.query_opt(
        &format!("SELECT {} FROM files WHERE id = $1", file_columns()),
        &[&id],
    )?
    .map(|r| file_row(&r))
    .transpose()
}

pub fn files(c: &mut Client, filter: &FileFilter) -> Result<Vec<FileRow>> {
    let mut sql = format!("SELECT {} FROM files WHERE true", file_columns());
    let state = filter.state.map(|s| s.id());
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(s) = &state {
        params.push(s);
        sql.push_str(&format!(" AND state = ${}", params.len()));
    }
    if let Some(d) = &filter.dataset {
        params.push(d);
        sql.push_str(&format!(" AND dataset = ${}", params.len()));
    }
    if filter.latest {
        sql.push_str(" AND ");
        sql.push_str(LATEST);
    }
    if filter.open {
        sql.push_str(" AND discarded_at IS NULL AND pruned_at IS NULL");
    }
    if let Some(t) = &filter.since {
        params.push(t);
        sql.push_str(&format!(
            " AND finished_at >= ${}::text::timestamptz",
            params.len()
        ));
    }
    sql.push_str(" ORDER BY id");
    if let Some(l) = filter.limit {
        sql = format!("SELECT * FROM ({sql} DESC LIMIT {l}) newest ORDER BY id");
    }
    c.query(&sql, &params)?.iter().map(file_row).collect()
}

pub fn state_counts(c: &mut Client) -> Result<BTreeMap<FileState, u64>> {
    let mut out: BTreeMap<FileState, u64> = FileState::ALL.iter().map(|s| (*s, 0)).collect();
    for r in c.query(
        &format!("SELECT state, count(*) FROM files WHERE {LATEST} GROUP BY state"),
        &[],
    )? {
        if let Some(s) = FileState::from_id(r.get(0)) {
            out.insert(s, r.get::<_, i64>(1) as u64);
        }
    }
    Ok(out)
}

pub fn dataset_counts(c: &mut Client) -> Result<Vec<DatasetCounts>> {
    let sql = format!(
        "SELECT f.dataset, d.table_name, \
                count(*) FILTER (WHERE f.state = 'ingested'), \
                coalesce(sum(f.records) FILTER (WHERE f.state = 'ingested'), 0)::bigint, \
                coalesce(sum(f.rejected) FILTER (WHERE f.state = 'ingested'), 0)::bigint, \
                coalesce(sum(f.duplicate_records) FILTER (WHERE f.state = 'ingested'), 0)::bigint, \
                count(*) FILTER (WHERE f.state = 'duplicate'), \
                count(*) FILTER (WHERE f.state = 'quarantined'), \
                coalesce(sum(f.updated_records) FILTER (WHERE f.state = 'ingested'), 0)::bigint \
         FROM files f LEFT JOIN datasets d ON d.name = f.dataset \
         WHERE f.dataset IS NOT NULL AND {} GROUP BY f.dataset, d.table_name ORDER BY f.dataset",
        LATEST.replace("files.id", "f.id")
    );
    Ok(c.query(&sql, &[])?
        .iter()
        .map(|r| {
            let n = |i: usize| r.get::<_, i64>(i) as u64;
            DatasetCounts {
                name: r.get(0),
                table: r.get(1),
                files: n(2),
                records: n(3),
                rejected_records: n(4),
                duplicate_records: n(5),
                duplicates: n(6),
                quarantined: n(7),
                updated_records: n(8),
            }
        })
        .collect())
}

pub fn last_activity(c: &mut Client) -> Result<Option<String>> {
    Ok(c.query_one(
        &format!("SELECT {} FROM files", ts("max(finished_at)")),
        &[],
    )?
    .get(0))
}
