//! The PostgreSQL store: for teams whose data lives in PostgreSQL, and for several ferry hosts
//! sharing one inbox (the spool folder on a network mount) with the same promise as one host.
//!
//! What changes against SQLite, and where:
//! - many writers at once, on many hosts: a file's identity is reserved with an advisory lock
//!   and decided by the database (`PgIngest::identity`; a unique index backs it); names and
//!   tables change only under one schema lock (`lock_schema`); record keys are decided in
//!   memory, keyed writers of a table taking turns and catching up from a log (`keys`);
//! - record ids come in blocks recorded with their transaction, so exports never skip a record
//!   committed late by another host (`ids`, `export`);
//! - owners of claims prove they are alive with leases in the database, not lock files
//!   (`lease`); the writer's group transaction checks its own lease (fencing);
//! - records are loaded with binary `COPY` (`binary`, `tables`).
//!
//! Sessions keep TCP keepalives short (client and server side), so a host that vanishes is
//! noticed in seconds and its open transaction — and the locks it holds — end with it.

mod binary;
mod compare;
mod datetime;
mod deliveries;
mod export;
mod ids;
mod keys;
mod lease;
mod ledger;
mod migrations;
mod order;
mod registry;
mod rekey;
mod remote;
mod retention;
mod session;
mod tables;

pub use lease::Leases;

use super::{
    Area, BatchPlan, BatchRange, ChunkInsert, ChunkStored, DatasetCounts, Failure, FileFilter,
    FileRow, FileState, FileUpdate, Identity, Ingest, NewColumn, NewFile, QuarantineCounts, Record,
    Store, TargetKey, TargetStatus,
};
use crate::format::ColumnKey;
use crate::reject::{Kind, RecordReject, Reject, Stage};
use anyhow::{anyhow, bail, Context, Result};
use migrations::{LOCK_CLASS, LOCK_SCHEMA};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

/// How long an owner's lease lasts without renewal, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// How many connections of one process store records at once, by default: while one
/// group waits for its commit to be flushed, the other's COPY keeps the server busy.
pub const DEFAULT_WRITERS: usize = 2;

/// A PostgreSQL store: where it is, in which schema, how long owners' leases last, and how
/// many writers (connections storing records) a process runs.
#[derive(Clone)]
pub struct Target {
    url: String,
    config: postgres::Config,
    schema: Option<String>,
    pub lease: Duration,
    pub writers: usize,
}

impl PartialEq for Target {
    fn eq(&self, o: &Target) -> bool {
        (&self.url, &self.schema, self.lease, self.writers)
            == (&o.url, &o.schema, o.lease, o.writers)
    }
}

impl Eq for Target {}

