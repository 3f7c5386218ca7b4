//! The SQLite store (the embedded default): one file, `<root>/ferry.db`, in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk before any file is moved because of
//! it. One writer connection per process (`SqliteIngest`), its checkpoints on a thread of their
//! own; commands open a `SqliteStore`. Several processes on one spool take turns: write
//! transactions start with `BEGIN IMMEDIATE` and wait on SQLite's busy timeout.

mod checkpoint;
mod deliveries;
mod export;
mod keys;
mod ledger;
mod migrations;
mod registry;
mod rekey;
mod remote;
mod retention;
mod tables;

use super::{
    Area, BatchPlan, BatchRange, ChunkInsert, ChunkStored, DatasetCounts, Failure, FileFilter,
    FileRow, FileState, FileUpdate, Identity, Ingest, NewColumn, NewFile, QuarantineCounts, Record,
    Store, TargetKey, TargetStatus,
};
use crate::format::ColumnKey;
use crate::reject::{Kind, RecordReject, Reject, Stage};
use anyhow::{Context, Result};
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// How long a connection waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Opens (creating if needed) the database at `path` and brings its schema up to date.
fn connect(path: &Path) -> Result<Connection> {
    configure_sqlite();
    let mut conn =
        Connection::open(path).with_context(|| format!("opening the ledger {}", path.display()))?;
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
    migrations::migrate(&mut conn)
        .with_context(|| format!("migrating the ledger {}", path.display()))?;
    Ok(conn)
}

/// A command's connection.
pub struct SqliteStore {
    conn: Connection,
    registry: registry::Registry,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Ok(SqliteStore {
            conn: connect(path)?,
            registry: registry::Registry::default(),
        })
    }
}

