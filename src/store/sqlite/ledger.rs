//! The ledger in SQLite: one row per file (and per attempt) in `files`, its rejected records in
//! `rejects`. Plain functions over a connection; the caller owns transactions.

use crate::reject::{Kind, RecordReject};
use crate::store::{DatasetCounts, FileFilter, FileRow, FileState, FileUpdate, NewFile};
use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

pub(super) const FILE_COLUMNS: &str =
    "id, path, source, claim, sha256, size, state, dataset, format, records, \
    rejected, duplicate_of, stored_at, error_kind, error_stage, error_message, error_line, \
    error_offset, error_field, attempt, retry_of, received_at, hashed_at, parsed_at, finished_at, \
    duplicate_records, rejects_at, warnings, pruned_at, discarded_at, discard_reason, \
    updated_records, remote_source, remote_path, remote_version, container_id, signer";

/// Rows that are a file's latest attempt: no later row retried them. Every count of files by
/// state goes through this, so `status`, `quarantine list` and the metrics agree.
pub(super) const LATEST: &str = "NOT EXISTS (SELECT 1 FROM files r WHERE r.retry_of = files.id)";

pub(super) fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let state: String = r.get(6)?;
    Ok(FileRow {
        id: r.get(0)?,
        path: r.get(1)?,
        source: r.get(2)?,
        claim: r.get(3)?,
        sha256: r.get(4)?,
        size: r.get(5)?,
        state: FileState::from_id(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("unknown file state {state:?}").into(),
            )
        })?,
        dataset: r.get(7)?,
        format: r.get(8)?,
        records: r.get(9)?,
        rejected: r.get(10)?,
        duplicate_of: r.get(11)?,
        stored_at: r.get(12)?,
        error_kind: r.get(13)?,
        error_stage: r.get(14)?,
        error_message: r.get(15)?,
        error_line: r.get(16)?,
        error_offset: r.get(17)?,
        error_field: r.get(18)?,
        attempt: r.get(19)?,
        retry_of: r.get(20)?,
        received_at: r.get(21)?,
        hashed_at: r.get(22)?,
        parsed_at: r.get(23)?,
        finished_at: r.get(24)?,
        duplicate_records: r.get(25)?,
        rejects_at: r.get(26)?,
        warnings: r
            .get::<_, Option<String>>(27)?
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
        pruned_at: r.get(28)?,
        discarded_at: r.get(29)?,
        discard_reason: r.get(30)?,
        updated_records: r.get(31)?,
        remote_source: r.get(32)?,
        remote_path: r.get(33)?,
        remote_version: r.get(34)?,
        container_id: r.get(35)?,
        signer: r.get(36)?,
    })
}

pub fn insert(conn: &Connection, f: &NewFile<'_>) -> Result<i64> {
    let e = f.error;
    conn.prepare_cached(
        "INSERT INTO files (path, source, claim, sha256, size, state, dataset, format, \
         duplicate_of, error_kind, error_stage, error_message, error_line, error_offset, \
         error_field, attempt, retry_of, received_at, hashed_at, finished_at, worker, rejected, \
         remote_source, remote_path, remote_version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
    )?
    .execute(rusqlite::params![
        f.path,
        f.source,
        f.claim,
        f.sha256,
        f.size as i64,
        f.state.id(),
        f.dataset,
        f.format,
        f.duplicate_of,
        e.map(|e| e.kind.id()),
        e.map(|e| e.stage.id()),
        e.map(|e| e.message.as_str()),
        e.and_then(|e| e.line).map(|v| v as i64),
        e.and_then(|e| e.offset).map(|v| v as i64),
        e.and_then(|e| e.field.as_deref()),
        f.attempt,
        f.retry_of,
        f.received_at,
        f.hashed_at,
        f.finished_at,
        f.worker,
        f.rejected as i64,
        f.remote.map(|r| r.source.as_str()),
        f.remote.map(|r| r.path.as_str()),
        f.remote.map(|r| r.version.as_str()),
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn update(conn: &Connection, id: i64, u: &FileUpdate<'_>) -> Result<()> {
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
            conn.prepare_cached(
                "UPDATE files SET records = ?2, rejected = ?3, duplicate_records = ?4, \
                 format = ?5, warnings = ?6, parsed_at = ?7, updated_records = ?8 WHERE id = ?1",
            )?
            .execute(rusqlite::params![
                id,
                counts.stored as i64,
                counts.rejected as i64,
                counts.duplicates as i64,
                format,
                warnings,
                parsed_at,
                counts.updated as i64,
            ])?;
        }
        FileUpdate::StoredAt(at) => {
            conn.prepare_cached("UPDATE files SET stored_at = ?2 WHERE id = ?1")?
                .execute((id, at))?;
        }
        FileUpdate::RejectsAt(at) => {
            conn.prepare_cached("UPDATE files SET rejects_at = ?2 WHERE id = ?1")?
                .execute((id, at))?;
        }
        FileUpdate::Identity { sha256, size } => {
            conn.prepare_cached("UPDATE files SET sha256 = ?2, size = ?3 WHERE id = ?1")?
                .execute((id, sha256, *size as i64))?;
        }
        FileUpdate::MemberOf(container) => {
            conn.prepare_cached("UPDATE files SET container_id = ?2 WHERE id = ?1")?
                .execute((id, container))?;
        }
        FileUpdate::Signer(fp) => {
            conn.prepare_cached("UPDATE files SET signer = ?2 WHERE id = ?1")?
                .execute((id, fp))?;
        }
    }
    Ok(())
}

/// Whether this exact file (same relative path, same content) is already in the ledger.
/// Entries never read (symlinks) have no hash and match on the path alone.
pub fn seen(conn: &Connection, path: &str, sha256: Option<&str>) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM files WHERE path = ?1 AND sha256 IS ?2 LIMIT 1")?
        .exists((path, sha256))?)
}

