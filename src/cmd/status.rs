//! `ferry status [--json]`: files by state, records per dataset, quarantine, files in flight,
//! waiting files with the rule holding each, and the last activity.
//!
//! Reads the ledger and looks at the incoming folder; changes nothing.

use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::discover::{self, Hold, Readiness};
use crate::ledger::{tables, Ledger};
use crate::report::{thousands, Waiting};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Instant, SystemTime};

#[derive(Debug, Serialize)]
struct DatasetStatus {
    name: String,
    table: String,
    files: u64,
    records: u64,
    duplicates: u64,
    quarantined: u64,
}

#[derive(Debug, Serialize)]
struct Status {
    root: String,
    incoming: String,
    files: BTreeMap<String, u64>,
    records: u64,
    quarantined: u64,
    datasets: Vec<DatasetStatus>,
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
        files: ["ingested", "duplicate", "quarantined"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect(),
        records: 0,
        quarantined: 0,
        datasets: Vec::new(),
        processing: 0,
        ready: 0,
        waiting: Vec::new(),
        last_activity: None,
        exports: Vec::new(),
    };
    if let Some(ledger) = Ledger::open_existing(&cfg.spool.db)? {
        let c = &ledger.conn;
        let mut stmt = c.prepare("SELECT state, count(*) FROM files GROUP BY state")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            st.files.insert(state, n as u64);
        }
        st.quarantined = st.files.get("quarantined").copied().unwrap_or(0);
        let mut stmt = c.prepare(
            "SELECT dataset, \
                    sum(state = 'ingested'), \
                    sum(CASE WHEN state = 'ingested' THEN records ELSE 0 END), \
                    sum(state = 'duplicate'), \
                    sum(state = 'quarantined') \
             FROM files WHERE dataset IS NOT NULL GROUP BY dataset ORDER BY dataset",
        )?;
        for row in stmt.query_map([], |r| {
            Ok(DatasetStatus {
                name: r.get(0)?,
                table: tables::table_for(&r.get::<_, String>(0)?),
                files: r.get::<_, i64>(1)? as u64,
                records: r.get::<_, i64>(2)? as u64,
                duplicates: r.get::<_, i64>(3)? as u64,
                quarantined: r.get::<_, i64>(4)? as u64,
            })
        })? {
            let d = row?;
            st.records += d.records;
            st.datasets.push(d);
        }
        st.last_activity = c.query_row("SELECT max(finished_at) FROM files", [], |r| r.get(0))?;
        st.exports = crate::export::targets(c)?;
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
            "  {:<width$}  {:>8}  {:>12}  {:>10}  {:>11}",
            "dataset", "files", "records", "duplicates", "quarantined"
        );
        for d in &st.datasets {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>12}  {:>10}  {:>11}",
                d.name,
                thousands(d.files),
                thousands(d.records),
                thousands(d.duplicates),
                thousands(d.quarantined)
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
