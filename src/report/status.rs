//! `ferry status`: files by state, records per dataset, export targets, files in flight and
//! waiting.

use super::export::targets_table;
use super::{thousands, Report, Waiting};
use crate::store::{DatasetCounts, FileState, KeyIndexStatus, QuarantineCounts, TargetStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Status {
    pub root: String,
    pub incoming: String,
    /// Files by the state of their latest attempt.
    pub files: BTreeMap<FileState, u64>,
    pub records: u64,
    pub rejected_records: u64,
    pub duplicate_records: u64,
    /// Records that replaced a stored record with the same key.
    pub updated_records: u64,
    /// Quarantined files waiting for a decision (not discarded, not pruned).
    pub quarantined: u64,
    /// Quarantined files by what became of them.
    pub quarantine: QuarantineCounts,
    pub datasets: Vec<DatasetCounts>,
    /// Files claimed and not yet placed (in flight, or left by a crash).
    pub processing: u64,
    /// Files in the incoming folder that are ready and not yet taken.
    pub ready: u64,
    pub waiting: Vec<Waiting>,
    pub last_activity: Option<String>,
    pub exports: Vec<TargetStatus>,
    /// The key index of each keyed table.
    pub keys: Vec<KeyIndexStatus>,
    /// Each remote source (`[[source]]`): its files by state in the store, and, in the
    /// daemon, how its last poll went.
    pub sources: Vec<SourceState>,
    /// Receipts and webhooks: per channel, notices delivered, owed and failing.
    pub deliveries: Vec<crate::store::ChannelStatus>,
}

/// A remote source in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceState {
    pub name: String,
    pub url: String,
    /// Remote files loaded and finished with that the source still lists (what it no longer
    /// lists is forgotten: the ledger keeps every file it brought).
    pub finished: u64,
    /// Loaded, but what `after` says is not done yet (the last error says why).
    pub awaiting_disposal: u64,
    /// Claimed: being downloaded or loaded (by any host).
    pub in_flight: u64,
    pub last_disposal_error: Option<String>,
    /// The daemon's poller (the status page and `/metrics`): `ok` or `backing off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::remote::poll::SourceStatus>,
}

impl Report for Status {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "spool     {}", self.root);
        let _ = writeln!(out, "incoming  {}", self.incoming);
        let _ = writeln!(
            out,
            "last activity  {}",
            self.last_activity.as_deref().unwrap_or("never")
        );
        let _ = writeln!(out);
        for (state, n) in &self.files {
            let _ = writeln!(out, "  {:<12} {:>10}", state.id(), thousands(*n));
        }
        let q = &self.quarantine;
        if q.discarded + q.pruned > 0 {
            let _ = writeln!(
                out,
                "    of which {} open, {} discarded, {} pruned",
                thousands(q.open),
                thousands(q.discarded),
                thousands(q.pruned)
            );
        }
        for (what, n) in [
            ("processing", self.processing),
            ("ready", self.ready),
            ("waiting", self.waiting.len() as u64),
        ] {
            let _ = writeln!(out, "  {what:<12} {:>10}", thousands(n));
        }
        if !self.datasets.is_empty() {
            let _ = writeln!(out);
            let width = self
                .datasets
                .iter()
                .map(|d| d.name.len())
                .max()
                .unwrap_or(7)
                .max(7);
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>9}  {:>10}  {:>11}  table",
                "dataset",
                "files",
                "records",
                "updated",
                "rejected",
                "dup keys",
                "duplicates",
                "quarantined"
            );
            for d in &self.datasets {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>9}  {:>10}  {:>11}  {}",
                    d.name,
                    thousands(d.files),
                    thousands(d.records),
                    thousands(d.updated_records),
                    thousands(d.rejected_records),
                    thousands(d.duplicate_records),
                    thousands(d.duplicates),
                    thousands(d.quarantined),
                    match d.table.as_deref() {
                        None => "-".to_string(),
                        Some(t) if t == d.name => t.to_string(),
                        // Named by `table`, or another name because the dataset's was taken.
                        Some(t) => format!("{t} (not named after the dataset)"),
                    }
                );
            }
        }
        if !self.keys.is_empty() {
            let _ = writeln!(out, "\nrecord keys:");
            for k in &self.keys {
                let _ = writeln!(
                    out,
                    "  {}  key {} since {}; index: {} in {} run{}, {} after them",
                    k.table,
                    k.key,
                    k.defined_at,
                    thousands(k.indexed),
                    k.runs,
                    if k.runs == 1 { "" } else { "s" },
                    thousands(k.tail)
                );
            }
        }
        if !self.sources.is_empty() {
            let _ = writeln!(out, "\nsources:");
            for src in &self.sources {
                let _ = writeln!(
                    out,
                    "  {}  {}: {} loaded and still on the source, {} awaiting disposal, {} in flight",
                    src.name,
                    src.url,
                    thousands(src.finished + src.awaiting_disposal),
                    thousands(src.awaiting_disposal),
                    thousands(src.in_flight)
                );
                if let Some(e) = &src.last_disposal_error {
                    let _ = writeln!(out, "    last disposal error: {e}");
                }
                if let Some(l) = &src.live {
                    let _ = writeln!(
                        out,
                        "    {}: last listing {}, {} seen, {} ready, {} fetched ({} bytes), {} failed{}",
                        l.state,
                        l.last_listing.as_deref().unwrap_or("never"),
                        l.seen,
                        l.ready,
                        l.fetched,
                        l.bytes_fetched,
                        l.failed,
                        l.last_error
                            .as_ref()
                            .map(|e| format!("; last error: {e}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        if !self.deliveries.is_empty() {
            let _ = writeln!(out, "\nreceipts and webhooks:");
            for d in &self.deliveries {
                let _ = writeln!(
                    out,
                    "  {}: {} delivered, {} owed ({} failing){}",
                    d.channel,
                    thousands(d.delivered),
                    thousands(d.owed),
                    thousands(d.failing),
                    d.last_error
                        .as_ref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.exports.is_empty() {
            let _ = writeln!(out, "\nexports:");
            out.push_str(&targets_table(&self.exports));
        }
        if !self.waiting.is_empty() {
            let _ = writeln!(out, "\nwaiting:");
            for w in &self.waiting {
                let _ = writeln!(out, "  {}  ({})", w.path, w.reason);
            }
        }
        out
    }
}
