//! The SQLite ledger: what happened to every file, and the datasets' tables.
//!
//! One writer connection per process owns all writes (see `pipeline::writer`); reporting commands
//! open their own. The database runs in WAL mode with `synchronous=FULL`, so a commit that
//! returned is on disk before any file is moved because of it. PRAGMAs live here, schema changes
//! in `schema`. This module never touches files other than the database.

pub mod registry;
pub mod schema;
pub mod tables;

use crate::reject::{RecordReject, Reject};
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// Time as the ledger stores it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How long a connection waits for another process's write transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

static GLOBAL_CONFIG: Once = Once::new();

/// Process-wide SQLite settings, applied before the first connection.
fn configure_sqlite() {
    GLOBAL_CONFIG.call_once(|| {
        // Memory statistics take a global mutex on every allocation; ferry never reads them.
        // SAFETY: called before any connection is opened in this process (guarded by `Once`);
        // a late call only returns SQLITE_MISUSE, which is harmless.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
        }
    });
}

/// The states a file ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ingested,
    Duplicate,
    Quarantined,
}

impl State {
    pub fn id(self) -> &'static str {
        match self {
            State::Ingested => "ingested",
            State::Duplicate => "duplicate",
            State::Quarantined => "quarantined",
        }
    }

    pub fn from_id(s: &str) -> Option<State> {
        match s {
            "ingested" => Some(State::Ingested),
            "duplicate" => Some(State::Duplicate),
            "quarantined" => Some(State::Quarantined),
            _ => None,
        }
    }
}

/// A ledger row to insert.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub path: &'a str,
    pub source: &'a str,
    pub claim: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub size: u64,
    pub state: State,
    pub dataset: Option<&'a str>,
    pub format: Option<&'a str>,
    pub duplicate_of: Option<i64>,
    pub error: Option<&'a Reject>,
    pub attempt: u32,
    pub retry_of: Option<i64>,
    pub received_at: &'a str,
    pub hashed_at: Option<&'a str>,
    pub finished_at: &'a str,
    pub worker: &'a str,
}

/// A ledger row as reported by `ferry files` and friends.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileRow {
    pub id: i64,
    pub path: String,
    pub source: String,
    pub claim: Option<String>,
    pub sha256: Option<String>,
    pub size: i64,
    pub state: String,
    pub dataset: Option<String>,
    pub format: Option<String>,
    pub records: i64,
    pub rejected: i64,
    pub duplicate_of: Option<i64>,
    pub stored_at: Option<String>,
    pub error_kind: Option<String>,
    pub error_stage: Option<String>,
    pub error_message: Option<String>,
    pub error_line: Option<i64>,
    pub error_offset: Option<i64>,
    pub error_field: Option<String>,
    pub attempt: i64,
    pub retry_of: Option<i64>,
    pub received_at: String,
    pub hashed_at: Option<String>,
    pub parsed_at: Option<String>,
    pub finished_at: String,
    /// Records not stored because their key was already stored.
    pub duplicate_records: i64,
    /// Where the file's rejected records were written, relative to the spool root.
    pub rejects_at: Option<String>,
    /// What the file was stored with that a reader should know (columns stored under another
    /// name than the file's, …).
    pub warnings: Vec<String>,
}

const FILE_COLUMNS: &str =
    "id, path, source, claim, sha256, size, state, dataset, format, records, \
    rejected, duplicate_of, stored_at, error_kind, error_stage, error_message, error_line, \
    error_offset, error_field, attempt, retry_of, received_at, hashed_at, parsed_at, finished_at, \
    duplicate_records, rejects_at, warnings";

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        path: r.get(1)?,
        source: r.get(2)?,
        claim: r.get(3)?,
        sha256: r.get(4)?,
        size: r.get(5)?,
        state: r.get(6)?,
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
    })
}

/// What became of a file's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub stored: u64,
    pub rejected: u64,
    /// Skipped: their key was already stored.
    pub duplicates: u64,
}

/// A dataset's files and records, counted once per file (its latest attempt).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DatasetCounts {
    pub name: String,
    /// The table its records are in (`None` until a file of it was stored).
    pub table: Option<String>,
    pub files: u64,
    pub records: u64,
    /// Records set aside within `max_bad_records`, in files that were ingested.
    pub rejected_records: u64,
    /// Records not stored because their key was already stored.
    pub duplicate_records: u64,
    /// Files whose content was already ingested for the dataset.
    pub duplicates: u64,
    pub quarantined: u64,
}

/// Rows that are a file's latest attempt: no later row retried them. Every count of files by
/// state goes through this, so `status`, `quarantine list` and the metrics agree.
const LATEST: &str = "NOT EXISTS (SELECT 1 FROM files r WHERE r.retry_of = files.id)";

/// Which ledger rows to list.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub state: Option<State>,
    pub dataset: Option<String>,
    pub limit: Option<u64>,
    /// Only rows no later attempt retried (the latest attempt of each file).
    pub latest: bool,
}

