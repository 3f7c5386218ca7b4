//! Named events: the one place where what happens to a file is both logged and counted.
//!
//! The writer calls `Event::emit` once per file after its commit; that logs a sentence with
//! key/value fields, adds to the run's `Summary`, and bumps the process-wide counters that
//! `/metrics` serves. So the logs, the summary and the metrics cannot disagree.

use crate::reject::Reject;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What happened to one file.
#[derive(Debug)]
pub enum Event<'a> {
    Ingested(Ingested<'a>),
    Duplicate {
        path: &'a str,
        id: i64,
        original: i64,
        dataset: &'a str,
        bytes: u64,
    },
    Quarantined {
        path: &'a str,
        id: i64,
        dataset: Option<&'a str>,
        reject: &'a Reject,
        bytes: u64,
    },
    /// A container (archive, OpenPGP file) whose members all finished: each member has its
    /// own event.
    Unpacked {
        path: &'a str,
        id: i64,
        dataset: &'a str,
        members: u64,
        bytes: u64,
    },
    /// `--keep`: this exact file was handled before; nothing to do.
    Unchanged {
        path: &'a str,
    },
    /// The file changed while it was read; it goes back to wait until it is finished.
    Released {
        path: &'a str,
    },
    /// The file could not be read (permissions, …); it is left where it is.
    Left {
        path: &'a str,
        why: &'a str,
    },
    /// The file's outcome is committed, but it could not be moved to its place (or its
    /// quarantine copy written); it waits for the next run.
    Unplaced {
        path: &'a str,
        why: &'a str,
    },
}

/// A file whose records are stored.
#[derive(Debug)]
pub struct Ingested<'a> {
    pub path: &'a str,
    pub id: i64,
    pub dataset: &'a str,
    pub records: u64,
    /// Records set aside within `max_bad_records`.
    pub rejected: u64,
    /// Records not stored because their key was already stored.
    pub duplicate_records: u64,
    /// Of `records`, those that replaced a stored record with the same key.
    pub updated_records: u64,
    /// What the file was stored with that a reader should know (renamed columns).
    pub warnings: &'a [String],
    pub bytes: u64,
    /// From claim (or first read) to commit.
    pub latency: Duration,
}

impl Ingested<'_> {
    fn emit(&self, summary: &mut Summary, c: &Counters) {
        let (path, dataset) = (self.path, self.dataset);
        let (id, records, rejected, duplicate_records, updated_records) = (
            self.id,
            self.records,
            self.rejected,
            self.duplicate_records,
            self.updated_records,
        );
        let mut losses = Vec::new();
        if rejected > 0 {
            losses.push(format!(
                "{rejected} record{} set aside (see its .rejects.ndjson)",
                crate::reject::plural(rejected as usize)
            ));
        }
        if duplicate_records > 0 {
            losses.push(format!(
                "{duplicate_records} record{} not stored: key already stored",
                crate::reject::plural(duplicate_records as usize)
            ));
        }
        losses.extend(self.warnings.iter().cloned());
        if losses.is_empty() {
            tracing::info!(
                path,
                id,
                dataset,
                records,
                updated_records,
                bytes = self.bytes,
                latency_ms = self.latency.as_millis() as u64,
                "file ingested"
            );
        } else {
            tracing::warn!(
                path,
                id,
                dataset,
                records,
                rejected,
                duplicate_records,
                updated_records,
                "file ingested, but not as sent: {}",
                losses.join("; ")
            );
            note(&mut summary.losses, path, losses.join("; "));
        }
        summary.ingested += 1;
        summary.records += records;
        summary.rejected_records += rejected;
        summary.duplicate_records += duplicate_records;
        summary.updated_records += updated_records;
        summary.bytes += self.bytes;
        let d = summary.datasets.entry(dataset.to_string()).or_default();
        d.files += 1;
        d.records += records;
        d.rejected += rejected;
        d.duplicate_records += duplicate_records;
        d.updated_records += updated_records;
        self.count(c);
    }

    fn count(&self, c: &Counters) {
        c.ingested.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(self.records, Ordering::Relaxed);
        c.rejected_records
            .fetch_add(self.rejected, Ordering::Relaxed);
        c.duplicate_records
            .fetch_add(self.duplicate_records, Ordering::Relaxed);
        c.updated_records
            .fetch_add(self.updated_records, Ordering::Relaxed);
        c.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        let now_ms = chrono::Utc::now().timestamp_millis();
        c.last_success_ms.store(now_ms, Ordering::Relaxed);
        c.dataset(self.dataset, |d| {
            d.ingested += 1;
            d.records += self.records;
            d.rejected_records += self.rejected;
            d.duplicate_records += self.duplicate_records;
            d.updated_records += self.updated_records;
            d.bytes += self.bytes;
            d.last_success_ms = now_ms;
        });
        let ms = self.latency.as_millis() as u64;
        // Slower than the last bound: counted only in the total (the +Inf bucket).
        if let Some(b) = LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b) {
            c.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        c.latency_sum_us
            .fetch_add(self.latency.as_micros() as u64, Ordering::Relaxed);
        c.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts per dataset in a summary.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct DatasetTally {
    pub files: u64,
    pub records: u64,
    pub rejected: u64,
    pub duplicate_records: u64,
    /// Of `records`, those that replaced a stored record with the same key.
    pub updated_records: u64,
}

/// A file and a sentence about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Note {
    pub path: String,
    pub what: String,
}

