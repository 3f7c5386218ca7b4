//! `ferry export`: the batches written, and `--list`: the targets.

use super::{count, thousands, Report};
use crate::export::ExportSummary;
use crate::store::TargetStatus;
use serde::Serialize;
use std::fmt::Write;

/// What `export --all` did: one export per target.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ExportAllReport(pub Vec<ExportSummary>);

impl Report for ExportAllReport {
    fn table(&self) -> String {
        if self.0.is_empty() {
            return "nothing to export: no dataset has pending records\n".into();
        }
        self.0
            .iter()
            .map(|s| ExportReport(s.clone()).table())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What one export did.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ExportReport(pub ExportSummary);

impl Report for ExportReport {
    fn table(&self) -> String {
        let s = &self.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry export: {} → {} (target {:?})",
            s.dataset, s.dir, s.target
        );
        for b in &s.batches {
            let _ = writeln!(
                out,
                "  {}  {:>10} record{}  ids {}–{}{}",
                b.file,
                thousands(b.rows),
                if b.rows == 1 { "" } else { "s" },
                b.first_record_id,
                b.last_record_id,
                if b.resumed {
                    "  (rewritten: an earlier export was interrupted)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "  {}, {}; watermark {}",
            count(s.batches.len() as u64, "batch", "batches"),
            count(s.rows, "record", "records"),
            s.watermark
        );
        out
    }
}

/// `ferry export --list`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct TargetsReport(pub Vec<TargetStatus>);

impl Report for TargetsReport {
    fn table(&self) -> String {
        targets_table(&self.0)
    }
}

/// The targets as a table (also part of `ferry status`).
pub fn targets_table(targets: &[TargetStatus]) -> String {
    let mut out = String::new();
    if targets.is_empty() {
        out.push_str("no export targets yet\n");
        return out;
    }
    let dw = targets
        .iter()
        .map(|t| t.dataset.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        out,
        "  {:<dw$} {:>12} {:>12} {:>8} {:>12}  {:<24}  target",
        "dataset", "watermark", "pending", "batches", "exported", "last export"
    );
    for t in targets {
        let _ = writeln!(
            out,
            "  {:<dw$} {:>12} {:>12} {:>8} {:>12}  {:<24}  {}{}",
            t.dataset,
            thousands(t.watermark.max(0) as u64),
            thousands(t.pending_records),
            thousands(t.batches),
            thousands(t.exported_records),
            t.last_export.as_deref().unwrap_or("never"),
            t.target,
            match &t.interrupted_batch {
                Some(b) => format!("  (interrupted: {b})"),
                None => String::new(),
            }
        );
    }
    out
}
