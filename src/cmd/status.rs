//! `ferry status [--json]`: files by state, records per dataset, quarantine, files in flight,
//! waiting files with the rule holding each, and the last activity.
//!
//! Reads the ledger and looks at the incoming folder; changes nothing.

use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::discover::{self, Hold, Readiness};
use crate::ledger::{DatasetCounts, Ledger};
use crate::report::{thousands, Waiting};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Instant, SystemTime};

#[derive(Debug, Serialize)]
struct Status {
    root: String,
    incoming: String,
    /// Files by the state of their latest attempt.
    files: BTreeMap<String, u64>,
    records: u64,
    rejected_records: u64,
    duplicate_records: u64,
    quarantined: u64,
    datasets: Vec<DatasetCounts>,
    /// Files claimed and not yet placed (in flight, or left by a crash).
    processing: u64,
    /// Files in the incoming folder that are ready and not yet taken.
    ready: u64,
    waiting: Vec<Waiting>,
    last_activity: Option<String>,
    exports: Vec<crate::export::TargetStatus>,
}

pub fn run(cfg: &Config, args: &StatusArgs) -> Result<Outcome> {
    let mut st = Status {
        root: cfg.spool.root.display().to_string(),
        incoming: cfg.spool.incoming.display().to_string(),
        files: BTreeMap::new(),
        records: 0,
        rejected_records: 0,
        duplicate_records: 0,
        quarantined: 0,
        datasets: Vec::new(),
        processing: 0,
        ready: 0,
        waiting: Vec::new(),
        last_activity: None,
        exports: Vec::new(),
    };
    if let Some(ledger) = Ledger::open_existing(&cfg.spool.db)? {
        st.files = ledger.state_counts()?;
        st.quarantined = st.files.get("quarantined").copied().unwrap_or(0);
        st.datasets = ledger.dataset_counts()?;
        for d in &st.datasets {
            st.records += d.records;
            st.rejected_records += d.rejected_records;
            st.duplicate_records += d.duplicate_records;
        }
        st.last_activity =
            ledger
                .conn
                .query_row("SELECT max(finished_at) FROM files", [], |r| r.get(0))?;
        st.exports = crate::export::targets(&ledger.conn)?;
    }
    if let Ok(rd) = std::fs::read_dir(&cfg.spool.processing) {
        st.processing = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count() as u64;
    }
    if cfg.spool.incoming.is_dir() {
        let scan = discover::scan(&cfg.spool.incoming, &cfg.rules, &cfg.spool.internal_dirs());
        let mut readiness = Readiness::default();
        let (now, wall) = (Instant::now(), SystemTime::now());
        for e in &scan.entries {
            if let Some(h) = cfg.hold(&e.rel) {
                st.waiting.push(Waiting::new(e.rel.display(), &h));
                continue;
            }
            match readiness.check(&cfg.rules, e, now, wall) {
                Ok(()) => st.ready += 1,
                Err(h) => st.waiting.push(Waiting::new(e.rel.display(), &h)),
            }
        }
        for (rel, h) in &scan.ignored {
            if *h != Hold::IsMarker {
                st.waiting.push(Waiting::new(rel.display(), h));
            }
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", table(&st));
    }
    Ok(Outcome::Done)
}

fn table(st: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "spool     {}", st.root);
    let _ = writeln!(out, "incoming  {}", st.incoming);
    let _ = writeln!(
        out,
        "last activity  {}",
        st.last_activity.as_deref().unwrap_or("never")
    );
    let _ = writeln!(out);
    for (state, n) in &st.files {
        let _ = writeln!(out, "  {state:<12} {:>10}", thousands(*n));
    }
    let _ = writeln!(
        out,
        "  {:<12} {:>10}",
        "processing",
        thousands(st.processing)
    );
    let _ = writeln!(out, "  {:<12} {:>10}", "ready", thousands(st.ready));
    let _ = writeln!(
        out,
        "  {:<12} {:>10}",
        "waiting",
        thousands(st.waiting.len() as u64)
    );
    if !st.datasets.is_empty() {
        let _ = writeln!(out);
        let width = st
            .datasets
            .iter()
            .map(|d| d.name.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>10}  {:>11}  table",
            "dataset", "files", "records", "rejected", "dup keys", "duplicates", "quarantined"
        );
        for d in &st.datasets {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>10}  {:>11}  {}",
                d.name,
                thousands(d.files),
                thousands(d.records),
                thousands(d.rejected_records),
                thousands(d.duplicate_records),
                thousands(d.duplicates),
                thousands(d.quarantined),
                d.table.as_deref().unwrap_or("-")
            );
        }
    }
    if !st.exports.is_empty() {
        let _ = writeln!(out, "\nexports:");
        out.push_str(&super::export::targets_table(&st.exports));
    }
    if !st.waiting.is_empty() {
        let _ = writeln!(out, "\nwaiting:");
        for w in &st.waiting {
            let _ = writeln!(out, "  {}  ({})", w.path, w.reason);
        }
    }
    out
}