impl Target {
    /// Reads a `postgres://` (or `postgresql://`) URL. Messages never repeat the password.
    pub fn parse(url: &str, schema: Option<String>) -> Result<Target, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "the store is a PostgreSQL URL, postgres://user@host:port/database (the \
                 default store, the spool's SQLite file, needs no setting)"
                    .into(),
            );
        }
        let config = postgres::Config::from_str(url)
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        if let Some(s) = &schema {
            if s.len() > super::names::MAX_NAME {
                return Err(format!("the schema name {s:?} is longer than 63 bytes"));
            }
        }
        Ok(Target {
            url: url.to_string(),
            config,
            schema,
            lease: DEFAULT_LEASE,
            writers: DEFAULT_WRITERS,
        })
    }

    /// `postgres://user@host:port/db` (and the schema): where, without the password.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let host = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = c
            .get_ports()
            .first()
            .map_or(String::new(), |p| format!(":{p}"));
        let user = c.get_user().map_or(String::new(), |u| format!("{u}@"));
        let db = c.get_dbname().unwrap_or("");
        let schema = self
            .schema
            .as_ref()
            .map_or(String::new(), |s| format!(" (schema {s})"));
        format!("postgres://{user}{host}{port}/{db}{schema}")
    }

    fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// A session, set up but not migrated.
    pub(super) fn connect(&self) -> Result<Client> {
        let mut c = self.config.clone();
        if c.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                c.password(pw);
            }
        }
        if c.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            c.user(&user);
        }
        c.application_name("ferry")
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(20));
        let mut client = c.connect(NoTls).map_err(|e| Unreachable {
            store: self.describe(),
            error: e,
        })?;
        // The server notices a vanished client in seconds too: its transaction and locks end.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                 SET tcp_keepalives_count = 3; SET tcp_user_timeout = 20000; \
                 SET client_min_messages = warning; SET TIME ZONE 'UTC'; \
                 SET search_path = {}",
                tables::ident(self.schema())
            ))
            .map_err(|e| {
                anyhow!(
                    "setting up a session on {}: {}",
                    self.describe(),
                    reason(&e)
                )
            })?;
        let encoding: String = client.query_one("SHOW server_encoding", &[])?.get(0);
        if encoding != "UTF8" {
            bail!(
                "the database of {} uses the {encoding} encoding; ferry stores text exactly and \
                 needs a UTF8 database",
                self.describe()
            );
        }
        Ok(client)
    }

    /// A session on a store whose schema is up to date.
    pub(super) fn open(&self) -> Result<Client> {
        let mut c = self.connect()?;
        if let Err(e) = migrations::migrate(&mut c, self.schema.as_deref()) {
            let taken = e.chain().find_map(|c| {
                let db = c.downcast_ref::<postgres::Error>()?.as_db_error()?;
                (*db.code() == SqlState::DUPLICATE_TABLE
                    || *db.code() == SqlState::DUPLICATE_OBJECT)
                    .then(|| db.message().to_string())
            });
            if let Some(what) = taken {
                bail!(
                    "cannot set up ferry in the schema {} of {}: it already holds something of \
                     the names ferry uses ({what}). Give ferry a schema of its own: set [store] \
                     schema = \"ferry\" (ferry creates it)",
                    self.schema(),
                    self.describe()
                );
            }
            return Err(e.context(format!("setting up the store {}", self.describe())));
        }
        Ok(c)
    }
}

/// A command's connection.
pub struct PgStore {
    c: Client,
    registry: registry::Registry,
}

impl PgStore {
    pub fn open(t: &Target) -> Result<PgStore> {
        Ok(PgStore {
            c: t.open()?,
            registry: registry::Registry::default(),
        })
    }

    /// The store if ferry has been set up in it (reporting commands create nothing).
    pub fn open_existing(t: &Target) -> Result<Option<PgStore>> {
        let mut c = t.connect()?;
        match migrations::version(&mut c)? {
            None => Ok(None),
            Some(v) if v == migrations::latest() => Ok(Some(PgStore {
                c,
                registry: registry::Registry::default(),
            })),
            Some(_) => Ok(Some(PgStore::open(t)?)),
        }
    }
}

