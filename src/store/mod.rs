//! The storage seam: everything ferry keeps — the ledger of files, the datasets' tables and the
//! names in them, record keys, export state — behind two traits, so that no SQL exists outside
//! this folder and a second backend is a sibling of `sqlite/`.
//!
//! - [`Store`]: what the commands and recovery ask and record (ledger rows and counts, the
//!   registry of names, export targets and batches, a batch's records).
//! - [`Ingest`]: the writer's one writing connection. Files are stored in group transactions
//!   (`begin`/`commit`) with one savepoint per file (`begin_file`/`keep_file`/`undo_file`);
//!   `insert_chunk` stores a chunk's records and owns record-key deduplication, because that is
//!   where backends differ most (SQLite: one writer at a time, an index in memory; a shared
//!   server: constraints in the database).
//!
//! The rules that are not about storage stay out: which column a file column takes is decided
//! by the pipeline with the registry's help (`names` holds the naming rules every backend
//! shares); what a duplicate means, when to commit, what to record — the writer's.
//!
//! Adding a backend: implement `Store` and `Ingest` in `store/<backend>/`, give it migrations
//! of its own, and choose it in `open`/`open_ingest`. Nothing in `pipeline/`, `export/` or
//! `cmd/` changes.

pub mod keys;
pub mod names;
pub mod postgres;
pub mod sqlite;

use crate::format::ColumnKey;
use crate::record::Chunk;
use crate::reject::{RecordReject, Reject};
use crate::spool::{FileLocks, Liveness, Spool};
use crate::typed::ColType;
use anyhow::Result;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Time as the ledger stores it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The states a file ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileState {
    Ingested,
    Duplicate,
    Quarantined,
}

impl FileState {
    pub const ALL: [FileState; 3] = [
        FileState::Ingested,
        FileState::Duplicate,
        FileState::Quarantined,
    ];

    pub fn id(self) -> &'static str {
        match self {
            FileState::Ingested => "ingested",
            FileState::Duplicate => "duplicate",
            FileState::Quarantined => "quarantined",
        }
    }

    pub fn from_id(s: &str) -> Option<FileState> {
        FileState::ALL.into_iter().find(|st| st.id() == s)
    }
}

impl Serialize for FileState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
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
    pub state: FileState,
    pub dataset: Option<&'a str>,
    pub format: Option<&'a str>,
    pub duplicate_of: Option<i64>,
    pub error: Option<&'a Reject>,
    /// Records rejected (a quarantined file: before it stopped).
    pub rejected: u64,
    pub attempt: u32,
    pub retry_of: Option<i64>,
    pub received_at: &'a str,
    pub hashed_at: Option<&'a str>,
    pub finished_at: &'a str,
    pub worker: &'a str,
    /// The remote file it was brought from (a `[[source]]`), if any.
    pub remote: Option<&'a RemoteKey>,
}

/// A remote file as its source lists it: the source's name, the path below the source's folder
/// or prefix, and its version (size and modification time; an S3 ETag). One claim per key: a
/// new version of a path is a new file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteKey {
    pub source: String,
    pub path: String,
    pub version: String,
}

/// Where a remote file is in its fetch protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteState {
    /// Held by an owner: being downloaded, or handed to its pipeline.
    Claimed,
    /// Its file committed (a ledger row names it); what `after` says is still to be done.
    Loaded,
    /// Loaded and disposed of as `after` says: nothing more to do.
    Finished,
}

impl RemoteState {
    pub fn id(self) -> &'static str {
        match self {
            RemoteState::Claimed => "claimed",
            RemoteState::Loaded => "loaded",
            RemoteState::Finished => "finished",
        }
    }

    pub fn from_id(s: &str) -> Option<RemoteState> {
        Some(match s {
            "claimed" => RemoteState::Claimed,
            "loaded" => RemoteState::Loaded,
            "finished" => RemoteState::Finished,
            _ => return None,
        })
    }
}