/// The most notes a summary keeps of each list (the counts are always complete).
pub const MAX_NOTES: usize = 100;

/// What a run (or a daemon, so far) did.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub ingested: u64,
    pub duplicate: u64,
    pub quarantined: u64,
    /// Containers (archives, OpenPGP files) whose members all finished.
    pub unpacked: u64,
    pub unchanged: u64,
    pub released: u64,
    /// Files that could not be read and were left where they are.
    pub left: u64,
    /// Files whose outcome is recorded but that could not be moved to their place.
    pub unplaced: u64,
    pub records: u64,
    pub rejected_records: u64,
    pub duplicate_records: u64,
    /// Of `records`, those that replaced a stored record with the same key.
    pub updated_records: u64,
    pub bytes: u64,
    /// Ingested files with records set aside, duplicate keys or warnings, and what.
    pub losses: Vec<Note>,
    /// Files an operator must look at (left unread, not placed), and why.
    pub problems: Vec<Note>,
    pub datasets: BTreeMap<String, DatasetTally>,
    /// `run --dry-run`: what would become of each file (nothing was changed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// `ferry run`: what became of each file (`list_files`; a daemon keeps no such list).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Verdict>,
    /// Whether to keep `files`.
    #[serde(skip)]
    pub list_files: bool,
}

impl Event<'_> {
    /// The file's outcome as one entry of `ferry run --json`'s `files`.
    fn outcome(&self) -> Verdict {
        let mut v = Verdict::new(String::new(), None, "");
        match *self {
            Event::Ingested(ref f) => {
                v.path = f.path.into();
                v.dataset = Some(f.dataset.into());
                v.outcome = "ingested";
                v.id = Some(f.id);
                v.records = f.records;
                v.rejected_records = f.rejected;
                v.duplicate_records = f.duplicate_records;
                v.updated_records = f.updated_records;
            }
            Event::Duplicate {
                path,
                id,
                original,
                dataset,
                ..
            } => {
                v.path = path.into();
                v.dataset = Some(dataset.into());
                v.outcome = "duplicate";
                v.id = Some(id);
                v.duplicate_of = Some(original);
            }
            Event::Quarantined {
                path,
                id,
                dataset,
                reject,
                ..
            } => {
                v.path = path.into();
                v.dataset = dataset.map(str::to_string);
                v.outcome = "quarantined";
                v.id = Some(id);
                v.error_kind = Some(reject.kind.id());
                v.reason = Some(reject.message.clone());
            }
            Event::Unpacked {
                path, id, dataset, ..
            } => {
                v.path = path.into();
                v.dataset = Some(dataset.to_string());
                v.outcome = "unpacked";
                v.id = Some(id);
            }
            Event::Unchanged { path } => {
                v.path = path.into();
                v.outcome = "unchanged";
            }
            Event::Released { path } => {
                v.path = path.into();
                v.outcome = "released";
            }
            Event::Left { path, why } | Event::Unplaced { path, why } => {
                v.path = path.into();
                v.outcome = "left";
                v.reason = Some(why.into());
            }
        }
        v
    }
}

/// What a run would do with one file (`run --dry-run`), or did (`ferry run --json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub path: String,
    pub dataset: Option<String>,
    /// `ingest`, `duplicate`, `quarantine`, `left` or `changed` (a dry run); `ingested`,
    /// `duplicate`, `quarantined`, `unchanged`, `released` or `left` (a run).
    pub outcome: &'static str,
    /// The file's ledger row (a run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Records that would be stored.
    pub records: u64,
    /// Records that would not be stored because their key is stored already (or comes earlier
    /// in the run).
    pub duplicate_records: u64,
    pub rejected_records: u64,
    /// Of `records`, those that would replace (or replaced) a stored record with the same key.
    pub updated_records: u64,
    /// The file of the dataset already ingested with this content (`duplicate`); `None` with a
    /// duplicate of another file of the same dry run.
    pub duplicate_of: Option<i64>,
    pub error_kind: Option<&'static str>,
    pub reason: Option<String>,
}