/// The ledger id of the file of this dataset ingested with this content, if any: a file's
/// identity is its dataset plus its content.
pub fn ingested_with(conn: &Connection, dataset: &str, sha256: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM files WHERE dataset = ?1 AND sha256 = ?2 AND state = 'ingested'",
        )?
        .query_row([dataset, sha256], |r| r.get(0))
        .optional()?)
}

/// Whether a path under the spool root is already some file's place or rejects report.
pub fn place_taken(conn: &Connection, rel: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM files WHERE stored_at = ?1 UNION ALL \
             SELECT 1 FROM files WHERE rejects_at = ?1",
        )?
        .exists([rel])?)
}

pub fn add_rejects(conn: &Connection, file_id: i64, rejects: &[RecordReject]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO rejects (file_id, line, field, value, reason, kind) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in rejects {
        stmt.execute((
            file_id,
            r.line as i64,
            &r.field,
            &r.value,
            &r.reason,
            r.kind.id(),
        ))?;
    }
    Ok(())
}

pub fn rejects(conn: &Connection, file_id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
    let mut stmt = conn.prepare_cached(
        "SELECT line, field, value, reason, kind FROM rejects WHERE file_id = ?1 \
         ORDER BY rowid LIMIT ?2",
    )?;
    let limit = limit.map_or(-1, |l| l as i64);
    let rows = stmt
        .query_map((file_id, limit), |r| {
            Ok(RecordReject {
                kind: r
                    .get::<_, Option<String>>(4)?
                    .and_then(|k| Kind::from_id(&k))
                    .unwrap_or(Kind::RecordInvalid),
                line: r.get::<_, i64>(0)? as u64,
                field: r.get(1)?,
                value: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn retried_by(conn: &Connection, id: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM files WHERE retry_of = ?1 ORDER BY id LIMIT 1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

pub fn by_claim(conn: &Connection, claim: &str) -> Result<Option<FileRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE claim = ?1"
        ))?
        .query_row([claim], file_row)
        .optional()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<FileRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))?
        .query_row([id], file_row)
        .optional()?)
}

pub fn files(conn: &Connection, filter: &FileFilter) -> Result<Vec<FileRow>> {
    let mut sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(s) = filter.state {
        sql.push_str(" AND state = ?");
        args.push(Box::new(s.id()));
    }
    if let Some(d) = &filter.dataset {
        sql.push_str(" AND dataset = ?");
        args.push(Box::new(d.clone()));
    }
    if filter.latest {
        sql.push_str(" AND ");
        sql.push_str(LATEST);
    }
    if filter.open {
        sql.push_str(" AND discarded_at IS NULL AND pruned_at IS NULL");
    }
    if let Some(t) = &filter.since {
        sql.push_str(" AND finished_at >= ?");
        args.push(Box::new(t.clone()));
    }
    sql.push_str(" ORDER BY id");
    if let Some(l) = filter.limit {
        // The newest rows, still in ledger order.
        sql = format!("SELECT * FROM ({sql} DESC LIMIT {l}) ORDER BY id");
    }
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), file_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Files by the state of their latest attempt (a quarantined file that was retried counts as
/// what its retry became, not twice).
pub fn state_counts(conn: &Connection) -> Result<BTreeMap<FileState, u64>> {
    let mut out: BTreeMap<FileState, u64> = FileState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT state, count(*) FROM files WHERE {LATEST} GROUP BY state"
    ))?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (state, n) = row?;
        if let Some(s) = FileState::from_id(&state) {
            out.insert(s, n as u64);
        }
    }
    Ok(out)
}

