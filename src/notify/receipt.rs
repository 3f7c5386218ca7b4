//! The receipt of a finished file: what ferry tells the sender (and a webhook) — its status,
//! identity, counts and the first located errors. Built from the ledger row and the stored
//! rejects only, so every attempt to deliver it builds the same bytes.

use crate::reject::RecordReject;
use crate::store::{FileRow, FileState};
use serde::Serialize;

/// Located errors in a receipt; all of them go into the rejects CSV.
pub const FIRST_ERRORS: u64 = 100;

#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    /// `accepted`, `accepted_with_errors` (some records rejected), `duplicate` (the same
    /// content was loaded before), `rejected` (quarantined: nothing of it stored).
    pub status: &'static str,
    pub file: &'a str,
    /// Where it arrived, below the incoming folder.
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote<'a>>,
    pub dataset: Option<&'a str>,
    pub size: i64,
    pub sha256: Option<&'a str>,
    pub received_at: &'a str,
    pub finished_at: &'a str,
    pub records: Counts,
    /// Why the file was rejected (quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason<'a>>,
    /// The ledger id of the file whose content this one repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
    /// The first rejected records, located.
    pub errors: Vec<Located<'a>>,
    /// How many records were rejected in all.
    pub errors_total: i64,
    /// The CSV of every rejected record beside this receipt (`receipt_rejects = "csv"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    pub ledger_id: i64,
    pub ferry_version: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Remote<'a> {
    pub source: &'a str,
    pub path: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub stored: i64,
    pub rejected: i64,
    pub duplicate_keys: i64,
    pub updated: i64,
}

#[derive(Debug, Serialize)]
pub struct Reason<'a> {
    pub kind: Option<&'a str>,
    pub message: Option<&'a str>,
    pub line: Option<i64>,
    pub column: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct Located<'a> {
    pub line: u64,
    pub column: Option<&'a str>,
    pub value: Option<&'a str>,
    pub reason: &'a str,
}

pub fn status(row: &FileRow) -> &'static str {
    match row.state {
        FileState::Quarantined => "rejected",
        FileState::Duplicate => "duplicate",
        FileState::Ingested if row.rejected > 0 => "accepted_with_errors",
        FileState::Ingested => "accepted",
    }
}

/// The file's name (its path's last part).
pub fn file_name(row: &FileRow) -> &str {
    row.path.rsplit('/').next().unwrap_or(&row.path)
}

/// `<file name>.<first 12 hex of its SHA-256>` (the ledger id for a file never hashed): what a
/// file's receipt and rejects are named after. A partner's file name may hold what a remote
/// place would read otherwise — a line break ends an FTP command, a backslash is a folder
/// elsewhere — so control characters and backslashes become `_` (the receipt's `file` keeps
/// the name as it was).
pub fn stem(row: &FileRow) -> String {
    let name: String = file_name(row)
        .chars()
        .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
        .collect();
    match &row.sha256 {
        Some(h) => format!("{name}.{}", &h[..h.len().min(12)]),
        None => format!("{name}.id{}", row.id),
    }
}

pub fn build<'a>(
    row: &'a FileRow,
    errors: &'a [RecordReject],
    rejects_file: Option<String>,
) -> Receipt<'a> {
    let quarantined = row.state == FileState::Quarantined;
    Receipt {
        status: status(row),
        file: file_name(row),
        path: &row.path,
        remote: row.remote_source.as_deref().map(|source| Remote {
            source,
            path: row.remote_path.as_deref(),
        }),
        dataset: row.dataset.as_deref(),
        size: row.size,
        sha256: row.sha256.as_deref(),
        received_at: &row.received_at,
        finished_at: &row.finished_at,
        records: Counts {
            stored: if quarantined { 0 } else { row.records },
            rejected: row.rejected,
            duplicate_keys: row.duplicate_records,
            updated: row.updated_records,
        },
        reason: quarantined.then_some(Reason {
            kind: row.error_kind.as_deref(),
            message: row.error_message.as_deref(),
            line: row.error_line,
            column: row.error_field.as_deref(),
        }),
        duplicate_of: row.duplicate_of,
        errors: errors
            .iter()
            .map(|r| Located {
                line: r.line,
                column: r.field.as_deref(),
                value: r.value.as_deref(),
                reason: &r.reason,
            })
            .collect(),
        errors_total: row.rejected,
        rejects_file,
        ledger_id: row.id,
        ferry_version: env!("CARGO_PKG_VERSION"),
    }
}