impl Store for SqliteStore {
    fn files(&mut self, filter: &FileFilter) -> Result<Vec<FileRow>> {
        ledger::files(&self.conn, filter)
    }
    fn file(&mut self, id: i64) -> Result<Option<FileRow>> {
        ledger::get(&self.conn, id)
    }
    fn by_claim(&mut self, claim: &str) -> Result<Option<FileRow>> {
        ledger::by_claim(&self.conn, claim)
    }
    fn retried_by(&mut self, id: i64) -> Result<Option<i64>> {
        ledger::retried_by(&self.conn, id)
    }
    fn ingested_as(&mut self, dataset: &str, sha256: &str) -> Result<Option<i64>> {
        ledger::ingested_with(&self.conn, dataset, sha256)
    }
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
        ledger::rejects(&self.conn, id, limit)
    }
    fn state_counts(&mut self) -> Result<BTreeMap<FileState, u64>> {
        ledger::state_counts(&self.conn)
    }
    fn dataset_counts(&mut self) -> Result<Vec<DatasetCounts>> {
        ledger::dataset_counts(&self.conn)
    }
    fn last_activity(&mut self) -> Result<Option<String>> {
        ledger::last_activity(&self.conn)
    }
    fn quarantine_counts(&mut self) -> Result<QuarantineCounts> {
        retention::quarantine_counts(&self.conn)
    }
    fn activity_since(&mut self, since: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        retention::activity_since(&self.conn, since)
    }
    fn prune_candidates(
        &mut self,
        area: Area,
        before: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<FileRow>> {
        retention::candidates(&self.conn, area, before, after, limit)
    }
    fn mark_pruned(&mut self, id: i64, at: &str) -> Result<bool> {
        retention::mark_pruned(&self.conn, id, at)
    }
    fn forgettable(&mut self, before: &str, pruned_now: &[i64]) -> Result<Vec<i64>> {
        retention::forgettable(&self.conn, before, pruned_now)
    }
    fn forget(&mut self, id: i64, dry_run: bool) -> Result<u64> {
        retention::forget(&mut self.conn, id, dry_run)
    }
    fn discard(&mut self, id: i64, reason: &str, at: &str) -> Result<bool> {
        retention::discard(&self.conn, id, reason, at)
    }
    fn tables(&mut self) -> Result<Vec<(String, String)>> {
        registry::tables(&self.conn)
    }
    fn table_or_planned(&mut self, dataset: &str) -> Result<(String, bool)> {
        registry::table_or_planned(&self.conn, dataset)
    }
    fn last_success(&mut self) -> Result<Vec<(String, String)>> {
        retention::last_success(&self.conn)
    }
    fn table_owner(&mut self, table: &str) -> Result<Option<String>> {
        registry::table_owner(&self.conn, table)
    }
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<crate::store::names::ColumnType>>> {
        registry::table_types(&self.conn, table)
    }
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str {
        ty.sql_type()
    }
    fn key_indexes(&mut self) -> Result<Vec<super::KeyIndexStatus>> {
        rekey::key_indexes(&self.conn)
    }
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>> {
        self.registry.column(&self.conn, dataset, key)
    }
    fn key_lookup(
        &mut self,
        keys: &mut super::keys::TableKeys,
        ins: &ChunkInsert,
    ) -> Result<Vec<Option<(i64, super::keys::Seen)>>> {
        keys::read_lookup(&self.conn, keys, ins)
    }
    fn targets(&mut self) -> Result<Vec<TargetStatus>> {
        export::targets(&self.conn)
    }
    fn target_dirs(&mut self, dataset: &str) -> Result<Vec<(String, String)>> {
        export::target_dirs(&self.conn, dataset)
    }
    fn upsert_target(&mut self, key: &TargetKey, dir: &str) -> Result<()> {
        export::upsert_target(&self.conn, key, dir)
    }
    fn plan_batch(
        &mut self,
        key: &TargetKey,
        table: &str,
        max_rows: u64,
        make: &mut dyn FnMut(BatchRange) -> BatchPlan,
    ) -> Result<Option<(BatchPlan, bool)>> {
        export::plan_batch(&self.conn, key, table, max_rows, make)
    }
    fn read_batch(
        &mut self,
        table: &str,
        plan: &BatchPlan,
        record: &mut dyn FnMut(&dyn Record) -> Result<()>,
    ) -> Result<u64> {
        export::read_batch(&self.conn, table, plan, record)
    }
    fn commit_batch(
        &mut self,
        key: &TargetKey,
        plan: &BatchPlan,
        sha256: &str,
        bytes: u64,
    ) -> Result<()> {
        export::commit_batch(&self.conn, key, plan, sha256, bytes)
    }
    fn watermark(&mut self, key: &TargetKey) -> Result<i64> {
        export::watermark(&self.conn, key)
    }

    fn remote_files(&mut self, source: &str) -> Result<Vec<crate::store::RemoteRow>> {
        remote::files(&self.conn, source)
    }
    fn remote_claims(
        &mut self,
        claims: &[(crate::store::RemoteKey, Option<String>)],
        owner: &str,
    ) -> Result<Vec<bool>> {
        remote::claims(&mut self.conn, claims, owner)
    }
    fn remote_committed(
        &mut self,
        keys: &[crate::store::RemoteKey],
        state: crate::store::RemoteState,
        owner: &str,
        release: bool,
    ) -> Result<Vec<bool>> {
        remote::committed(&mut self.conn, keys, state, owner, release)
    }
    fn remote_forget(&mut self, keys: &[crate::store::RemoteKey]) -> Result<()> {
        remote::forget(&mut self.conn, keys)
    }
    fn channel_open(&mut self, channel: &str) -> Result<()> {
        deliveries::open(&self.conn, channel)
    }
    fn deliveries_due(
        &mut self,
        channel: &str,
        covers: &crate::store::Covers,
        now: &str,
        limit: u64,
    ) -> Result<Vec<(FileRow, u32)>> {
        deliveries::due(&self.conn, channel, covers, now, limit)
    }
    fn channel_advance(
        &mut self,
        channel: &str,
        covers: &crate::store::Covers,
        horizon: &str,
    ) -> Result<()> {
        deliveries::advance(&self.conn, channel, covers, horizon)
    }
    fn delivery_name_taken(&mut self, channel: &str, name: &str, file_id: i64) -> Result<bool> {
        deliveries::name_taken(&self.conn, channel, name, file_id)
    }
    fn delivery_done(&mut self, channel: &str, file_id: i64, name: &str) -> Result<()> {
        deliveries::done(&self.conn, channel, file_id, name)
    }
    fn delivery_failed(
        &mut self,
        channel: &str,
        file_id: i64,
        error: &str,
        retry_at: &str,
    ) -> Result<()> {
        deliveries::failed(&self.conn, channel, file_id, error, retry_at)
    }
    fn channels(
        &mut self,
        covers: &[(String, crate::store::Covers)],
    ) -> Result<Vec<crate::store::ChannelStatus>> {
        deliveries::channels(&self.conn, covers)
    }
    fn remote_release(&mut self, key: &crate::store::RemoteKey, owner: &str) -> Result<()> {
        remote::release(&self.conn, key, owner)
    }
    fn remote_ledger(&mut self, key: &crate::store::RemoteKey) -> Result<Option<i64>> {
        remote::ledger(&self.conn, key)
    }
    fn remote_mark(
        &mut self,
        key: &crate::store::RemoteKey,
        state: crate::store::RemoteState,
        error: Option<&str>,
    ) -> Result<()> {
        remote::mark(&self.conn, key, state, error)
    }
}

