//! Bad records and a file's verdict against `max_bad_records` (R-bad-records).

use super::FIRST_REJECTS;
use crate::config::BadLimit;
use crate::reject::{Kind, RecordReject, Reject, Stage};

/// Bad records and the file's verdict.
#[derive(Debug)]
pub(crate) struct BadRecords {
    limit: BadLimit,
    pub(crate) count: u64,
    pub(crate) first: Vec<RecordReject>,
    /// Rejects not yet sent to the writer.
    pub(super) pending: Vec<RecordReject>,
    /// The file is over its limit whatever follows; rows are no longer sent.
    pub(crate) doomed: bool,
}

impl BadRecords {
    pub(crate) fn new(limit: BadLimit) -> BadRecords {
        BadRecords {
            limit,
            count: 0,
            first: Vec::new(),
            pending: Vec::new(),
            doomed: false,
        }
    }

    pub(crate) fn record(&mut self, r: RecordReject) {
        self.count += 1;
        if self.first.len() < FIRST_REJECTS {
            self.first.push(r.clone());
        }
        if !self.doomed {
            if self.limit.exceeded_early(self.count) {
                self.doomed = true;
                self.pending.clear();
            } else {
                self.pending.push(r);
            }
        }
    }

    /// The file's rejection, when its bad records are over the limit; `read`: the records the
    /// parser handed over so far (all of the file's when `complete`).
    pub(crate) fn verdict(&self, read: u64, complete: bool) -> Option<Reject> {
        let total = read;
        if !self.doomed && !self.limit.exceeded(self.count, total) {
            return None;
        }
        // The stages and the writer (keys stored already) both find bad records: the first in
        // the file is the one named.
        let first = self.first.iter().min_by_key(|r| r.line)?;
        let at = match &first.field {
            Some(f) => format!("line {}, column {f:?}: {}", first.line, first.reason),
            None => format!("line {}: {}", first.line, first.reason),
        };
        let (kind, message) = match self.limit {
            BadLimit::Count(0) if first.kind == Kind::RecordEmptyKey => (
                Kind::RecordEmptyKey,
                format!(
                    "a record has an empty key and the dataset allows no bad records \
                     (max_bad_records = 0): {at}"
                ),
            ),
            BadLimit::Count(0) if first.kind == Kind::RecordKeyExists => (
                Kind::RecordKeyExists,
                format!(
                    "a record's key is already stored and the dataset allows no bad records \
                     (max_bad_records = 0): {at}"
                ),
            ),
            BadLimit::Count(0) => (
                Kind::RecordInvalid,
                format!(
                    "a record is invalid and the dataset allows none (max_bad_records = 0): {at}"
                ),
            ),
            limit => (
                Kind::TooManyBadRecords,
                if complete {
                    format!(
                        "{} of {total} record{} {} bad, more than max_bad_records = {limit}; \
                         the first: {at}",
                        self.count,
                        crate::reject::plural(total as usize),
                        if self.count == 1 { "is" } else { "are" }
                    )
                } else {
                    format!(
                        "{} of the {total} record{} read are bad, more than max_bad_records = \
                         {limit} (ferry stopped reading there); the first: {at}",
                        self.count,
                        crate::reject::plural(total as usize),
                    )
                },
            ),
        };
        let mut r = Reject::new(kind, Stage::Validate, message).at_line(first.line);
        r.field = first.field.clone();
        Some(r)
    }
}