/// A remote file the store knows.
#[derive(Debug, Clone)]
pub struct RemoteRow {
    pub key: RemoteKey,
    pub state: RemoteState,
    /// The owner holding a claim.
    pub owner: Option<String>,
    /// Why the last disposal (`after`) failed, if it did.
    pub error: Option<String>,
}

/// A change to a ledger row written in the same transaction.
#[derive(Debug, Clone)]
pub enum FileUpdate<'a> {
    /// The file's records are stored: how many, in which format, with which warnings.
    Parsed {
        counts: Counts,
        format: &'a str,
        warnings: &'a [String],
        parsed_at: &'a str,
    },
    /// Where the file goes (archive or quarantine), relative to the spool root.
    StoredAt(&'a str),
    /// Where its rejected records' report goes, relative to the spool root.
    RejectsAt(&'a str),
    /// A member of the container (archive, OpenPGP file) with this ledger row.
    MemberOf(i64),
    /// Its content's identity, learned after its records (an OpenPGP file's plaintext).
    Identity { sha256: &'a str, size: u64 },
    /// The fingerprint of the key whose signature on the file verified (OpenPGP).
    Signer(&'a str),
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
    pub state: FileState,
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
    /// Records that replaced a stored record with the same key (`on_key = "update"`).
    pub updated_records: i64,
    /// Where the file's rejected records were written, relative to the spool root.
    pub rejects_at: Option<String>,
    /// What the file was stored with that a reader should know (columns stored under another
    /// name than the file's, blank lines skipped, …).
    pub warnings: Vec<String>,
    /// When retention (`ferry prune`) removed the file at `stored_at`.
    pub pruned_at: Option<String>,
    /// A quarantined file an operator gave up on (`ferry quarantine discard`): when, and why.
    pub discarded_at: Option<String>,
    pub discard_reason: Option<String>,
    /// The remote file it was pulled from (`[[source]]`): source, remote path, version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_version: Option<String>,
    /// The container (archive, OpenPGP file) it was a member of: that file's ledger row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<i64>,
    /// The fingerprint of the key whose signature on the file verified (OpenPGP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// What became of a file's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Written: new keys, and records that replaced a stored one.
    pub stored: u64,
    pub rejected: u64,
    /// Skipped: their key was already stored (and, with `on_key = "update"`, they changed
    /// nothing).
    pub duplicates: u64,
    /// Of `stored`, those that replaced a stored record.
    pub updated: u64,
}

/// Which ledger rows to list.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub state: Option<FileState>,
    pub dataset: Option<String>,
    pub limit: Option<u64>,
    /// Only rows no later attempt retried (the latest attempt of each file).
    pub latest: bool,
    /// Only rows still waiting for a decision: not discarded, their file not pruned.
    pub open: bool,
    /// Only rows finished at or after this ledger time.
    pub since: Option<String>,
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
    /// Records that replaced a stored record with the same key.
    pub updated_records: u64,
    /// Files whose content was already ingested for the dataset.
    pub duplicates: u64,
    pub quarantined: u64,
}

/// Where retention removes files from: the archive (ingested and duplicate files) or the
/// quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Archive,
    Quarantine,
}

impl Area {
    pub fn id(self) -> &'static str {
        match self {
            Area::Archive => "archive",
            Area::Quarantine => "quarantine",
        }
    }
}

/// Quarantined files (their latest attempt) by what became of them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct QuarantineCounts {
    /// Waiting for a decision: in quarantine/, neither discarded nor pruned.
    pub open: u64,
    /// Given up on by an operator (`quarantine discard`).
    pub discarded: u64,
    /// Removed by retention without a decision.
    pub pruned: u64,
}

/// A keyed table's index, as `ferry status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyIndexStatus {
    pub table: String,
    /// The key as recorded: `(vin, make, year)`.
    pub key: String,
    /// When it was recorded (the table was last re-keyed).
    pub defined_at: String,
    pub runs: u64,
    /// Keys in the runs (replaced records' entries included until a merge drops them).
    pub indexed: u64,
    /// Keyed records stored after the runs (every writer reads them when it starts).
    pub tail: u64,
}