/// The writer's connection: group transactions, savepoints per file, and what the writer
/// caches between them (table columns, the registry, record keys), each kept in step with
/// commits and rollbacks.
pub struct SqliteIngest {
    conn: Connection,
    tables: tables::Tables,
    registry: registry::Registry,
    keys: keys::Keys,
    _checkpointer: checkpoint::Checkpointer,
}

impl SqliteIngest {
    pub fn open(path: &Path) -> Result<SqliteIngest> {
        let conn = connect(path)?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {}",
            checkpoint::WRITER_AUTOCHECKPOINT
        ))?;
        let checkpointer = checkpoint::Checkpointer::start(path, connect(path)?)?;
        Ok(SqliteIngest {
            conn,
            tables: tables::Tables::default(),
            registry: registry::Registry::default(),
            keys: keys::Keys::default(),
            _checkpointer: checkpointer,
        })
    }

    /// Everything cached may describe what a rollback undid.
    fn forget(&mut self) {
        self.tables.invalidate();
        self.registry.invalidate();
    }
}

/// The `FERRY_FAULT_DISK_FULL` fault point: while its flag file exists the ledger may not grow
/// (SQLite's `max_page_count` is pinned to its current size), so writes fail with SQLite's real
/// "database or disk is full" error, as on a full disk.
fn injected_disk_full(conn: &Connection) -> Result<()> {
    let Some(full) = crate::faults::disk_full() else {
        return Ok(());
    };
    let pages: i64 = if full {
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))?
    } else {
        i64::from(u32::MAX - 1)
    };
    conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
    Ok(())
}

fn sqlite_code(e: &anyhow::Error) -> Option<rusqlite::ErrorCode> {
    e.chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
        .and_then(|e| e.sqlite_error_code())
}