impl Store for PgStore {
    fn files(&mut self, filter: &FileFilter) -> Result<Vec<FileRow>> {
        ledger::files(&mut self.c, filter)
    }
    fn file(&mut self, id: i64) -> Result<Option<FileRow>> {
        ledger::get(&mut self.c, id)
    }
    fn by_claim(&mut self, claim: &str) -> Result<Option<FileRow>> {
        ledger::by_claim(&mut self.c, claim)
    }
    fn retried_by(&mut self, id: i64) -> Result<Option<i64>> {
        ledger::retried_by(&mut self.c, id)
    }
    fn ingested_as(&mut self, dataset: &str, sha256: &str) -> Result<Option<i64>> {
        ledger::ingested_with(&mut self.c, dataset, sha256)
    }
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
        ledger::rejects(&mut self.c, id, limit)
    }
    fn state_counts(&mut self) -> Result<BTreeMap<FileState, u64>> {
        ledger::state_counts(&mut self.c)
    }
    fn dataset_counts(&mut self) -> Result<Vec<DatasetCounts>> {
        ledger::dataset_counts(&mut self.c)
    }
    fn last_activity(&mut self) -> Result<Option<String>> {
        ledger::last_activity(&mut self.c)
    }
    fn quarantine_counts(&mut self) -> Result<QuarantineCounts> {
        retention::quarantine_counts(&mut self.c)
    }
    fn activity_since(&mut self, since: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        retention::activity_since(&mut self.c, since)
    }
    fn prune_candidates(
        &mut self,
        area: Area,
        before: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<FileRow>> {
        retention::candidates(&mut self.c, area, before, after, limit)
    }
    fn mark_pruned(&mut self, id: i64, at: &str) -> Result<bool> {
        retention::mark_pruned(&mut self.c, id, at)
    }
    fn forgettable(&mut self, before: &str, pruned_now: &[i64]) -> Result<Vec<i64>> {
        retention::forgettable(&mut self.c, before, pruned_now)
    }
    fn forget(&mut self, id: i64, dry_run: bool) -> Result<u64> {
        retention::forget(&mut self.c, id, dry_run)
    }
    fn discard(&mut self, id: i64, reason: &str, at: &str) -> Result<bool> {
        retention::discard(&mut self.c, id, reason, at)
    }
    fn tables(&mut self) -> Result<Vec<(String, String)>> {
        registry::tables(&mut self.c)
    }
    fn table_or_planned(&mut self, dataset: &str) -> Result<(String, bool)> {
        registry::table_or_planned(&mut self.c, dataset)
    }
    fn last_success(&mut self) -> Result<Vec<(String, String)>> {
        retention::last_success(&mut self.c)
    }
    fn table_owner(&mut self, table: &str) -> Result<Option<String>> {
        registry::table_owner(&mut self.c, table)
    }
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<crate::store::names::ColumnType>>> {
        registry::table_types(&mut self.c, table)
    }
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str {
        binary::PgType::sql_for(ty)
    }
    fn key_indexes(&mut self) -> Result<Vec<super::KeyIndexStatus>> {
        rekey::key_indexes(&mut self.c)
    }
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>> {
        self.registry.column(&mut self.c, dataset, key)
    }
    fn key_lookup(
        &mut self,
        keys: &mut super::keys::TableKeys,
        ins: &ChunkInsert,
    ) -> Result<Vec<Option<(i64, super::keys::Seen)>>> {
        keys::read_lookup(&mut self.c, keys, ins)
    }
    fn targets(&mut self) -> Result<Vec<TargetStatus>> {
        export::targets(&mut self.c)
    }
    fn target_dirs(&mut self, dataset: &str) -> Result<Vec<(String, String)>> {
        export::target_dirs(&mut self.c, dataset)
    }
    fn upsert_target(&mut self, key: &TargetKey, dir: &str) -> Result<()> {
        export::upsert_target(&mut self.c, key, dir)
    }
    fn plan_batch(
        &mut self,
        key: &TargetKey,
        table: &str,
        max_rows: u64,
        make: &mut dyn FnMut(BatchRange) -> BatchPlan,
    ) -> Result<Option<(BatchPlan, bool)>> {
        // Batches are found by id range: the table needs its `_id` index from now on.
        tables::ensure_id_index(&mut self.c, table)?;
        export::plan_batch(&mut self.c, key, table, max_rows, make)
    }
    fn read_batch(
        &mut self,
        table: &str,
        plan: &BatchPlan,
        record: &mut dyn FnMut(&dyn Record) -> Result<()>,
    ) -> Result<u64> {
        export::read_batch(&mut self.c, table, plan, record)
    }
    fn commit_batch(
        &mut self,
        key: &TargetKey,
        plan: &BatchPlan,
        sha256: &str,
        bytes: u64,
    ) -> Result<()> {
        export::commit_batch(&mut self.c, key, plan, sha256, bytes)
    }
    fn watermark(&mut self, key: &TargetKey) -> Result<i64> {
        export::watermark(&mut self.c, key)
    }
    fn lock_target(&mut self, key: &TargetKey) -> Result<bool> {
        Ok(self
            .c
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2 || '/' || $3))",
                &[&LOCK_CLASS, &key.dataset, &key.target],
            )?
            .get(0))
    }

    fn remote_files(&mut self, source: &str) -> Result<Vec<crate::store::RemoteRow>> {
        remote::files(&mut self.c, source)
    }
    fn remote_claims(
        &mut self,
        claims: &[(crate::store::RemoteKey, Option<String>)],
        owner: &str,
    ) -> Result<Vec<bool>> {
        remote::claims(&mut self.c, claims, owner)
    }
    fn remote_committed(
        &mut self,
        keys: &[crate::store::RemoteKey],
        state: crate::store::RemoteState,
        owner: &str,
        release: bool,
    ) -> Result<Vec<bool>> {
        remote::committed(&mut self.c, keys, state, owner, release)
    }
    fn remote_forget(&mut self, keys: &[crate::store::RemoteKey]) -> Result<()> {
        remote::forget(&mut self.c, keys)
    }
    fn channel_open(&mut self, channel: &str) -> Result<()> {
        deliveries::open(&mut self.c, channel)
    }
    fn deliveries_due(
        &mut self,
        channel: &str,
        covers: &crate::store::Covers,
        now: &str,
        limit: u64,
    ) -> Result<Vec<(FileRow, u32)>> {
        deliveries::due(&mut self.c, channel, covers, now, limit)
    }
    fn channel_advance(
        &mut self,
        channel: &str,
        covers: &crate::store::Covers,
        horizon: &str,
    ) -> Result<()> {
        deliveries::advance(&mut self.c, channel, covers, horizon)
    }
    fn delivery_name_taken(&mut self, channel: &str, name: &str, file_id: i64) -> Result<bool> {
        deliveries::name_taken(&mut self.c, channel, name, file_id)
    }
    fn delivery_done(&mut self, channel: &str, file_id: i64, name: &str) -> Result<()> {
        deliveries::done(&mut self.c, channel, file_id, name)
    }
    fn delivery_failed(
        &mut self,
        channel: &str,
        file_id: i64,
        error: &str,
        retry_at: &str,
    ) -> Result<()> {
        deliveries::failed(&mut self.c, channel, file_id, error, retry_at)
    }
    fn channels(
        &mut self,
        covers: &[(String, crate::store::Covers)],
    ) -> Result<Vec<crate::store::ChannelStatus>> {
        deliveries::channels(&mut self.c, covers)
    }
    fn remote_release(&mut self, key: &crate::store::RemoteKey, owner: &str) -> Result<()> {
        remote::release(&mut self.c, key, owner)
    }
    fn remote_ledger(&mut self, key: &crate::store::RemoteKey) -> Result<Option<i64>> {
        remote::ledger(&mut self.c, key)
    }
    fn remote_mark(
        &mut self,
        key: &crate::store::RemoteKey,
        state: crate::store::RemoteState,
        error: Option<&str>,
    ) -> Result<()> {
        remote::mark(&mut self.c, key, state, error)
    }
}