/// A column to create in a dataset table.
#[derive(Debug, Clone)]
pub struct NewColumn {
    pub name: String,
    pub ty: ColType,
}

/// A chunk of one file's records, with where each cell goes.
pub struct ChunkInsert<'a> {
    pub dataset: &'a str,
    pub table: &'a str,
    /// Per chunk cell: the table column it goes to (`None`: not stored).
    pub columns: &'a [Option<String>],
    /// Per key column of the dataset: the chunk cell holding it (empty: no key).
    pub key_cells: &'a [Option<usize>],
    /// What a record whose key is stored does (with a key).
    pub rule: &'a keys::Rule,
    pub file_id: i64,
    pub chunk: &'a Chunk,
}

/// What `insert_chunk` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkStored {
    /// Records written: new keys, and those that replaced a stored record.
    pub stored: u64,
    /// Of `stored`, the records that replaced a stored one (`on_key = "update"`).
    pub updated: u64,
    /// Records not stored: their key was stored before (by any file) and nothing changed.
    pub duplicates: u64,
    /// Records refused because their key is stored (`on_key = "reject"`).
    pub rejects: Vec<RecordReject>,
}

/// What a table needs before records are stored under a key (`Ingest::key_ready`).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyReady {
    Ready,
    /// Its records must be re-keyed first: they were keyed under `from` (`None`: under no
    /// recorded definition — no key, or one ferry did not record yet).
    Rekey {
        from: Option<keys::def::KeyDef>,
    },
}

/// A re-key asked of the store (`Ingest::rekey`).
pub struct Rekey<'a> {
    pub def: &'a keys::def::KeyDef,
    /// The dataset's version column and type (what `--keep latest` orders by).
    pub version: Option<(&'a str, crate::typed::ColType)>,
    pub keep: Option<keys::rekey::Keep>,
    /// Commit it (false: a dry run, always rolled back).
    pub apply: bool,
}

impl Rekey<'_> {
    /// Whether a re-key's transaction commits: it ran, found no conflict, and was asked to
    /// apply (anything else — a dry run, a conflict, an error — is rolled back). One verdict
    /// for both stores.
    pub fn commits(&self, r: &Result<Option<keys::rekey::Rekeyed>>) -> bool {
        self.apply && matches!(r, Ok(Some(out)) if out.conflict.is_none())
    }
}

/// Whether a file's content is new to its dataset (`Ingest::identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    New,
    /// Ingested before, as this ledger row.
    Stored(i64),
    /// Another writer is storing the same content right now.
    Busy,
}

/// What kind of failure a storage error is, for the writer's decision.
#[derive(Debug)]
pub enum Failure {
    /// About the database or the machine (disk full, locked, corrupt): stop, and let recovery
    /// redo the group rather than blame a file.
    Machine,
    /// The file's content runs into a limit of the store: quarantine it with this reason.
    Content(Reject),
    /// Anything else: quarantine the file as `io.store`.
    Other,
}

/// An export target: a dataset's records written to one folder, with its own watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey<'a> {
    pub dataset: &'a str,
    pub target: &'a str,
}

/// A target as `ferry export --list` and `ferry status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub dataset: String,
    pub target: String,
    pub dir: String,
    pub watermark: i64,
    pub pending_records: u64,
    pub batches: u64,
    pub exported_records: u64,
    pub last_export: Option<String>,
    /// A batch planned by an export that did not finish (it is rewritten by the next one).
    pub interrupted_batch: Option<String>,
}

/// One export batch as planned (before a byte is written) and, once committed, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    pub name: String,
    /// `csv` or `ndjson`.
    pub format: String,
    pub gzip: bool,
    pub first: i64,
    pub last: i64,
    pub rows: u64,
    pub created_at: String,
    /// The dataset's columns when the batch was planned: a column added since must not change
    /// a batch that is written again.
    pub columns: Vec<String>,
}

/// The next records after a target's watermark, as `Store::plan_batch` found them.
#[derive(Debug, Clone)]
pub struct BatchRange {
    pub first: i64,
    pub last: i64,
    pub rows: u64,
    /// The table's data columns, read in the same transaction as the range.
    pub columns: Vec<String>,
}

