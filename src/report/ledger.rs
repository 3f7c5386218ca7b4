//! The ledger as `ferry files`, `ferry quarantine list` and `ferry quarantine show` print it.

use super::{thousands, Report};
use crate::reject::RecordReject;
use crate::store::FileRow;
use serde::Serialize;
use std::fmt::Write;

/// `ferry files`: ledger rows, as a JSON array.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct FilesReport(pub Vec<FileRow>);

/// One line per row, columns as wide as their widest value.
fn rows_table(rows: &[FileRow]) -> String {
    let mut out = String::new();
    let width = |f: &dyn Fn(&FileRow) -> usize, head: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(head.len())
    };
    let dw = width(&|r| r.dataset.as_deref().map_or(1, str::len), "dataset");
    let ew = width(&|r| r.error_kind.as_deref().map_or(0, str::len), "error");
    let _ = writeln!(
        out,
        "{:>6}  {:<11}  {:<dw$}  {:>11}  {:>9}  {:>13}  {:>3}  {:<24}  {:<ew$}  path",
        "id", "state", "dataset", "records", "rejected", "bytes", "try", "finished", "error"
    );
    for r in rows {
        let retry = r
            .retry_of
            .map_or_else(String::new, |o| format!("  (retry of {o})"));
        let _ = writeln!(
            out,
            "{:>6}  {:<11}  {:<dw$}  {:>11}  {:>9}  {:>13}  {:>3}  {:<24}  {:<ew$}  {}{retry}",
            r.id,
            r.state.id(),
            r.dataset.as_deref().unwrap_or("-"),
            thousands(r.records as u64),
            thousands(r.rejected as u64),
            thousands(r.size as u64),
            r.attempt,
            r.finished_at,
            r.error_kind.as_deref().unwrap_or(""),
            r.path
        );
    }
    out
}

impl Report for FilesReport {
    fn table(&self) -> String {
        rows_table(&self.0)
    }
}

/// `ferry quarantine list`: the files in quarantine that were not retried.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct QuarantineList(pub Vec<FileRow>);

impl Report for QuarantineList {
    fn table(&self) -> String {
        if self.0.is_empty() {
            return "quarantine is empty\n".into();
        }
        let mut out = rows_table(&self.0);
        for r in &self.0 {
            let _ = writeln!(
                out,
                "  {}: {}",
                r.id,
                r.error_message.as_deref().unwrap_or("(no message)")
            );
        }
        out
    }
}

/// `ferry quarantine show ID`: one file, why, its first rejected records, every attempt.
#[derive(Debug, Serialize)]
pub struct FileShown {
    pub file: FileRow,
    pub rejects: Vec<RecordReject>,
    /// Every attempt of this file, oldest first (this one included).
    pub attempts: Vec<FileRow>,
    pub retried_by: Option<i64>,
}

impl Report for FileShown {
    fn table(&self) -> String {
        let mut o = String::new();
        let f = &self.file;
        let _ = writeln!(o, "file {}  {}", f.id, f.path);
        let _ = writeln!(o, "  state      {}", f.state.id());
        let _ = writeln!(o, "  dataset    {}", f.dataset.as_deref().unwrap_or("-"));
        let _ = writeln!(o, "  sha256     {}", f.sha256.as_deref().unwrap_or("-"));
        let _ = writeln!(o, "  size       {} bytes", f.size);
        if f.records > 0 || f.rejected > 0 || f.duplicate_records > 0 {
            let _ = writeln!(
                o,
                "  records    {} stored ({} replacing a stored record), {} set aside, {} not \
                 stored (key already stored)",
                thousands(f.records as u64),
                thousands(f.updated_records as u64),
                thousands(f.rejected as u64),
                thousands(f.duplicate_records as u64)
            );
        }
        if let Some(k) = &f.error_kind {
            let stage = f.error_stage.as_deref().unwrap_or("-");
            let _ = writeln!(o, "  error      {k} (stage {stage})");
            let _ = writeln!(
                o,
                "  message    {}",
                f.error_message.as_deref().unwrap_or("")
            );
            if let Some(l) = f.error_line {
                let _ = writeln!(o, "  line       {l}");
            }
            if let Some(fl) = &f.error_field {
                let _ = writeln!(o, "  field      {fl}");
            }
        }
        for w in &f.warnings {
            let _ = writeln!(o, "  warning    {w}");
        }
        let _ = writeln!(o, "  stored at  {}", f.stored_at.as_deref().unwrap_or("-"));
        if let Some(at) = &f.pruned_at {
            let _ = writeln!(o, "  pruned     {at} (removed by retention)");
        }
        if let Some(at) = &f.discarded_at {
            let why = f.discard_reason.as_deref().unwrap_or("");
            let _ = writeln!(o, "  discarded  {at}: {why}");
        }
        let _ = writeln!(o, "  attempt    {}", f.attempt);
        if !self.rejects.is_empty() {
            let _ = writeln!(o, "  rejected records:");
            for r in &self.rejects {
                let _ = writeln!(
                    o,
                    "    line {:>6}  {:<16} {:<24} {}",
                    r.line,
                    r.field.as_deref().unwrap_or("-"),
                    r.value.as_deref().map_or("-".into(), |v| format!("{v:?}")),
                    r.reason
                );
            }
        }
        if self.attempts.len() > 1 {
            let _ = writeln!(o, "  attempts:");
            for a in &self.attempts {
                let _ = writeln!(
                    o,
                    "    {:>6}  {:<11}  {}  {}",
                    a.id,
                    a.state.id(),
                    a.finished_at,
                    a.error_kind.as_deref().unwrap_or("")
                );
            }
        }
        if let Some(r) = self.retried_by {
            let _ = writeln!(o, "  retried as {r}");
        }
        o
    }
}