/// Per dataset: files and records, each file counted once (its latest attempt).
pub fn dataset_counts(conn: &Connection) -> Result<Vec<DatasetCounts>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT f.dataset, d.table_name, \
                sum(f.state = 'ingested'), \
                sum(CASE WHEN f.state = 'ingested' THEN f.records ELSE 0 END), \
                sum(CASE WHEN f.state = 'ingested' THEN f.rejected ELSE 0 END), \
                sum(CASE WHEN f.state = 'ingested' THEN f.duplicate_records ELSE 0 END), \
                sum(f.state = 'duplicate'), \
                sum(f.state = 'quarantined'), \
                sum(CASE WHEN f.state = 'ingested' THEN f.updated_records ELSE 0 END) \
         FROM files f LEFT JOIN datasets d ON d.name = f.dataset \
         WHERE f.dataset IS NOT NULL AND {} GROUP BY f.dataset ORDER BY f.dataset",
        LATEST.replace("files.id", "f.id")
    ))?;
    let rows = stmt
        .query_map([], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
            Ok(DatasetCounts {
                name: r.get(0)?,
                table: r.get(1)?,
                files: n(2)?,
                records: n(3)?,
                rejected_records: n(4)?,
                duplicate_records: n(5)?,
                duplicates: n(6)?,
                quarantined: n(7)?,
                updated_records: n(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn last_activity(conn: &Connection) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT max(finished_at) FROM files", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::{Reject, Stage};
    use crate::store::now;

    #[test]
    fn rows_round_trip() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let reject = Reject::new(Kind::CsvRaggedRow, Stage::Parse, "bad").at_line(3);
        let t = now();
        let base = NewFile {
            path: "a/b.csv",
            source: "/in",
            claim: Some("tok.1"),
            sha256: Some("ab"),
            size: 10,
            state: FileState::Ingested,
            dataset: Some("a"),
            format: Some("csv"),
            duplicate_of: None,
            error: None,
            rejected: 0,
            attempt: 1,
            retry_of: None,
            received_at: &t,
            hashed_at: Some(&t),
            finished_at: &t,
            worker: "w",
            remote: None,
        };
        let id = insert(&conn, &base).unwrap();
        // A second ingest of the same content for the same dataset is refused by the ledger.
        assert!(insert(&conn, &base).is_err());
        let q = insert(
            &conn,
            &NewFile {
                state: FileState::Quarantined,
                sha256: Some("cd"),
                claim: Some("tok.2"),
                error: Some(&reject),
                rejected: 7,
                ..base.clone()
            },
        )
        .unwrap();
        assert_eq!(get(&conn, q).unwrap().unwrap().rejected, 7);
        assert_eq!(ingested_with(&conn, "a", "ab").unwrap(), Some(id));
        assert_eq!(ingested_with(&conn, "other", "ab").unwrap(), None);
        assert!(seen(&conn, "a/b.csv", Some("cd")).unwrap());
        assert!(!seen(&conn, "a/b.csv", None).unwrap());
        let row = by_claim(&conn, "tok.2").unwrap().unwrap();
        assert_eq!(row.id, q);
        assert_eq!(row.state, FileState::Quarantined);
        assert_eq!(row.error_kind.as_deref(), Some("csv.ragged_row"));
        assert_eq!(row.error_line, Some(3));
        let all = files(
            &conn,
            &FileFilter {
                state: Some(FileState::Quarantined),
                ..FileFilter::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 1);
        update(&conn, q, &FileUpdate::StoredAt("quarantine/b.csv")).unwrap();
        assert!(place_taken(&conn, "quarantine/b.csv").unwrap());
        assert!(!place_taken(&conn, "quarantine/c.csv").unwrap());
    }
}