impl Verdict {
    /// A file's outcome with nothing counted yet.
    pub fn new(path: String, dataset: Option<String>, outcome: &'static str) -> Verdict {
        Verdict {
            path,
            dataset,
            outcome,
            id: None,
            records: 0,
            duplicate_records: 0,
            rejected_records: 0,
            updated_records: 0,
            duplicate_of: None,
            error_kind: None,
            reason: None,
        }
    }
}

impl Summary {
    /// Files finished one way or another (or left), for "N files" lines.
    pub fn files(&self) -> u64 {
        self.ingested
            + self.duplicate
            + self.quarantined
            + self.unchanged
            + self.released
            + self.left
    }

    /// Adds another summary's counts (a run made of several pipelines).
    pub fn absorb(&mut self, o: Summary) {
        self.ingested += o.ingested;
        self.duplicate += o.duplicate;
        self.quarantined += o.quarantined;
        self.unpacked += o.unpacked;
        self.unchanged += o.unchanged;
        self.released += o.released;
        self.left += o.left;
        self.unplaced += o.unplaced;
        self.records += o.records;
        self.rejected_records += o.rejected_records;
        self.duplicate_records += o.duplicate_records;
        self.updated_records += o.updated_records;
        self.bytes += o.bytes;
        note_all(&mut self.losses, o.losses);
        note_all(&mut self.problems, o.problems);
        for (name, t) in o.datasets {
            let d = self.datasets.entry(name).or_default();
            d.files += t.files;
            d.records += t.records;
            d.rejected += t.rejected;
            d.duplicate_records += t.duplicate_records;
            d.updated_records += t.updated_records;
        }
        self.verdicts.extend(o.verdicts);
        self.files.extend(o.files);
    }
}

fn note(list: &mut Vec<Note>, path: &str, what: String) {
    if list.len() < MAX_NOTES {
        list.push(Note {
            path: path.to_string(),
            what,
        });
    }
}

fn note_all(list: &mut Vec<Note>, more: Vec<Note>) {
    for n in more {
        note(list, &n.path, n.what);
    }
}

/// Process-wide counters for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub ingested: AtomicU64,
    pub duplicate: AtomicU64,
    pub quarantined: AtomicU64,
    pub released: AtomicU64,
    pub left: AtomicU64,
    pub records: AtomicU64,
    /// Records set aside within `max_bad_records`.
    pub rejected_records: AtomicU64,
    /// Records not stored because their key was already stored.
    pub duplicate_records: AtomicU64,
    /// Records that replaced a stored record with the same key.
    pub updated_records: AtomicU64,
    pub unplaced: AtomicU64,
    pub bytes: AtomicU64,
    /// Unix milliseconds of the last ingested file.
    pub last_success_ms: AtomicI64,
    /// Ingest latency histogram: counts per bucket of `LATENCY_BUCKETS_MS` (cumulative on read).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    /// Gauge: ready files queued for a worker (the daemon updates it).
    pub queue_depth: AtomicU64,
    /// Gauge: files in the incoming folder that are not ready yet.
    pub waiting: AtomicU64,
    /// Gauge: how long (ms) the longest-waiting of those has been seen waiting.
    pub oldest_waiting_ms: AtomicU64,
    /// Pipeline restarts after an error.
    pub restarts: AtomicU64,
    /// Quarantined files by error kind.
    pub quarantined_by_kind: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Files this process finished one way or another (a progress bar counts these).
    pub finished: AtomicU64,
    /// Twice the bytes of input files read so far (every file is read twice), for a progress
    /// bar that moves during a big file.
    pub half_bytes_read: AtomicU64,
    /// Files (and their bytes) retention removed from the archive and the quarantine.
    pub pruned_archive: AtomicU64,
    pub pruned_archive_bytes: AtomicU64,
    pub pruned_quarantine: AtomicU64,
    pub pruned_quarantine_bytes: AtomicU64,
    /// Ledger rows retention forgot.
    pub forgotten_rows: AtomicU64,
    /// Per dataset: what this process finished.
    pub datasets: std::sync::Mutex<BTreeMap<String, DatasetCounters>>,
}

/// One dataset's counters for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DatasetCounters {
    pub ingested: u64,
    pub duplicate: u64,
    pub quarantined: u64,
    pub records: u64,
    pub rejected_records: u64,
    pub duplicate_records: u64,
    pub updated_records: u64,
    pub bytes: u64,
    /// Unix milliseconds of the dataset's last ingested file (0: none yet).
    pub last_success_ms: i64,
}

