//! Everything ferry prints: each command's report is a data shape (its fields are the JSON
//! interface, so never rename one, only add) that also renders itself as a table for people.
//! Commands gather the data and hand it to `print`; nothing else writes to stdout.

mod config;
mod export;
mod ledger;
mod progress;
mod prune;
mod run;
mod status;

pub use config::{ConfigView, TableView};
pub use export::{ExportReport, TargetsReport};
pub use ledger::{FileShown, FilesReport, QuarantineList};
pub use progress::Progress;
pub use run::RunReport;
pub use status::Status;

use crate::discover::Hold;
use anyhow::Result;
use serde::Serialize;

/// A command's report: JSON for programs (`--json`), a table for people.
pub trait Report: Serialize {
    fn table(&self) -> String;
}

/// Prints a report on stdout, as JSON or as its table.
pub fn print(report: &impl Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A file that was not taken, and the rule holding it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Waiting {
    pub path: String,
    pub rule: &'static str,
    pub reason: String,
}

impl Waiting {
    pub fn new(path: String, hold: &Hold) -> Waiting {
        Waiting {
            path,
            rule: hold.id(),
            reason: hold.to_string(),
        }
    }
}

/// Groups digits: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 file`, `2 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6_800_000), "6,800,000");
    }
}