/// The writer's connection: group transactions with a savepoint per file, the id blocks of
/// the group, and what it caches within a group (dropped at each group, each rollback and
/// each time the schema lock is taken).
pub struct PgIngest {
    c: session::Session,
    ids: ids::Ids,
    keys: keys::Keys,
    owner: Option<String>,
    tables: tables::Tables,
    registry: registry::Registry,
    /// Whether this group holds the schema lock.
    schema_locked: bool,
}

impl PgIngest {
    pub fn open(t: &Target, owner: Option<&str>) -> Result<PgIngest> {
        let mut c = t.open()?;
        // A writer stopped mid-transaction (a frozen host) must not hold its locks, and with
        // them a takeover of its claims, for longer than a lease.
        c.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            t.lease.as_millis()
        ))?;
        Ok(PgIngest {
            c: session::Session::new(c),
            ids: ids::Ids::new(t),
            keys: keys::Keys::default(),
            owner: owner.map(str::to_string),
            tables: tables::Tables::default(),
            registry: registry::Registry::default(),
            schema_locked: false,
        })
    }

    fn forget(&mut self) {
        self.tables.invalidate();
        self.registry.invalidate();
    }

    /// Fencing: a process whose lease lapsed may have had its claims taken over by another
    /// host; it must not record anything for them. Checked with the database's clock at this
    /// statement (not the transaction's start). With `hold`, the owner row stays share-locked
    /// to the end of the transaction, so a takeover (an update of that row) waits for the
    /// commit and then finds the records this group committed; a writer that stalls right
    /// here holding it is ended by the server after `idle_in_transaction_session_timeout`.
    fn fence(&mut self, hold: bool) -> Result<()> {
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        let lock = if hold { " FOR SHARE" } else { "" };
        let ok = self.c.get()?.query_opt(
            &format!(
                "SELECT 1 FROM ferry_owners WHERE token = $1 \
                 AND expires_at > statement_timestamp() AND adopted_by IS NULL{lock}"
            ),
            &[owner],
        )?;
        if ok.is_none() {
            let _ = self.c.abandon().batch_execute("ROLLBACK");
            bail!(LeaseLost);
        }
        Ok(())
    }

    fn end_group(&mut self) {
        self.ids.end_group();
        self.schema_locked = false;
        self.forget();
    }
}