/// One stored record, as a batch's reader sees it: its values by column position.
pub trait Record {
    fn value(&self, i: usize) -> Result<Value<'_>>;
}

/// A stored value, as a batch's reader sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
}

/// Which finished files a delivery channel (receipts, a webhook) owes a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covers {
    /// The files of a dataset.
    Dataset(String),
    /// The files pulled from a source (`[[source]]`).
    Source(String),
    /// Every file.
    All,
}

/// A delivery channel's state, for `status` and `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelStatus {
    pub channel: String,
    /// Finished files it has delivered a notice of.
    pub delivered: u64,
    /// Finished files whose notice it still owes (failing ones included).
    pub owed: u64,
    /// Of those, the ones whose last attempt failed (retried with back-off).
    pub failing: u64,
    /// The last failure, while the channel is failing.
    pub last_error: Option<String>,
}

/// What the commands and recovery ask of the store, and record in it.
pub trait Store {
    // The ledger.
    fn files(&mut self, filter: &FileFilter) -> Result<Vec<FileRow>>;
    fn file(&mut self, id: i64) -> Result<Option<FileRow>>;
    /// The committed ledger row of a claim, if its file got that far.
    fn by_claim(&mut self, claim: &str) -> Result<Option<FileRow>>;
    /// The ledger row that retried this one, if any.
    fn retried_by(&mut self, id: i64) -> Result<Option<i64>>;
    /// The file of this dataset ingested with this content, if any (`run --dry-run`).
    fn ingested_as(&mut self, dataset: &str, sha256: &str) -> Result<Option<i64>>;
    /// A file's rejected records in file order, at most `limit`.
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>>;
    /// Files by the state of their latest attempt.
    fn state_counts(&mut self) -> Result<BTreeMap<FileState, u64>>;
    /// Per dataset: files and records, each file counted once (its latest attempt).
    fn dataset_counts(&mut self) -> Result<Vec<DatasetCounts>>;
    /// When the last file was finished.
    fn last_activity(&mut self) -> Result<Option<String>>;
    /// Quarantined files by what became of them.
    fn quarantine_counts(&mut self) -> Result<QuarantineCounts>;
    /// Per dataset: files finished (any outcome, every attempt) and records stored since
    /// `since` (ledger time).
    fn activity_since(&mut self, since: &str) -> Result<BTreeMap<String, (u64, u64)>>;