/// The rejected records as the file had them, read again from where the ledger placed it:
/// `_line`, the file's columns (values as the parser read them, before any typing), `_errors`
/// (each reason, `column: why`). `None` when the file cannot be read any more (pruned, moved)
/// or no longer holds every rejected record: the caller lists the located errors instead
/// (`rejects_csv`).
pub fn rejected_records(
    file: &std::path::Path,
    name: &str,
    spec: &crate::config::DatasetSpec,
    rejects: &[RecordReject],
) -> Option<Vec<u8>> {
    use crate::format::{RowOut, Stop};
    use std::collections::BTreeMap;
    struct Pick {
        why: BTreeMap<u64, String>,
        names: Vec<String>,
        rows: Vec<(u64, Vec<String>)>,
    }
    impl RowOut for Pick {
        fn columns(&mut self, names: &[String]) -> Result<(), Stop> {
            self.names = names.to_vec();
            Ok(())
        }
        fn row(
            &mut self,
            line: u64,
            text: &str,
            spans: &[Option<(usize, usize)>],
        ) -> Result<(), Stop> {
            if self.why.contains_key(&line) {
                let values = spans
                    .iter()
                    .map(|s| s.map_or(String::new(), |(a, b)| text[a..b].to_string()))
                    .collect();
                self.rows.push((line, values));
            }
            Ok(())
        }
        fn bad_row(&mut self, line: u64, _: &str, _: Option<&str>, _: String) -> Result<(), Stop> {
            if self.why.contains_key(&line) {
                self.rows.push((line, Vec::new()));
            }
            Ok(())
        }
    }
    let mut why: BTreeMap<u64, String> = BTreeMap::new();
    for r in rejects {
        let e = why.entry(r.line).or_default();
        if !e.is_empty() {
            e.push_str("; ");
        }
        match &r.field {
            Some(f) => e.push_str(&format!("{f}: {}", r.reason)),
            None => e.push_str(&r.reason),
        }
    }
    let raw = crate::fsio::open_regular(file).ok()?;
    let opened =
        crate::format::open(Box::new(raw), name, &spec.options, &spec.pointer, false).ok()?;
    let mut pick = Pick {
        why,
        names: Vec::new(),
        rows: Vec::new(),
    };
    opened.parse(&mut pick).ok()?;
    // Every rejected record found again, or the located list instead: never a partial file
    // that looks whole.
    let found: std::collections::BTreeSet<u64> = pick.rows.iter().map(|(l, _)| *l).collect();
    if found.len() != pick.why.len() {
        return None;
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .flexible(true)
        .from_writer(Vec::new());
    let mut header = vec!["_line".to_string()];
    header.extend(pick.names.iter().cloned());
    header.push("_errors".into());
    w.write_record(&header).ok()?;
    for (line, values) in &pick.rows {
        let mut rec = vec![line.to_string()];
        rec.extend(values.iter().cloned());
        rec.resize(pick.names.len() + 1, String::new());
        rec.push(pick.why[line].clone());
        w.write_record(&rec).ok()?;
    }
    w.into_inner().ok()
}

/// Every rejected record located: line, column, value, reason (RFC 4180, header, CRLF).
pub fn rejects_csv(rejects: &[RecordReject]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(["line", "column", "value", "reason"]);
    for r in rejects {
        let _ = w.write_record([
            r.line.to_string().as_str(),
            r.field.as_deref().unwrap_or(""),
            r.value.as_deref().unwrap_or(""),
            r.reason.as_str(),
        ]);
    }
    w.into_inner().unwrap_or_default()
}