impl Counters {
    /// Starts the last-success gauges from the ledger: per dataset, when its last file was
    /// ingested (ledger time), so they survive a restart.
    pub fn seed_last_success(&self, last: &[(String, String)]) {
        let mut overall = 0;
        for (dataset, at) in last {
            let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) else {
                continue;
            };
            let ms = t.timestamp_millis();
            overall = overall.max(ms);
            self.dataset(dataset, |d| d.last_success_ms = d.last_success_ms.max(ms));
        }
        self.last_success_ms.fetch_max(overall, Ordering::Relaxed);
    }

    fn count_quarantined(&self, dataset: Option<&str>, reject: &Reject, bytes: u64) {
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        *self
            .quarantined_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reject.kind.id())
            .or_default() += 1;
        if let Some(name) = dataset {
            self.dataset(name, |d| {
                d.quarantined += 1;
                d.bytes += bytes;
            });
        }
    }

    /// Changes a dataset's counters.
    pub fn dataset(&self, name: &str, change: impl FnOnce(&mut DatasetCounters)) {
        let mut all = self.datasets.lock().unwrap_or_else(|p| p.into_inner());
        match all.get_mut(name) {
            Some(d) => change(d),
            None => change(all.entry(name.to_string()).or_default()),
        }
    }
}

/// Upper bounds (ms) of the latency histogram buckets; one more bucket holds the rest.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000];

pub fn counters() -> &'static Counters {
    static C: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    C.get_or_init(Counters::default)
}

impl Event<'_> {
    pub fn emit(&self, summary: &mut Summary) {
        let c = counters();
        if !matches!(self, Event::Unplaced { .. }) {
            c.finished.fetch_add(1, Ordering::Relaxed);
        }
        if summary.list_files {
            let v = self.outcome();
            match self {
                // A file not placed was listed with its outcome already: say so there.
                Event::Unplaced { path, why } => {
                    if let Some(f) = summary.files.iter_mut().rev().find(|f| f.path == *path) {
                        f.reason = Some(format!("not placed: {why}"));
                    }
                }
                _ => summary.files.push(v),
            }
        }
        match *self {
            Event::Ingested(ref file) => file.emit(summary, c),
            Event::Duplicate {
                path,
                id,
                original,
                dataset,
                bytes,
            } => {
                tracing::info!(
                    path,
                    id,
                    original,
                    dataset,
                    "file is a duplicate of one already ingested; archived, nothing stored"
                );
                summary.duplicate += 1;
                summary.bytes += bytes;
                summary.datasets.entry(dataset.to_string()).or_default();
                c.duplicate.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(bytes, Ordering::Relaxed);
                c.dataset(dataset, |d| {
                    d.duplicate += 1;
                    d.bytes += bytes;
                });
            }
            Event::Quarantined {
                path,
                id,
                dataset,
                reject,
                bytes,
            } => {
                tracing::warn!(
                    path,
                    id,
                    dataset,
                    error_kind = reject.kind.id(),
                    stage = reject.stage.id(),
                    line = reject.line,
                    "file quarantined: {}",
                    reject.message
                );
                summary.quarantined += 1;
                summary.bytes += bytes;
                c.count_quarantined(dataset, reject, bytes);
            }
            Event::Unpacked {
                path,
                id,
                dataset,
                members,
                bytes,
            } => {
                tracing::info!(
                    path,
                    id,
                    dataset,
                    members,
                    "container unpacked; its members finished"
                );
                summary.unpacked += 1;
                summary.bytes += bytes;
            }
            Event::Unchanged { path } => {
                tracing::debug!(path, "file already handled; skipped");
                summary.unchanged += 1;
            }
            Event::Released { path } => {
                tracing::warn!(
                    path,
                    "file changed while it was read; it waits until it is finished"
                );
                summary.released += 1;
                c.released.fetch_add(1, Ordering::Relaxed);
            }
            Event::Left { path, why } => {
                tracing::error!(path, why, "file cannot be read; left where it is");
                summary.left += 1;
                note(&mut summary.problems, path, format!("left unread: {why}"));
                c.left.fetch_add(1, Ordering::Relaxed);
            }
            Event::Unplaced { path, why } => {
                tracing::error!(path, why, "the file's outcome is recorded, but it could not be put in its place; the next run does it");
                summary.unplaced += 1;
                note(&mut summary.problems, path, format!("not placed: {why}"));
                c.unplaced.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