    // Retention.
    /// Rows whose file retention may remove from `area`: placed there, finished before
    /// `before`, not pruned yet (in the quarantine: only a file's latest attempt — a retried
    /// one left it), with ids after `after` in id order, at most `limit`.
    fn prune_candidates(
        &mut self,
        area: Area,
        before: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<FileRow>>;
    /// Records that the file at a row's place was removed (`false`: another process did first).
    fn mark_pruned(&mut self, id: i64, at: &str) -> Result<bool>;
    /// Rows retention may forget: finished before `before`, not ingested (an ingested row is
    /// the identity that keeps a re-sent file from loading twice, and the id its records
    /// carry), nothing left on disk (pruned, or never placed), the latest attempt of their
    /// file, and no duplicate's original. Rows in `pruned_now` count as pruned (a dry run's
    /// files that the same pass would remove).
    fn forgettable(&mut self, before: &str, pruned_now: &[i64]) -> Result<Vec<i64>>;
    /// Deletes a row with its earlier attempts and their rejected records, in one transaction;
    /// how many rows (with `dry_run`: would be, deleting nothing).
    fn forget(&mut self, id: i64, dry_run: bool) -> Result<u64>;
    /// Marks a quarantined file's latest attempt as given up on (`false`: it is not an open
    /// quarantined row any more).
    fn discard(&mut self, id: i64, reason: &str, at: &str) -> Result<bool>;

    // The registry of names.
    /// Every dataset with its table, by name.
    fn tables(&mut self) -> Result<Vec<(String, String)>>;
    /// The table a dataset has, or would get if a file of it were stored now (`false`: not
    /// yet).
    fn table_or_planned(&mut self, dataset: &str) -> Result<(String, bool)>;
    /// The dataset whose table `table` is, if one's is (see `Ingest::table_owner`).
    fn table_owner(&mut self, table: &str) -> Result<Option<String>>;
    /// An existing table's columns and types (see `Ingest::table_types`).
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<names::ColumnType>>>;
    /// The type this store gives a column of a declared type (see `Ingest::type_for`).
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str;
    /// When each dataset last ingested a file: (dataset, ledger time of its latest ingested
    /// row).
    fn last_success(&mut self) -> Result<Vec<(String, String)>>;
    /// The key index of every keyed table.
    fn key_indexes(&mut self) -> Result<Vec<KeyIndexStatus>>;
    /// The table column a file column of the dataset lands in, if it has one (a read).
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>>;
    /// For a dry run: the stored record each keyed row of a chunk shares its key with, and how
    /// it compares, found as a run would find it — with the judge's own index of the table
    /// (`keys`, brought up to date on first use) and reading only.
    fn key_lookup(
        &mut self,
        keys: &mut keys::TableKeys,
        ins: &ChunkInsert,
    ) -> Result<Vec<Option<(i64, keys::Seen)>>>;

    // Export state.
    fn targets(&mut self) -> Result<Vec<TargetStatus>>;
    /// The targets of a dataset and their folders.
    fn target_dirs(&mut self, dataset: &str) -> Result<Vec<(String, String)>>;
    /// Records a target (or its new folder).
    fn upsert_target(&mut self, key: &TargetKey, dir: &str) -> Result<()>;
    /// In one write transaction: the target's pending batch if an export was interrupted
    /// (`true`), else the next range after the watermark turned into a plan by `make` and
    /// recorded as pending; `None` when everything is exported.
    fn plan_batch(
        &mut self,
        key: &TargetKey,
        table: &str,
        max_rows: u64,
        make: &mut dyn FnMut(BatchRange) -> BatchPlan,
    ) -> Result<Option<(BatchPlan, bool)>>;
    /// Reads a batch's records in id order (values in `plan.columns` order), one callback per
    /// record; returns how many.
    fn read_batch(
        &mut self,
        table: &str,
        plan: &BatchPlan,
        record: &mut dyn FnMut(&dyn Record) -> Result<()>,
    ) -> Result<u64>;
    /// In one transaction: the batch recorded, the watermark moved, the pending batch cleared.
    fn commit_batch(
        &mut self,
        key: &TargetKey,
        plan: &BatchPlan,
        sha256: &str,
        bytes: u64,
    ) -> Result<()>;
    fn watermark(&mut self, key: &TargetKey) -> Result<i64>;
    /// Makes this connection the only exporter to the target across hosts until it closes
    /// (`false`: another holds it). One host's exports are kept apart by a lock file too.
    fn lock_target(&mut self, _key: &TargetKey) -> Result<bool> {
        Ok(true)
    }

    // Remote sources: one claim per remote file and version, shared by every host.
    /// The remote files of a source the store knows (claimed, loaded or finished).
    fn remote_files(&mut self, source: &str) -> Result<Vec<RemoteRow>>;
    /// Claims remote files for `owner`, in one transaction: for each, whether `owner` holds it
    /// now — a new claim, or one taken over from the dead owner given (it still held it).
    fn remote_claims(
        &mut self,
        claims: &[(RemoteKey, Option<String>)],
        owner: &str,
    ) -> Result<Vec<bool>>;
    /// In one transaction, for files `owner` handed to its pipeline: each one a ledger row names
    /// moves on to `state` (`true`); the others, with `release`, have `owner`'s claim dropped.
    fn remote_committed(
        &mut self,
        keys: &[RemoteKey],
        state: RemoteState,
        owner: &str,
        release: bool,
    ) -> Result<Vec<bool>>;
    /// Forgets finished remote files (no longer listed), in one transaction.
    fn remote_forget(&mut self, keys: &[RemoteKey]) -> Result<()>;
    /// Drops `owner`'s claim of a file that was not loaded (a download discarded, a file put
    /// back): the next listing judges it again.
    fn remote_release(&mut self, key: &RemoteKey, owner: &str) -> Result<()>;

    // Deliveries: one notice (receipt, webhook call) per finished file and channel.
    /// Opens a channel: files finished from now on are owed (an open channel is left as it is).
    fn channel_open(&mut self, channel: &str) -> Result<()>;
    /// Finished files (ingested, duplicate, quarantined) the channel owes and may try now (not
    /// delivered, not waiting for a retry after `now`), of those it `covers`, oldest first;
    /// with the attempts made so far.
    fn deliveries_due(
        &mut self,
        channel: &str,
        covers: &Covers,
        now: &str,
        limit: u64,
    ) -> Result<Vec<(FileRow, u32)>>;
    /// Moves the channel's start past what it no longer owes: to its oldest owed file, but never
    /// later than `horizon` (files finished after it may still be committing, on another host
    /// or with another clock), so a pass reads the recent ledger and the backlog, not all of it.
    fn channel_advance(&mut self, channel: &str, covers: &Covers, horizon: &str) -> Result<()>;
    /// Whether another file of the channel was delivered as `name`.
    fn delivery_name_taken(&mut self, channel: &str, name: &str, file_id: i64) -> Result<bool>;
    /// Records a notice delivered as `name`.
    fn delivery_done(&mut self, channel: &str, file_id: i64, name: &str) -> Result<()>;
    /// Records a failed attempt: why, and not before when to try again.
    fn delivery_failed(
        &mut self,
        channel: &str,
        file_id: i64,
        error: &str,
        retry_at: &str,
    ) -> Result<()>;
    /// Every open channel's counts, given what each covers.
    fn channels(&mut self, covers: &[(String, Covers)]) -> Result<Vec<ChannelStatus>>;
    /// The latest ledger row of a file brought from this remote file, if one committed.
    fn remote_ledger(&mut self, key: &RemoteKey) -> Result<Option<i64>>;
    /// Moves a remote file on to `state`, with the last disposal error (or none).
    fn remote_mark(
        &mut self,
        key: &RemoteKey,
        state: RemoteState,
        error: Option<&str>,
    ) -> Result<()>;
}

/// The writer's connection: the only one that stores files and records.
pub trait Ingest: Send {
    /// Starts a group transaction, waiting (and saying so) while another process writes.
    fn begin(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    /// Forgets the open group (after a machine error).
    fn rollback(&mut self);
    /// A file inside the group: its rows, ledger row, names and columns can be undone alone.
    fn begin_file(&mut self) -> Result<()>;
    fn keep_file(&mut self) -> Result<()>;
    fn undo_file(&mut self) -> Result<()>;

    /// Whether this exact file (same path, same content) is in the ledger already.
    fn seen(&mut self, path: &str, sha256: Option<&str>) -> Result<bool>;
    /// Whether a file's content is new to its dataset. `New` reserves it for the open group
    /// until it ends; `Busy`: another writer is storing the same content right now — commit
    /// what the group holds, then `wait_identity` in a new group and ask again.
    fn identity(&mut self, dataset: &str, sha256: &str) -> Result<Identity>;
    /// Waits until no other writer holds this content's identity (at the start of a group).
    fn wait_identity(&mut self, _dataset: &str, _sha256: &str) -> Result<()> {
        Ok(())
    }
    fn insert_file(&mut self, f: &NewFile) -> Result<i64>;
    fn update_file(&mut self, id: i64, update: &FileUpdate) -> Result<()>;
    fn file(&mut self, id: i64) -> Result<Option<FileRow>>;
    fn add_rejects(&mut self, id: i64, rejects: &[RecordReject]) -> Result<()>;
    fn rejects(&mut self, id: i64, limit: Option<u64>) -> Result<Vec<RecordReject>>;
    /// Whether a path under the spool root is already some file's place or report.
    fn place_taken(&mut self, rel: &str) -> Result<bool>;

    /// The dataset's table, if it has one.
    fn table(&mut self, dataset: &str) -> Result<Option<String>>;
    /// Records the table of a dataset that has none: `wanted` (the dataset's `table`, checked
    /// by the caller), else one decided by `names::table_name_for`.
    fn create_table_name(&mut self, dataset: &str, wanted: Option<&str>) -> Result<String>;
    /// The dataset whose table `table` is, if one's is.
    fn table_owner(&mut self, table: &str) -> Result<Option<String>>;
    /// An existing table's columns and types (`None`: no such table).
    fn table_types(&mut self, table: &str) -> Result<Option<Vec<names::ColumnType>>>;
    /// The type this store gives a column of a declared type (as `table_types` spells it), and
    /// its integer and text types.
    fn type_for(&self, ty: crate::typed::ColType) -> &'static str;
    /// A table's columns: lowercased name → name as created (empty if it does not exist yet).
    fn table_columns(&mut self, table: &str) -> Result<HashMap<String, String>>;
    /// The table column a file column of the dataset lands in, if it has one.
    fn file_column(&mut self, dataset: &str, key: &ColumnKey) -> Result<Option<String>>;
    /// The table column a file column without one would take: an existing column of exactly
    /// its name that no other file column owns and that is not `reserved` (`Some`, with
    /// `false`), or a new free name (`true`: to create). `existing`: the table's columns by
    /// lowercased name. With `record`, the choice is recorded.
    fn assign_column(
        &mut self,
        dataset: &str,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
        record: bool,
    ) -> Result<(String, bool)>;
    /// Creates the table, or adds columns to it; with a record key (`key`: its table columns),
    /// also what the store needs to tell keys apart (`_key`, an index).
    fn ensure_columns(&mut self, table: &str, columns: &[NewColumn], key: &[String]) -> Result<()>;
    /// Whether names and tables are shared with writers on other hosts, so that changing them
    /// needs `lock_schema` first.
    fn shared_schema(&self) -> bool {
        false
    }
    /// Takes the lock on names and tables for the rest of the group (what was cached of them
    /// is read again). When another writer holds it: with `restartable` (nothing of the
    /// current file stored yet) returns `false` at once — undo the file, commit the group, and
    /// start the file again in a new one — else waits.
    fn lock_schema(&mut self, _restartable: bool) -> Result<bool> {
        Ok(true)
    }
    /// Stores a chunk's records as the dataset's `on_key` says: new keys stored, stored keys
    /// skipped, replaced or refused.
    fn insert_chunk(&mut self, insert: &ChunkInsert) -> Result<ChunkStored>;
    /// What `table` needs before records are stored under `def` (`None`: the dataset has no
    /// key — a definition recorded before is removed). In the open transaction.
    fn key_ready(&mut self, table: &str, def: Option<&keys::def::KeyDef>) -> Result<KeyReady>;
    /// Re-keys a table's stored records under `def` in a transaction of its own
    /// (`keys::rekey`); with a conflict — or without `apply`, a dry run — nothing changes.
    /// `None`: `stop` ended it.
    fn rekey(
        &mut self,
        table: &str,
        how: &Rekey,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<keys::rekey::Rekeyed>>;
    /// Writes the key indexes' tails as runs and merges runs, in a transaction of its own (at
    /// the end of a run, or when the writer is idle). Stops early, changing nothing, when `stop`
    /// says so.
    fn finish_keys(&mut self, _stop: &dyn Fn() -> bool) -> Result<()> {
        Ok(())
    }
    /// The most data columns a dataset table may have in this store.
    fn max_data_columns(&self) -> usize;

    /// What a storage error means for the file being stored.
    fn classify(&self, e: &anyhow::Error) -> Failure;
}

/// Where a spool's state is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded default: one SQLite file in the spool.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every ferry process on the spool (any host).
    Postgres(Box<postgres::Target>),
}

impl Location {
    /// The default for a spool: its SQLite file.
    pub fn of(spool: &Spool) -> Location {
        Location::Sqlite(spool.db.clone())
    }