pub struct Ledger {
    pub conn: Connection,
}

/// Checkpoints the WAL from its own thread, so the writer never copies pages into the database
/// file itself (that copy was an eighth of the writer's time). Stops when dropped.
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Checkpoint once the WAL is this big; the writer's own fallback is far above this.
const CHECKPOINT_AT: u64 = 32 << 20;
/// Pages after which the writer checkpoints itself, should the checkpointer fall behind.
const WRITER_AUTOCHECKPOINT: i64 = 65536;

impl Checkpointer {
    pub fn start(db: &Path) -> Result<Checkpointer> {
        let conn = Ledger::open(db)?.conn;
        let wal = {
            let mut p = db.as_os_str().to_os_string();
            p.push("-wal");
            std::path::PathBuf::from(p)
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-checkpoint".into())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                // Frames the last checkpoint left behind; the file's size says nothing after a
                // reset (the WAL is rewound, not truncated), so count frames instead.
                let mut pending_frames: i64 = 0;
                let mut last_size = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(25));
                    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    let grew = size > last_size;
                    last_size = size;
                    if size < CHECKPOINT_AT || (!grew && pending_frames == 0) {
                        continue;
                    }
                    // PASSIVE: copies what it can without waiting for, or blocking, the writer.
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    }) {
                        Ok((log, done)) => pending_frames = (log - done).max(0),
                        Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Switches the connection to WAL mode. Turning a new database into WAL needs an exclusive
/// lock, and SQLite answers "busy" at once there instead of calling the busy handler: several
/// ferry processes starting on a new spool together (a daemon, an export, a run) would fail
/// instead of waiting. So wait here, as the busy timeout would.
fn wal_mode(conn: &Connection) -> Result<String> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Ledger> {
        configure_sqlite();
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening the ledger {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = wal_mode(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "the ledger {} cannot use WAL mode (got {mode}); is it on a network filesystem?",
                path.display()
            );
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 4000;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)
            .with_context(|| format!("migrating the ledger {}", path.display()))?;
        Ok(Ledger { conn })
    }

    /// Opens the connection the writer uses: it leaves checkpoints to a `Checkpointer`.
    pub fn open_writer(path: &Path) -> Result<Ledger> {
        let l = Ledger::open(path)?;
        l.conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}"
        ))?;
        Ok(l)
    }

    /// Opens the ledger for reporting; `None` when the spool has no ledger yet.
    pub fn open_existing(path: &Path) -> Result<Option<Ledger>> {
        if !path.exists() {
            return Ok(None);
        }
        Ledger::open(path).map(Some)
    }

    /// Starts a write transaction, taking the write lock now (so later statements cannot fail
    /// with a lock upgrade deadlock).
    pub fn begin(&self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    pub fn commit(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    pub fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// The ledger id of the file of this dataset ingested with this content, if any: a file's
    /// identity is its dataset plus its content.
    pub fn ingested_with(&self, dataset: &str, sha256: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id FROM files WHERE dataset = ?1 AND sha256 = ?2 AND state = 'ingested'",
            )?
            .query_row([dataset, sha256], |r| r.get(0))
            .optional()?)
    }

    pub fn set_format(&self, id: i64, format: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE files SET format = ?2 WHERE id = ?1")?
            .execute((id, format))?;
        Ok(())
    }

    /// Records what a file was stored with that a reader should know (renamed columns, …).
    pub fn set_warnings(&self, id: i64, warnings: &[String]) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE files SET warnings = ?2 WHERE id = ?1")?
            .execute((id, serde_json::to_string(warnings)?))?;
        Ok(())
    }

    /// Whether this exact file (same relative path, same content) is already in the ledger.
    /// Entries never read (symlinks) have no hash and match on the path alone.
    pub fn seen(&self, path: &str, sha256: Option<&str>) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM files WHERE path = ?1 AND sha256 IS ?2 LIMIT 1")?
            .exists((path, sha256))?)
    }

    pub fn insert(&self, f: &NewFile<'_>) -> Result<i64> {
        let e = f.error;
        self.conn
            .prepare_cached(
                "INSERT INTO files (path, source, claim, sha256, size, state, dataset, format, \
                 duplicate_of, error_kind, error_stage, error_message, error_line, error_offset, \
                 error_field, attempt, retry_of, received_at, hashed_at, finished_at, worker) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21)",
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
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_records(&self, id: i64, counts: Counts, parsed_at: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE files SET records = ?2, rejected = ?3, duplicate_records = ?4, \
                 parsed_at = ?5 WHERE id = ?1",
            )?
            .execute((
                id,
                counts.stored as i64,
                counts.rejected as i64,
                counts.duplicates as i64,
                parsed_at,
            ))?;
        Ok(())
    }

    pub fn set_rejects_at(&self, id: i64, at: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE files SET rejects_at = ?2 WHERE id = ?1")?
            .execute((id, at))?;
        Ok(())
    }

    /// Records a file's rejected records.
    pub fn add_rejects(&self, file_id: i64, rejects: &[RecordReject]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
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

    /// A file's rejected records in file order, at most `limit`.
    pub fn rejects(&self, file_id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT line, field, value, reason, kind FROM rejects WHERE file_id = ?1 \
             ORDER BY rowid LIMIT ?2",
        )?;
        let limit = limit.map_or(-1, |l| l as i64);
        let rows = stmt
            .query_map((file_id, limit), |r| {
                Ok(RecordReject {
                    kind: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|k| crate::reject::Kind::from_id(&k))
                        .unwrap_or(crate::reject::Kind::RecordInvalid),
                    line: r.get::<_, i64>(0)? as u64,
                    field: r.get(1)?,
                    value: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The ledger row that retried this one, if any.
    pub fn retried_by(&self, id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM files WHERE retry_of = ?1 ORDER BY id LIMIT 1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    pub fn set_stored_at(&self, id: i64, stored_at: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE files SET stored_at = ?2 WHERE id = ?1")?
            .execute((id, stored_at))?;
        Ok(())
    }

    pub fn stored_at_taken(&self, stored_at: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM files WHERE stored_at = ?1")?
            .exists([stored_at])?)
    }

    /// The committed ledger row of a claim, if its file got that far.
    pub fn by_claim(&self, claim: &str) -> Result<Option<FileRow>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE claim = ?1"
            ))?
            .query_row([claim], file_row)
            .optional()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<FileRow>> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))?
            .query_row([id], file_row)
            .optional()?)
    }

    /// Files by the state of their latest attempt (a quarantined file that was retried counts
    /// as what its retry became, not twice).
    pub fn state_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut out: std::collections::BTreeMap<String, u64> =
            [State::Ingested, State::Duplicate, State::Quarantined]
                .iter()
                .map(|s| (s.id().to_string(), 0))
                .collect();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT state, count(*) FROM files WHERE {LATEST} GROUP BY state"
        ))?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            out.insert(state, n as u64);
        }
        Ok(out)
    }

    /// Per dataset: files and records, each file counted once (its latest attempt).
    pub fn dataset_counts(&self) -> Result<Vec<DatasetCounts>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT f.dataset, d.table_name, \
                    sum(f.state = 'ingested'), \
                    sum(CASE WHEN f.state = 'ingested' THEN f.records ELSE 0 END), \
                    sum(CASE WHEN f.state = 'ingested' THEN f.rejected ELSE 0 END), \
                    sum(CASE WHEN f.state = 'ingested' THEN f.duplicate_records ELSE 0 END), \
                    sum(f.state = 'duplicate'), \
                    sum(f.state = 'quarantined') \
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
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn files(&self, filter: &FileFilter) -> Result<Vec<FileRow>> {
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
        sql.push_str(" ORDER BY id");
        if let Some(l) = filter.limit {
            // The newest rows, still in ledger order.
            sql = format!("SELECT * FROM ({sql} DESC LIMIT {l}) ORDER BY id");
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), file_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("f.db")).unwrap();
        l.begin().unwrap();
        let reject = Reject::new(
            crate::reject::Kind::CsvRaggedRow,
            crate::reject::Stage::Parse,
            "bad",
        )
        .at_line(3);
        let t = now();
        let base = NewFile {
            path: "a/b.csv",
            source: "/in",
            claim: Some("tok.1"),
            sha256: Some("ab"),
            size: 10,
            state: State::Ingested,
            dataset: Some("a"),
            format: Some("csv"),
            duplicate_of: None,
            error: None,
            attempt: 1,
            retry_of: None,
            received_at: &t,
            hashed_at: Some(&t),
            finished_at: &t,
            worker: "w",
        };
        let id = l.insert(&base).unwrap();
        // A second ingest of the same content is refused by the ledger itself.
        assert!(l.insert(&base).is_err());
        let q = l
            .insert(&NewFile {
                state: State::Quarantined,
                sha256: Some("cd"),
                claim: Some("tok.2"),
                error: Some(&reject),
                ..base.clone()
            })
            .unwrap();
        l.commit().unwrap();
        assert_eq!(l.ingested_with("a", "ab").unwrap(), Some(id));
        assert_eq!(l.ingested_with("other", "ab").unwrap(), None);
        assert!(l.seen("a/b.csv", Some("cd")).unwrap());
        assert!(!l.seen("a/b.csv", None).unwrap());
        let row = l.by_claim("tok.2").unwrap().unwrap();
        assert_eq!(row.id, q);
        assert_eq!(row.error_kind.as_deref(), Some("csv.ragged_row"));
        assert_eq!(row.error_line, Some(3));
        let all = l
            .files(&FileFilter {
                state: Some(State::Quarantined),
                ..FileFilter::default()
            })
            .unwrap();
        assert_eq!(all.len(), 1);
    }
}