/// The advisory lock key of a file's identity (its dataset and content).
fn identity_key(dataset: &str, sha256: &str) -> String {
    format!("{dataset}/{sha256}")
}

impl Ingest for PgIngest {
    fn begin(&mut self) -> Result<()> {
        self.c
            .get()?
            .batch_execute("BEGIN")
            .context("starting a transaction in the store")?;
        self.end_group();
        // A lapsed lease is found before any work, not only at the commit.
        self.fence(false)
    }

    fn commit(&mut self) -> Result<()> {
        // Every file's replaced records are gone by its end; this only makes sure of it.
        let logged = match self.c.get() {
            Ok(c) => self.tables.delete_replaced(c),
            Err(e) => Err(e),
        }
        .and_then(|()| self.keys.log(&mut self.c));
        if let Err(e) = logged.and_then(|()| self.fence(true)) {
            let _ = self.c.abandon().batch_execute("ROLLBACK");
            self.keys.rolled_back();
            self.end_group();
            return Err(e);
        }
        let r = self.c.get().and_then(|c| Ok(c.batch_execute("COMMIT")?));
        match &r {
            Ok(()) => self.keys.committed(),
            Err(_) => self.keys.rolled_back(),
        }
        self.end_group();
        r.context("committing to the store")
    }

    fn rollback(&mut self) {
        let _ = self.c.abandon().batch_execute("ROLLBACK");
        self.tables.forget_replaced();
        self.keys.rolled_back();
        self.end_group();
    }

    fn begin_file(&mut self) -> Result<()> {
        self.c.get()?.batch_execute("SAVEPOINT file")?;
        Ok(())
    }

    fn keep_file(&mut self) -> Result<()> {
        self.tables.delete_replaced(self.c.get()?)?;
        self.c.get()?.batch_execute("RELEASE SAVEPOINT file")?;
        self.keys.file_done();
        Ok(())
    }

    fn undo_file(&mut self) -> Result<()> {
        self.c
            .get()?
            .batch_execute("ROLLBACK TO SAVEPOINT file; RELEASE SAVEPOINT file")?;
        self.tables.forget_replaced();
        self.forget();
        self.keys.undo_file();
        Ok(())
    }

    fn seen(&mut self, path: &str, sha256: Option<&str>) -> Result<bool> {
        ledger::seen(self.c.get()?, path, sha256)
    }

