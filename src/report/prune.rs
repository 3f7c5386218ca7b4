//! What `ferry prune` prints.

use super::{count, thousands, Report};
use crate::retention::Pruned;
use std::fmt::Write;

impl Report for Pruned {
    fn table(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if self.areas.is_empty() && self.ledger_days == 0 {
            out.push_str(
                "retention is not set ([retention] archive_days, quarantine_days, ledger_days); \
                 nothing to prune\n",
            );
        }
        for a in &self.areas {
            let _ = writeln!(
                out,
                "{:<10}  {verb} {} ({} bytes) finished over {} ago",
                a.area.id(),
                count(a.files, "file", "files"),
                thousands(a.bytes),
                count(a.days as u64, "day", "days"),
            );
        }
        if self.ledger_days > 0 {
            let verb = if self.dry_run {
                "would forget"
            } else {
                "forgot"
            };
            let _ = writeln!(
                out,
                "ledger      {verb} {} finished over {} ago",
                count(self.ledger_rows, "row", "rows"),
                count(self.ledger_days as u64, "day", "days"),
            );
        }
        // A dry run names every file and row, so what it says can be checked before a real run.
        if self.dry_run && !self.removed.is_empty() {
            out.push_str("\nfiles that would be removed:\n");
            for p in &self.removed {
                let _ = writeln!(out, "  {p}");
            }
        }
        if self.dry_run && !self.forgotten.is_empty() {
            let ids: Vec<String> = self.forgotten.iter().map(i64::to_string).collect();
            let _ = writeln!(
                out,
                "\nledger rows that would be forgotten (with their earlier attempts): {}",
                ids.join(", ")
            );
        }
        if !self.left.is_empty() {
            let _ = writeln!(
                out,
                "\n{} due for removal left where {}:",
                count(self.left.len() as u64, "file", "files"),
                if self.left.len() == 1 {
                    "it is"
                } else {
                    "they are"
                }
            );
            for n in &self.left {
                let _ = writeln!(out, "  {}  {}", n.path, n.what);
            }
        }
        out
    }
}