    /// Where, for messages: the file, or `postgres://user@host:port/db` (never a password).
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(t) => t.describe(),
        }
    }

    /// How many writer threads (each with its own connection) a pipeline runs: one for SQLite,
    /// which lets one transaction write at a time; `[store] writers` for PostgreSQL.
    pub fn writers(&self) -> usize {
        match self {
            Location::Sqlite(_) => 1,
            Location::Postgres(t) => t.writers,
        }
    }

    /// Whether other hosts may share this store (and the spool on a network mount): owners
    /// then prove they are alive in the store, not with file locks.
    pub fn shared(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The store, for a command.
pub fn open(at: &Location) -> Result<Box<dyn Store>> {
    Ok(match at {
        Location::Sqlite(db) => Box::new(sqlite::SqliteStore::open(db)?),
        Location::Postgres(t) => Box::new(postgres::PgStore::open(t)?),
    })
}

/// The store if it has been set up (reporting commands create nothing).
pub fn open_existing(at: &Location) -> Result<Option<Box<dyn Store>>> {
    match at {
        Location::Sqlite(db) if !db.exists() => Ok(None),
        Location::Sqlite(_) => open(at).map(Some),
        Location::Postgres(t) => {
            Ok(postgres::PgStore::open_existing(t)?.map(|s| Box::new(s) as Box<dyn Store>))
        }
    }
}

/// The writer's connection. `owner`: the claim identity whose claims it stores (its liveness
/// is checked in every group transaction where other hosts could take its claims over).
pub fn open_ingest(at: &Location, owner: Option<&str>) -> Result<Box<dyn Ingest>> {
    Ok(match at {
        Location::Sqlite(db) => Box::new(sqlite::SqliteIngest::open(db)?),
        Location::Postgres(t) => Box::new(postgres::PgIngest::open(t, owner)?),
    })
}

/// Whether an error means a transaction lost to another writer (a deadlock the database broke,
/// a serialization failure): nothing of it happened, and doing it again is the remedy.
pub fn is_transient(e: &anyhow::Error) -> bool {
    postgres::is_transient(e)
}

/// Whether an error means the store cannot be reached for now (the server is down or
/// restarting, the network failed): waiting and trying again may help, unlike a wrong URL or
/// password.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    postgres::is_unreachable(e)
}

/// How owners of claims prove they are alive: file locks in the spool for SQLite (one host),
/// leases in the database for PostgreSQL (hosts sharing the spool over a network mount, where a
/// dead host's file locks cannot be trusted).
pub fn liveness(at: &Location, spool: &Spool) -> Result<Arc<dyn Liveness>> {
    Ok(match at {
        Location::Sqlite(_) => Arc::new(FileLocks::new(spool)),
        Location::Postgres(t) => Arc::new(postgres::Leases::open(t)?),
    })
}

impl names::TableLookup for dyn Ingest + '_ {
    fn registered(&mut self, dataset: &str) -> Result<Option<String>> {
        self.table(dataset)
    }
    fn owner(&mut self, table: &str) -> Result<Option<String>> {
        self.table_owner(table)
    }
    fn types(&mut self, table: &str) -> Result<Option<Vec<names::ColumnType>>> {
        self.table_types(table)
    }
    fn type_of(&self, ty: crate::typed::ColType) -> &'static str {
        self.type_for(ty)
    }
}

impl names::TableLookup for dyn Store + '_ {
    fn registered(&mut self, dataset: &str) -> Result<Option<String>> {
        Ok(self
            .tables()?
            .into_iter()
            .find(|(d, _)| d == dataset)
            .map(|(_, t)| t))
    }
    fn owner(&mut self, table: &str) -> Result<Option<String>> {
        self.table_owner(table)
    }
    fn types(&mut self, table: &str) -> Result<Option<Vec<names::ColumnType>>> {
        self.table_types(table)
    }
    fn type_of(&self, ty: crate::typed::ColType) -> &'static str {
        self.type_for(ty)
    }
}
