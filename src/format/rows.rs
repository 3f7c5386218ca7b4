//! Building one record at a time for parsers whose records name their columns (JSON objects,
//! XML elements): the file's column list grows as new names appear, each record sets some of
//! them, and a name set twice in one record is reported to the parser, which says why in its
//! own terms (`json.duplicate_key`, `xml.repeated_element`).

use super::text::nul_reject;
use super::{RowOut, Stop, MAX_COLUMN_NAME};
use crate::reject::{Kind, Reject, Stage};
use std::collections::HashMap;

/// Most distinct column names a file may use (bounds the column list, whatever the input).
pub(super) const MAX_NAMES: usize = 1 << 16;

pub(super) struct Builder<'o> {
    /// Column names in order of first appearance.
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Per column: the record that last set it (finds names set twice in one record).
    set_in: Vec<u64>,
    /// Columns already announced to `out`.
    announced: usize,
    text: String,
    spans: Vec<Option<(usize, usize)>>,
    out: &'o mut dyn RowOut,
    /// Records handed on so far.
    pub(super) records: u64,
}

impl<'o> Builder<'o> {
    pub(super) fn new(out: &'o mut dyn RowOut) -> Self {
        Builder {
            names: Vec::new(),
            by_name: HashMap::new(),
            set_in: Vec::new(),
            announced: usize::MAX,
            text: String::new(),
            spans: Vec::new(),
            out,
            records: 0,
        }
    }

    /// The column of `name` in the current record; `Ok(None)` when the record already set it.
    pub(super) fn column(&mut self, name: &str) -> Result<Option<usize>, Reject> {
        if name.contains('\0') {
            // Not even with allow_nul: a column name cannot hold a NUL.
            return Err(nul_reject(0, 0));
        }
        if name.len() > MAX_COLUMN_NAME {
            return Err(Reject::new(
                Kind::SchemaColumnNameTooLong,
                Stage::Parse,
                format!(
                    "record {} has a column name of {} bytes; column names are at most \
                     {MAX_COLUMN_NAME} bytes",
                    self.records + 1,
                    name.len()
                ),
            ));
        }
        let col = match self.by_name.get(name) {
            Some(&c) => c,
            None => {
                if self.names.len() >= MAX_NAMES {
                    return Err(Reject::new(
                        Kind::SchemaTooManyColumns,
                        Stage::Parse,
                        format!("the file uses more than {MAX_NAMES} different column names"),
                    ));
                }
                self.names.push(name.to_string());
                self.by_name.insert(name.to_string(), self.names.len() - 1);
                self.set_in.push(0);
                self.names.len() - 1
            }
        };
        let this = self.records + 1;
        if self.set_in[col] == this {
            return Ok(None);
        }
        self.set_in[col] = this;
        Ok(Some(col))
    }

    /// Sets a column of the current record (`None`: null).
    pub(super) fn set(&mut self, col: usize, value: Option<&str>) {
        if self.spans.len() <= col {
            self.spans.resize(col + 1, None);
        }
        self.spans[col] = value.map(|v| {
            let start = self.text.len();
            self.text.push_str(v);
            (start, self.text.len())
        });
    }

    /// Hands the finished record to `out`. `line` is where it starts (a line, or for a JSON
    /// array the record's number).
    pub(super) fn finish(&mut self, line: u64) -> Result<(), Stop> {
        let width = self.names.len();
        if self.announced != width {
            self.out.columns(&self.names)?;
            self.announced = width;
        }
        self.spans.resize(width, None);
        let r = self.out.row(line, &self.text, &self.spans);
        self.text.clear();
        self.spans.iter_mut().for_each(|s| *s = None);
        self.records += 1;
        r
    }

    /// Something the parser passed over, for the file's ledger row (see `RowOut::note`).
    pub(super) fn note(&mut self, note: String) {
        self.out.note(note);
    }

    /// Announces the columns even when there were no records, so empty files still have a
    /// (possibly empty) column list.
    pub(super) fn close(&mut self) -> Result<(), Stop> {
        if self.announced == usize::MAX {
            self.out.columns(&self.names)?;
            self.announced = self.names.len();
        }
        Ok(())
    }
}