    fn identity(&mut self, dataset: &str, sha256: &str) -> Result<Identity> {
        let got: bool = self
            .c
            .get()?
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &identity_key(dataset, sha256)],
            )?
            .get(0);
        if !got {
            return Ok(Identity::Busy);
        }
        Ok(
            match ledger::ingested_with(self.c.get()?, dataset, sha256)? {
                Some(id) => Identity::Stored(id),
                None => Identity::New,
            },
        )
    }

    fn wait_identity(&mut self, dataset: &str, sha256: &str) -> Result<()> {
        self.c.get()?.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_CLASS, &identity_key(dataset, sha256)],
        )?;
        Ok(())
    }

    fn insert_file(&mut self, f: &NewFile) -> Result<i64> {
        ledger::insert(self.c.get()?, f)
    }
    fn update_file(&mut self, id: i64, update: &FileUpdate) -> Result<()> {
        ledger::update(self.c.get()?, id, update)
    }
    fn file(&mut self, id: i64) -> Result<Option<FileRow>> {
        ledger::get(self.c.get()?, id)
    }
    fn add_rejects(&mut self, id: i64, rejects: &[RecordReject]) -> Result<()> {
        ledger::add_rejects(self.c.get()?, id, rejects)
    }
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>> {
        ledger::rejects(self.c.get()?, id, limit)
    }
    fn place_taken(&mut self, rel: &str) -> Result<bool> {
        ledger::place_taken(self.c.get()?, rel)
    }

    fn table(&mut self, dataset: &str) -> Result<Option<String>> {
        self.registry.table(self.c.get()?, dataset)
    }
    fn create_table_name(&mut self, dataset: &str, wanted: Option<&str>) -> Result<String> {
        self.lock_schema(false)?;
        let table = self.registry.create_table(self.c.get()?, dataset, wanted)?;
        // An adopted table's rows moved the id sequence past them: what is left of the block
        // in hand (taken before) could fall below them.
        self.ids.spend_block();
        Ok(table)
    }
    fn table_owner(&mut self, table: &str) -> Result<Option<String>> {
        registry::table_owner(self.c.get()?, table)
    }
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<crate::store::names::ColumnType>>> {
        registry::table_types(self.c.get()?, table)
    }
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str {
        binary::PgType::sql_for(ty)
    }
    fn table_columns(&mut self, table: &str) -> Result<HashMap<String, String>> {
        Ok(self
            .tables
            .info(self.c.get()?, table)?
            .map(|i| i.lower_map())
            .unwrap_or_default())
    }
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>> {
        self.registry.column(self.c.get()?, dataset, key)
    }
    fn assign_column(
        &mut self,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        record: bool,
    ) -> Result<(String, bool)> {
        if record {
            self.lock_schema(false)?;
        }
        self.registry
            .assign_column(self.c.get()?, dataset, key, existing, reserved, record)
    }
    fn ensure_columns(&mut self, table: &str, columns: &[NewColumn], key: &[String]) -> Result<()> {
        let known = self
            .tables
            .info(self.c.get()?, table)?
            .map(|i| i.lower_map());
        let missing = match &known {
            None => true,
            Some(k) => {
                columns
                    .iter()
                    .any(|col| !k.contains_key(&col.name.to_lowercase()))
                    || (!key.is_empty() && !k.contains_key("_key"))
            }
        };
        if !missing {
            return Ok(());
        }
        self.lock_schema(false)?;
        self.tables
            .ensure(self.c.get()?, table, columns, !key.is_empty())
    }
    fn shared_schema(&self) -> bool {
        true
    }
    fn lock_schema(&mut self, restartable: bool) -> Result<bool> {
        if self.schema_locked {
            return Ok(true);
        }
        let got: bool = self
            .c
            .get()?
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_SCHEMA],
            )?
            .get(0);
        if !got {
            if restartable {
                return Ok(false);
            }
            self.c.get()?.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_SCHEMA],
            )?;
        }
        self.schema_locked = true;
        // Another host may have changed names or tables until now.
        self.forget();
        Ok(true)
    }

    fn insert_chunk(&mut self, ins: &ChunkInsert) -> Result<ChunkStored> {
        self.tables
            .insert(&mut self.c, &mut self.ids, &mut self.keys, ins)
    }

    fn key_ready(
        &mut self,
        table: &str,
        def: Option<&super::keys::def::KeyDef>,
    ) -> Result<super::KeyReady> {
        rekey::key_ready(self.c.get()?, table, def)
    }

    fn rekey(
        &mut self,
        table: &str,
        how: &super::Rekey,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<super::keys::rekey::Rekeyed>> {
        self.begin()?;
        let r = self
            .lock_schema(false)
            .and_then(|_| rekey::rekey(&mut self.c, table, how, stop));
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
        let done = self
            .keys
            .finish(&mut self.c, stop)
            .and_then(|changed| match changed {
                Some(true) => self.commit().map(|()| true),
                _ => Ok(false),
            });
        match done {
            Ok(true) => Ok(()),
            Ok(false) => {
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
        super::names::MAX_DATA_COLUMNS_POSTGRES
    }

    fn classify(&self, e: &anyhow::Error) -> Failure {
        classify(e)
    }
}

/// This process's lease lapsed: it may not record anything for its claims.
#[derive(Debug)]
struct LeaseLost;

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "this process's lease in the store lapsed; its claims may have been taken over, so \
             it records nothing more under this identity",
        )
    }
}

