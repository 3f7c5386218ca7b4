//! The record stages between a parser and the writer, run on the worker threads.
//!
//! ```text
//! parser ──row──► shape ──► convert (normalize, parse, validate) ──► key ──► chunk ──► writer
//!                   │                      │
//!                   └─ drift: reject file  └─ bad record: counted against max_bad_records
//! ```
//!
//! Each stage is a small filter over one row at a time:
//! - `Shape` maps the file's columns onto the dataset's (R-drift: new and missing columns per
//!   policy) and decides each output cell's source.
//! - `Convert` applies a typed column's contract (`ColumnSpec::convert`); an untyped column passes
//!   its text through untouched.
//! - `Key` hashes the record key (R-record-key); the writer does the deduplication, since only it
//!   sees every stored record.
//! - `BadRecords` keeps the rejects and decides, against `max_bad_records`, whether the file
//!   still loads (R-bad-records).
//!
//! Rows are built in place in the chunk's text buffer: a value that needs no rewriting costs no
//! copy beyond the row's text.

pub(crate) mod bad;
mod shape;

pub use shape::{missing_columns_reject, new_columns_reject, too_many_columns};

use super::{Columns, Msg};
use crate::config::DatasetSpec;
use crate::format::{RowOut, Stop};
use crate::record::{Cell, Chunk};
use crate::reject::{name_list, plural, truncate_value, Kind, RecordReject, Reject, Stage};
use crate::store::names::MAX_DATA_COLUMNS;
use crate::typed::{KeyHasher, Value};
use bad::BadRecords;
use crossbeam_channel::Sender;
use shape::Shape;
use std::borrow::Cow;

/// Rejects kept for the reason file of a rejected file.
pub const FIRST_REJECTS: usize = 10;

/// The stages for one file: a `RowOut` that sends chunks to the writer.
pub struct Stages<'a> {
    tx: &'a Sender<Msg>,
    spec: &'a DatasetSpec,
    /// The parser gives all columns up front (CSV), so missing ones are known at once.
    fixed: bool,
    shape: Shape,
    bad: BadRecords,
    chunk: Chunk,
    good: u64,
    /// Every record the parser handed over, good or bad.
    read: u64,
    cells: Vec<Cell>,
    /// Whether rows go through the per-cell path (typed columns or a key).
    staged: bool,
    /// What the parser passed over (blank lines), for the file's warnings.
    pub notes: Vec<String>,
}

/// The rows of a file's first chunk (later ones are `record::CHUNK_ROWS`).
const FIRST_CHUNK_ROWS: u64 = 512;

impl<'a> Stages<'a> {
    pub fn new(tx: &'a Sender<Msg>, spec: &'a DatasetSpec, fixed: bool) -> Stages<'a> {
        Stages {
            tx,
            spec,
            fixed,
            shape: Shape::new(spec),
            bad: BadRecords::new(spec.max_bad),
            chunk: Chunk::new(0),
            good: 0,
            read: 0,
            cells: Vec::new(),
            staged: spec.typed() || !spec.key.is_empty(),
            notes: Vec::new(),
        }
    }

    /// Sends the chunk and the rejects gathered with it.
    pub fn flush(&mut self) -> Result<(), Stop> {
        if !self.bad.pending.is_empty() {
            let r = std::mem::take(&mut self.bad.pending);
            self.tx.send(Msg::Rejects(r)).map_err(|_| Stop::Cancelled)?;
        }
        if self.chunk.is_empty() {
            return Ok(());
        }
        let width = self.chunk.width;
        let full = std::mem::replace(&mut self.chunk, Chunk::new(width));
        self.tx.send(Msg::Rows(full)).map_err(|_| Stop::Cancelled)
    }

    /// Ends the file: sends what is left and decides its verdict. Returns (good, bad) records.
    pub fn finish(&mut self) -> Result<(u64, u64), Stop> {
        if self.spec.typed() && !self.fixed {
            self.shape.check_missing(self.spec)?;
        }
        let missing_key = self.shape.missing_key(self.spec);
        if !missing_key.is_empty() && self.good + self.bad.count > 0 {
            return Err(self.missing_key(&missing_key).into());
        }
        if let Some(r) = self.bad.verdict(self.read, true) {
            return Err(r.into());
        }
        self.flush()?;
        Ok((self.good, self.bad.count))
    }

    /// The first rejected records, for the reason file of a rejected file.
    pub fn first_rejects(&self) -> Vec<RecordReject> {
        self.bad.first.clone()
    }

    /// How many records were rejected so far.
    pub fn bad_count(&self) -> u64 {
        self.bad.count
    }

    fn missing_key(&self, cols: &[String]) -> Reject {
        Reject::new(
            Kind::SchemaMissingColumn,
            Stage::Validate,
            format!(
                "the file lacks key column{} {} of dataset {:?}",
                plural(cols.len()),
                name_list(cols),
                self.spec.name
            ),
        )
        .in_field(cols.join(", "))
    }

    /// The staged path: build each cell, convert, validate, hash the key.
    fn staged_row(
        &mut self,
        line: u64,
        text: &str,
        spans: &[Option<(usize, usize)>],
    ) -> Result<(), Stop> {
        let Some(base) = self.chunk.push_text(text) else {
            self.flush()?;
            return self.staged_row(line, text, spans);
        };
        self.cells.clear();
        for j in 0..self.shape.out.len() {
            let raw = self.shape.from[j]
                .and_then(|i| spans.get(i).copied().flatten())
                .map(|(a, b)| &text[a..b]);
            let cell = match self.shape.conv[j] {
                None => match raw {
                    None => Cell::Null,
                    Some(s) => span_cell(base, text, s),
                },
                Some(c) => match self.spec.columns[c].convert(raw) {
                    Ok(v) => value_cell(&mut self.chunk.text, base, text, v),
                    Err(reason) => {
                        self.chunk.text.truncate(base as usize);
                        self.bad.record(RecordReject {
                            kind: Kind::RecordInvalid,
                            line,
                            field: Some(self.shape.out[j].source.name().to_string()),
                            value: raw.map(truncate_value),
                            reason,
                        });
                        return Ok(());
                    }
                },
            };
            self.cells.push(cell);
        }
        if self.bad.doomed {
            // Rows of a file that will be rejected are not sent.
            self.chunk.text.truncate(base as usize);
            return Ok(());
        }
        if !self.spec.key.is_empty() {
            let mut key = KeyHasher::default();
            let mut empty = Vec::new();
            for (p, out) in self.shape.key_out.iter().enumerate() {
                match out.map_or(Cell::Null, |j| self.cells[j]) {
                    Cell::Int(v) => key.int(v),
                    Cell::Real(v) => key.real(v),
                    t @ Cell::Text { start, end } if end > start => {
                        key.text(self.chunk.text(t).unwrap_or_default())
                    }
                    // Null or an empty string: this record cannot be told apart by its key.
                    _ => empty.push(self.spec.key[p].clone()),
                }
            }
            if !empty.is_empty() {
                self.chunk.text.truncate(base as usize);
                self.bad.record(RecordReject {
                    kind: Kind::RecordEmptyKey,
                    line,
                    field: Some(empty.join(", ")),
                    value: None,
                    reason: format!(
                        "the key column{} {} {} empty, so the record cannot be told apart from \
                         others by its key",
                        plural(empty.len()),
                        name_list(&empty),
                        if empty.len() == 1 { "is" } else { "are" }
                    ),
                });
                return Ok(());
            }
            self.chunk.keys.push(key.finish());
        }
        self.chunk.push_cells(line, &self.cells);
        self.good += 1;
        Ok(())
    }
}

