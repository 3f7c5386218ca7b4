//! Everything ferry prints: each command's report is a data shape (its fields are the JSON
//! interface, so never rename one, only add) that also renders itself as a table for people.
//! Commands gather the data and hand it to `print`; nothing else writes to stdout.

mod config;
mod export;
mod ledger;
mod progress;
mod prune;
mod rekey;
mod run;
mod status;

pub use config::{ConfigView, SourceView, TableView, TargetView};
pub use export::{ExportAllReport, ExportReport, TargetsReport};
pub use ledger::{FileShown, FilesReport, QuarantineList};
pub use progress::Progress;
pub use rekey::Rekeyed;
pub use run::RunReport;
pub use status::{SourceState, Status};

use crate::discover::Hold;
use anyhow::Result;
use serde::Serialize;

/// A command's report: JSON for programs (`--json`), a table for people.
pub trait Report: Serialize {
    fn table(&self) -> String;
}

/// Prints a report on stdout, as JSON or as its table.
/// Prints a report (JSON or a table) on standard output. A reader that went away (`| head`)
/// ends the output quietly, as other command-line tools do.
pub fn print(report: &impl Report, json: bool) -> Result<()> {
    use std::io::Write;
    let text = if json {
        let mut t = serde_json::to_string_pretty(report)?;
        t.push('\n');
        t
    } else {
        report.table()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 file`, `2 files`.
/// A duration as a config writes one, in the largest unit that shows it exactly: `500ms`,
/// `1s`, `30s`, `2m`, `1h`, `1d`; every report shows durations this way.
pub fn duration_ms(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_config_writes_them() {
        assert_eq!(duration_ms(1000), "1s");
        assert_eq!(duration_ms(1500), "1500ms");
        assert_eq!(duration_ms(30_000), "30s");
        assert_eq!(duration_ms(120_000), "2m");
        assert_eq!(duration_ms(86_400_000), "1d");
        assert_eq!(duration_ms(0), "0ms");
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6_800_000), "6,800,000");
    }
}