impl std::error::Error for LeaseLost {}

/// The server could not be reached or refused the session. Its message names the store by
/// `describe` (user, host, port, database), never the password.
#[derive(Debug)]
pub struct Unreachable {
    store: String,
    error: postgres::Error,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to the store {}: {}",
            self.store,
            reason(&self.error)
        )
    }
}

/// A PostgreSQL error as an operator needs it: the server's own message (the database or role
/// that does not exist, the password refused) with its SQLSTATE, detail and hint, or the cause
/// beneath a connection failure (refused, timed out) — never "db error" alone.
pub fn reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        if *db.code() == SqlState::INVALID_PASSWORD {
            s.push_str("; ferry takes the password from PGPASSWORD or the URL");
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

impl std::error::Error for Unreachable {}

impl Unreachable {
    /// Whether waiting may help: the server is down, starting, shutting down or out of
    /// connections, or the network failed. Not a wrong password, database or user.
    fn may_pass(&self) -> bool {
        match self.error.code() {
            None => true,
            Some(c) => {
                c.code().starts_with("08")
                    || c.code().starts_with("53")
                    || c.code().starts_with("57P")
            }
        }
    }
}

/// Whether an error means the store cannot be reached for now (see `Unreachable::may_pass`),
/// or a connection that was open broke.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(u) = c.downcast_ref::<Unreachable>() {
            return u.may_pass();
        }
        c.downcast_ref::<postgres::Error>().is_some_and(|pg| {
            pg.is_closed()
                || pg
                    .code()
                    .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
        })
    })
}

/// Whether an error is a transaction that lost to another (deadlock, serialization failure, a
/// lock not available, or a unique index that another host's concurrent commit filled first:
/// a file identity stored at the same moment).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<postgres::Error>())
        .filter_map(|pg| pg.code())
        .any(|code| {
            code.code().starts_with("40")
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::UNIQUE_VIOLATION
        })
}

/// What a PostgreSQL error means for the file being stored.
fn classify(e: &anyhow::Error) -> Failure {
    if e.chain().any(|c| c.is::<LeaseLost>()) {
        return Failure::Machine;
    }
    if let Some(u) = e
        .chain()
        .find_map(|c| c.downcast_ref::<binary::Unsupported>())
    {
        return Failure::Content(Reject::new(
            Kind::StoreUnsupportedValue,
            Stage::Store,
            format!("a value PostgreSQL cannot hold as it is: {u}"),
        ));
    }
    let Some(pg) = e.chain().find_map(|c| c.downcast_ref::<postgres::Error>()) else {
        return Failure::Other;
    };
    let Some(code) = pg.code() else {
        // No SQLSTATE: the connection (closed, refused, timed out).
        return Failure::Machine;
    };
    let class = &code.code()[..2];
    let text = format!("{e:#}");
    if *code == SqlState::UNIQUE_VIOLATION {
        // Another host committed the same file while this group ran: redone, the group finds
        // it stored.
        return Failure::Machine;
    }
    if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        return Failure::Content(Reject::new(
            Kind::RecordTooBig,
            Stage::Store,
            format!("a value or record is larger than the store accepts: {text}"),
        ));
    }
    if *code == SqlState::TOO_MANY_COLUMNS {
        return Failure::Content(Reject::new(
            Kind::SchemaTooManyColumns,
            Stage::Store,
            format!("the table would have more columns than the store allows: {text}"),
        ));
    }
    match class {
        // Connection, resources (disk full), operator intervention, system errors, and
        // transactions that lost to another (deadlock, serialization): about the store, not
        // the file. The group is redone by recovery.
        "08" | "53" | "57" | "58" | "40" | "55" | "XX" => Failure::Machine,
        "22" => Failure::Content(Reject::new(
            Kind::StoreUnsupportedValue,
            Stage::Store,
            format!("a value PostgreSQL does not accept: {text}"),
        )),
        _ => Failure::Other,
    }
}