/// A cell for a slice of the row's source text (copied into the chunk at `base`).
fn span_cell(base: u32, text: &str, s: &str) -> Cell {
    let off = s.as_ptr() as usize - text.as_ptr() as usize;
    Cell::Text {
        start: base + off as u32,
        end: base + (off + s.len()) as u32,
    }
}

fn value_cell(buf: &mut String, base: u32, text: &str, v: Value<'_>) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Int(i) => Cell::Int(i),
        Value::Real(r) => Cell::Real(r),
        Value::Text(Cow::Borrowed(s)) => span_cell(base, text, s),
        Value::Text(Cow::Owned(s)) => Chunk::alloc_text(buf, &s),
    }
}

impl RowOut for Stages<'_> {
    fn columns(&mut self, names: &[String]) -> Result<(), Stop> {
        self.flush()?;
        self.shape.map(self.spec, names)?;
        if self.shape.out.len() > MAX_DATA_COLUMNS {
            return Err(too_many_columns(self.shape.out.len()).into());
        }
        if self.fixed {
            if self.spec.typed() {
                self.shape.check_missing(self.spec)?;
            }
            let missing_key = self.shape.missing_key(self.spec);
            if !missing_key.is_empty() {
                return Err(self.missing_key(&missing_key).into());
            }
        }
        self.chunk = Chunk::new(self.shape.out.len());
        self.tx
            .send(Msg::Columns(Columns {
                defs: self.shape.out.clone(),
                key: self.shape.key_out.clone(),
            }))
            .map_err(|_| Stop::Cancelled)
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn bad_row(
        &mut self,
        line: u64,
        field: &str,
        value: Option<&str>,
        why: String,
    ) -> Result<(), Stop> {
        self.read += 1;
        self.bad.record(RecordReject {
            kind: Kind::RecordInvalid,
            line,
            field: Some(field.to_string()),
            value: value.map(truncate_value),
            reason: why,
        });
        if self.bad.doomed && self.bad.first.len() >= FIRST_REJECTS {
            let r = self.bad.verdict(self.read, false).expect("doomed");
            return Err(r.into());
        }
        Ok(())
    }

    fn row(&mut self, line: u64, text: &str, spans: &[Option<(usize, usize)>]) -> Result<(), Stop> {
        self.read += 1;
        if self.staged {
            self.staged_row(line, text, spans)?;
            if self.bad.doomed && self.bad.first.len() >= FIRST_REJECTS {
                // Enough examples for the reason file; the rest of the file cannot change
                // the verdict.
                let r = self.bad.verdict(self.read, false).expect("doomed");
                return Err(r.into());
            }
        } else {
            if !self.chunk.push_row(line, text, spans) {
                self.flush()?;
                if !self.chunk.push_row(line, text, spans) {
                    return Err(Stop::Reject(
                        Reject::new(
                            Kind::CsvSyntax,
                            Stage::Parse,
                            "a single record is larger than 4 GiB",
                        )
                        .at_line(line),
                    ));
                }
            }
            self.good += 1;
        }
        // A file's first chunk is sent early: the writer cannot store anything of the file
        // before it, and the store waits meanwhile.
        let first = self.chunk.rows() as u64 == self.good && self.good >= FIRST_CHUNK_ROWS;
        if first || self.chunk.is_full() {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