impl Ingest for SqliteIngest {
    fn begin(&mut self) -> Result<()> {
        injected_disk_full(&self.conn)?;
        loop {
            // IMMEDIATE: the write lock now, so later statements cannot deadlock upgrading it.
            match self.conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => break,
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) =>
                {
                    tracing::warn!(
                        "the ledger has been locked by another process for a while; still waiting"
                    );
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context("starting a ledger transaction"))
                }
            }
        }
        self.tables.refresh(&self.conn)?;
        self.registry.refresh(&self.conn)?;
        self.keys.begin();
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if let Err(e) = self.keys.before_commit(&self.conn) {
            self.rollback();
            return Err(e.context("writing the record key index"));
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.forget();
            self.keys.clear();
            return Err(anyhow::Error::from(e).context("committing to the ledger"));
        }
        self.keys.committed();
        Ok(())
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.forget();
        self.keys.clear();
    }

    fn begin_file(&mut self) -> Result<()> {
        self.conn.execute_batch("SAVEPOINT file")?;
        Ok(())
    }

    fn keep_file(&mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE file")?;
        self.keys.file_done();
        Ok(())
    }

    fn undo_file(&mut self) -> Result<()> {
        self.conn.execute_batch("ROLLBACK TO file; RELEASE file")?;
        self.forget();
        self.keys.undo_file();
        Ok(())
    }

    fn seen(&mut self, path: &str, sha256: Option<&str>) -> Result<bool> {
        ledger::seen(&self.conn, path, sha256)
    }
    fn identity(&mut self, dataset: &str, sha256: &str) -> Result<Identity> {
        // One writer at a time: nobody else can be storing it now.
        Ok(match ledger::ingested_with(&self.conn, dataset, sha256)? {
            Some(id) => Identity::Stored(id),
            None => Identity::New,
        })
    }
    fn insert_file(&mut self, f: &NewFile) -> Result<i64> {
        ledger::insert(&self.conn, f)
    }
    fn update_file(&mut self, id: i64, update: &FileUpdate) -> Result<()> {
        ledger::update(&self.conn, id, update)
    }
    fn file(&mut self, id: i64) -> Result<Option<FileRow>> {
        ledger::get(&self.conn, id)
    }
    fn add_rejects(&mut self, id: i64, rejects: &[RecordReject]) -> Result<()> {
        ledger::add_rejects(&self.conn, id, rejects)
    }
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
        ledger::rejects(&self.conn, id, limit)
    }
    fn place_taken(&mut self, rel: &str) -> Result<bool> {
        ledger::place_taken(&self.conn, rel)
    }

    fn table(&mut self, dataset: &str) -> Result<Option<String>> {
        self.registry.table(&self.conn, dataset)
    }
    fn create_table_name(&mut self, dataset: &str, wanted: Option<&str>) -> Result<String> {
        self.registry.create_table(&self.conn, dataset, wanted)
    }
    fn table_owner(&mut self, table: &str) -> Result<Option<String>> {
        registry::table_owner(&self.conn, table)
    }
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<crate::store::names::ColumnType>>> {
        registry::table_types(&self.conn, table)
    }
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str {
        ty.sql_type()
    }
    fn table_columns(&mut self, table: &str) -> Result<HashMap<String, String>> {
        self.tables.columns(&self.conn, table)
    }
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>> {
        self.registry.column(&self.conn, dataset, key)
    }
    fn assign_column(
        &mut self,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        record: bool,
    ) -> Result<(String, bool)> {
        self.registry
            .assign_column(&self.conn, dataset, key, existing, reserved, record)
    }
    fn ensure_columns(&mut self, table: &str, columns: &[NewColumn], key: &[String]) -> Result<()> {
        self.tables
            .ensure(&self.conn, table, columns, !key.is_empty())?;
        Ok(())
    }

    fn insert_chunk(&mut self, ins: &ChunkInsert) -> Result<ChunkStored> {
        if ins.key_cells.is_empty() {
            // Unkeyed records are numbered by SQLite.
            self.tables.insert(
                &self.conn,
                ins.table,
                ins.columns,
                false,
                ins.file_id,
                ins.chunk,
                None,
                None,
            )?;
            return Ok(ChunkStored {
                stored: ins.chunk.rows() as u64,
                ..ChunkStored::default()
            });
        }
        // Keyed records are decided against the key index, numbered here (after every id
        // ever given: the index knows the highest), and the insert checks SQLite agreed.
        let stored = self.keys.plan(&self.conn, &mut self.tables, ins)?;
        self.tables.insert(
            &self.conn,
            ins.table,
            ins.columns,
            true,
            ins.file_id,
            ins.chunk,
            Some(&stored.plan.insert),
            Some(stored.first),
        )?;
        if !stored.plan.replaces.is_empty() {
            let mut stmt = self.conn.prepare_cached(&format!(
                "DELETE FROM {} WHERE _id = ?1",
                tables::ident(ins.table)
            ))?;
            for &(_, old) in &stored.plan.replaces {
                stmt.execute([old])?;
            }
        }
        self.keys.stored(ins.table, ins.chunk, &stored);
        let plan = stored.plan;
        Ok(ChunkStored {
            stored: plan.new + plan.updated,
            updated: plan.updated,
            duplicates: plan.duplicates,
            rejects: plan.rejects,
        })
    }

    fn key_ready(
        &mut self,
        table: &str,
        def: Option<&super::keys::def::KeyDef>,
    ) -> Result<super::KeyReady> {
        rekey::key_ready(&self.conn, table, def)
    }

    fn rekey(
        &mut self,
        table: &str,
        how: &super::Rekey,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<super::keys::rekey::Rekeyed>> {
        self.begin()?;
        let r = self
            .tables
            .ensure(&self.conn, table, &[], true)
            .and_then(|_| super::keys::rekey::rekey(&mut keys::Runs(&self.conn), table, how, stop));
        if how.commits(&r) {
            self.keys.forget(table);
            self.commit()?;
        } else {
            self.rollback();
        }
        r
    }

    fn finish_keys(&mut self, stop: &dyn Fn() -> bool) -> Result<()> {
        self.begin()?;
        match self.keys.finish(&self.conn, &mut self.tables, stop) {
            Ok(Some(true)) => self.commit(),
            Ok(_) => {
                self.rollback();
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn max_data_columns(&self) -> usize {
        super::names::MAX_DATA_COLUMNS
    }

    fn classify(&self, e: &anyhow::Error) -> Failure {
        use rusqlite::ErrorCode as C;
        let code = sqlite_code(e);
        if let Some(
            C::DiskFull
            | C::SystemIoFailure
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::ReadOnly
            | C::DatabaseCorrupt
            | C::NotADatabase
            | C::CannotOpen
            | C::OutOfMemory
            | C::PermissionDenied,
        ) = code
        {
            return Failure::Machine;
        }
        let text = format!("{e:#}");
        if code == Some(C::TooBig) {
            Failure::Content(Reject::new(
                Kind::RecordTooBig,
                Stage::Store,
                format!("a value or record is larger than the store accepts: {text}"),
            ))
        } else if text.contains("too many columns") {
            Failure::Content(Reject::new(
                Kind::SchemaTooManyColumns,
                Stage::Store,
                format!("the table would have more columns than the store allows: {text}"),
            ))
        } else {
            Failure::Other
        }
    }
}
