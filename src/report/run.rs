//! What `ferry run` and `ferry quarantine retry` print: the run's summary.

use super::{count, thousands, Report, Waiting};
use crate::events::Summary;
use serde::Serialize;
use std::fmt::Write;

/// What `ferry run` prints.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `--dry-run`: the counts say what a run would do; nothing was changed.
    pub dry_run: bool,
    pub source: String,
    pub elapsed_ms: u64,
    /// A stop was asked for (SIGINT/SIGTERM) before every ready file was taken.
    pub interrupted: bool,
    /// Ready files not taken because of the stop (the next run takes them).
    pub not_taken: u64,
    #[serde(flatten)]
    pub summary: Summary,
    pub waiting: Vec<Waiting>,
}

impl Report for RunReport {
    fn table(&self) -> String {
        let mut out = String::new();
        self.outcomes(&mut out);
        self.verdicts(&mut out);
        self.attention(&mut out);
        datasets(&mut out, &self.summary);
        out
    }
}

impl RunReport {
    /// A dry run's file-by-file verdicts.
    fn verdicts(&self, out: &mut String) {
        if self.summary.verdicts.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nfiles:");
        for v in &self.summary.verdicts {
            let dataset = v.dataset.as_deref().unwrap_or("-");
            let what = match v.outcome {
                "ingest" => {
                    let mut w = count(v.records, "record", "records");
                    if v.updated_records > 0 {
                        w += &format!(
                            " ({} replacing a stored record)",
                            thousands(v.updated_records)
                        );
                    }
                    if v.duplicate_records > 0 {
                        w += &format!(
                            ", {} with a key already stored",
                            thousands(v.duplicate_records)
                        );
                    }
                    if v.rejected_records > 0 {
                        w += &format!(", {} set aside", thousands(v.rejected_records));
                    }
                    w
                }
                "duplicate" => match v.duplicate_of {
                    Some(id) => format!("same content as file {id}"),
                    None => "same content as another file of this run".into(),
                },
                _ => format!(
                    "{} {}",
                    v.error_kind.unwrap_or(""),
                    v.reason.as_deref().unwrap_or("")
                )
                .trim()
                .to_string(),
            };
            let _ = writeln!(out, "  {:<10} {}  [{dataset}]  {what}", v.outcome, v.path);
        }
    }

    /// The counts, one line per outcome.
    fn outcomes(&self, out: &mut String) {
        let s = &self.summary;
        let _ = writeln!(
            out,
            "ferry run{}: {} from {} in {:.2} s",
            if self.dry_run {
                " --dry-run (nothing changed; what a run would do)"
            } else {
                ""
            },
            count(s.files(), "file", "files"),
            self.source,
            self.elapsed_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "  ingested     {:>8}  {}",
            thousands(s.ingested),
            count(s.records, "record", "records")
        );
        if s.rejected_records > 0 {
            let _ = writeln!(
                out,
                "               {:>8}  set aside as bad (within max_bad_records; see quarantine/*.rejects.ndjson)",
                thousands(s.rejected_records),
            );
        }
        if s.updated_records > 0 {
            let _ = writeln!(
                out,
                "               {:>8}  of them replaced a stored record with the same key",
                thousands(s.updated_records),
            );
        }
        if s.duplicate_records > 0 {
            let _ = writeln!(
                out,
                "               {:>8}  not stored: their key was already stored",
                thousands(s.duplicate_records),
            );
        }
        let _ = writeln!(out, "  duplicate    {:>8}", thousands(s.duplicate));
        let hint = if s.quarantined > 0 && !self.dry_run {
            "  see: ferry files --state quarantined"
        } else {
            ""
        };
        let _ = writeln!(out, "  quarantined  {:>8}{hint}", thousands(s.quarantined));
        if s.unpacked > 0 {
            let _ = writeln!(
                out,
                "  unpacked     {:>8}  archives and OpenPGP files (their members are counted above)",
                thousands(s.unpacked)
            );
        }
        if s.unchanged > 0 {
            let _ = writeln!(
                out,
                "  unchanged    {:>8}  already handled",
                thousands(s.unchanged)
            );
        }
        if s.released > 0 {
            let _ = writeln!(
                out,
                "  changed      {:>8}  still being written; left for later",
                thousands(s.released)
            );
        }
        if s.left > 0 {
            let _ = writeln!(
                out,
                "  unreadable   {:>8}  left where they are; the next run tries again",
                thousands(s.left)
            );
        }
        if s.unplaced > 0 {
            let _ = writeln!(
                out,
                "  not placed   {:>8}  recorded, but still in processing/; the next run places them",
                thousands(s.unplaced)
            );
        }
    }

    /// What an operator should know: an interruption, files that need a look, files stored
    /// not quite as sent, files still waiting.
    fn attention(&self, out: &mut String) {
        let s = &self.summary;
        if self.interrupted {
            let _ = writeln!(
                out,
                "  interrupted: stopped taking files ({} ready and not taken); files in flight \
                 were finished; the next run takes the rest",
                thousands(self.not_taken)
            );
        }
        if !s.problems.is_empty() {
            let _ = writeln!(out, "  needs attention:");
            for n in &s.problems {
                let _ = writeln!(out, "    {}  ({})", n.path, n.what);
            }
        }
        if !s.losses.is_empty() {
            let _ = writeln!(out, "  stored, but not as sent:");
            for n in s.losses.iter().take(10) {
                let _ = writeln!(out, "    {}  ({})", n.path, n.what);
            }
            if s.losses.len() > 10 {
                let _ = writeln!(
                    out,
                    "    … and {} more (--json lists them)",
                    s.losses.len() - 10
                );
            }
        }
        if !self.waiting.is_empty() {
            let _ = writeln!(
                out,
                "  waiting      {:>8}",
                thousands(self.waiting.len() as u64)
            );
            for w in self.waiting.iter().take(10) {
                let _ = writeln!(out, "    {}  ({})", w.path, w.reason);
            }
            if self.waiting.len() > 10 {
                let _ = writeln!(out, "    … and {} more", self.waiting.len() - 10);
            }
        }
    }
}

/// Per-dataset counts.
fn datasets(out: &mut String, s: &Summary) {
    if !s.datasets.is_empty() {
        let _ = writeln!(out);
        let width = s.datasets.keys().map(|k| k.len()).max().unwrap_or(7).max(7);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>9}",
            "dataset", "files", "records", "updated", "rejected", "dup keys"
        );
        for (name, d) in &s.datasets {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>12}  {:>9}  {:>9}  {:>9}",
                name,
                thousands(d.files),
                thousands(d.records),
                thousands(d.updated_records),
                thousands(d.rejected),
                thousands(d.duplicate_records)
            );
        }
    }
}
