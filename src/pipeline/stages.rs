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

use super::{ColumnDef, ColumnSource, Columns, Msg};
use crate::config::{BadLimit, DatasetSpec, Policy};
use crate::format::{ColumnKey, RowOut, Stop};
use crate::record::{Cell, Chunk};
use crate::reject::{name_list, plural, truncate_value, Kind, RecordReject, Reject, Stage};
use crate::schema::{ColType, KeyHasher, Value};
use crate::store::names::MAX_DATA_COLUMNS;
use crossbeam_channel::Sender;
use std::borrow::Cow;

/// Rejects kept for the reason file of a rejected file.
pub const FIRST_REJECTS: usize = 10;

/// Maps a file's columns onto the dataset's.
#[derive(Debug, Default)]
struct Shape {
    /// Output columns: the declared ones first (typed datasets), then the file's own.
    out: Vec<ColumnDef>,
    /// Per output column: the file column it is read from.
    from: Vec<Option<usize>>,
    /// Per output column: the declared column whose contract converts it.
    conv: Vec<Option<usize>>,
    /// Per declared column: whether its file column matched its name exactly (not only
    /// without case).
    exact: Vec<bool>,
    /// The file's columns so far (JSON files reveal columns as they go).
    keys: Vec<ColumnKey>,
    /// Per key column (in `key` order): its output column, once the file has shown it.
    key_out: Vec<Option<usize>>,
}

fn ambiguous(spec: &DatasetSpec, what: &str, a: &ColumnKey, b: &ColumnKey) -> Reject {
    Reject::new(
        Kind::SchemaAmbiguousColumn,
        Stage::Validate,
        format!(
            "the file's columns {} and {} could both be {what} of dataset {:?} (they differ only \
             in case or surrounding spaces, and neither matches exactly)",
            a.describe(),
            b.describe(),
            spec.name
        ),
    )
    .in_field(format!("{}, {}", a.name, b.name))
}

impl Shape {
    fn new(spec: &DatasetSpec) -> Shape {
        let mut s = Shape {
            key_out: vec![None; spec.key.len()],
            exact: vec![false; spec.columns.len()],
            ..Shape::default()
        };
        for (i, c) in spec.columns.iter().enumerate() {
            s.push(ColumnSource::Declared(c.name.clone()), c.ty, None, Some(i));
        }
        s
    }

    fn push(
        &mut self,
        source: ColumnSource,
        ty: ColType,
        from: Option<usize>,
        conv: Option<usize>,
    ) {
        self.out.push(ColumnDef { source, ty });
        self.from.push(from);
        self.conv.push(conv);
    }

    /// Maps the file columns not mapped yet. Errors when drift policy rejects the file.
    fn map(&mut self, spec: &DatasetSpec, names: &[String]) -> Result<(), Reject> {
        let first_new = self.keys.len();
        self.keys = ColumnKey::for_header(names);
        let new = first_new..self.keys.len();
        if !spec.typed() {
            for i in new {
                self.push(
                    ColumnSource::File(self.keys[i].clone()),
                    ColType::String,
                    Some(i),
                    None,
                );
            }
            return self.map_key(spec);
        }
        // Declared columns take the file column of exactly their name first, then one that
        // differs only in case; two candidates and no exact match is a guess, so refused.
        let mut rest = Vec::new();
        for i in new {
            let k = &self.keys[i];
            let d = (k.occurrence == 1)
                .then(|| spec.columns.iter().position(|c| c.source == k.name))
                .flatten();
            match d {
                Some(d) => match self.from[d] {
                    None => {
                        self.from[d] = Some(i);
                        self.exact[d] = true;
                    }
                    Some(j) => {
                        let other = self.keys[j].clone();
                        return Err(ambiguous(
                            spec,
                            &format!("column {:?}", spec.columns[d].name),
                            &other,
                            &self.keys[i],
                        ));
                    }
                },
                None => rest.push(i),
            }
        }
        let mut refused = Vec::new();
        for i in rest {
            let k = self.keys[i].clone();
            let d = spec
                .columns
                .iter()
                .position(|c| c.source.eq_ignore_ascii_case(&k.name));
            match d.map(|d| (d, self.from[d])) {
                Some((d, None)) => {
                    self.from[d] = Some(i);
                    self.exact[d] = false;
                    continue;
                }
                Some((d, Some(j))) if !self.exact[d] => {
                    let other = self.keys[j].clone();
                    return Err(ambiguous(
                        spec,
                        &format!("column {:?}", spec.columns[d].name),
                        &other,
                        &k,
                    ));
                }
                _ => {}
            }
            match spec.on_new_column {
                Policy::Fail => refused.push(k.name.clone()),
                Policy::Ignore => {}
                Policy::Add => self.push(ColumnSource::File(k), ColType::String, Some(i), None),
            }
        }
        if !refused.is_empty() {
            let described: Vec<String> = refused.iter().map(|n| format!("{n:?}")).collect();
            return Err(new_columns_reject(spec, &described, &refused));
        }
        self.map_key(spec)
    }

    /// Finds the output column of each key column: a declared column by name (without case),
    /// else the file column of exactly that name, else the one differing only in case.
    fn map_key(&mut self, spec: &DatasetSpec) -> Result<(), Reject> {
        for (p, k) in spec.key.iter().enumerate() {
            let declared = self.out.iter().position(
                |c| matches!(&c.source, ColumnSource::Declared(n) if n.eq_ignore_ascii_case(k)),
            );
            if declared.is_some() {
                self.key_out[p] = declared;
                continue;
            }
            let file = |j: usize| match &self.out[j].source {
                ColumnSource::File(key) if key.occurrence == 1 => Some(key),
                _ => None,
            };
            let exact = (0..self.out.len()).find(|&j| file(j).is_some_and(|f| f.name == *k));
            let near: Vec<usize> = (0..self.out.len())
                .filter(|&j| file(j).is_some_and(|f| f.name.eq_ignore_ascii_case(k)))
                .collect();
            self.key_out[p] = match (exact, near.as_slice()) {
                (Some(j), _) => Some(j),
                (None, [j]) => Some(*j),
                (None, []) => None,
                (None, [a, b, ..]) => {
                    let (a, b) = (file(*a).cloned(), file(*b).cloned());
                    return Err(ambiguous(
                        spec,
                        &format!("key column {k:?}"),
                        &a.expect("a file column"),
                        &b.expect("a file column"),
                    ));
                }
            };
        }
        Ok(())
    }

    /// Declared columns the file has not shown (so far).
    fn missing<'s>(&self, spec: &'s DatasetSpec) -> Vec<&'s crate::schema::ColumnSpec> {
        spec.columns
            .iter()
            .enumerate()
            .filter(|(i, _)| self.from[*i].is_none())
            .map(|(_, c)| c)
            .collect()
    }

    /// Checks missing declared columns against the policy (typed datasets).
    fn check_missing(&self, spec: &DatasetSpec) -> Result<(), Reject> {
        let missing = self.missing(spec);
        let refused: Vec<String> = missing
            .iter()
            .filter(|c| c.required || spec.on_missing_column == Policy::Fail)
            .map(|c| c.source.clone())
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let why = if spec.on_missing_column == Policy::Fail {
            "on_missing_column = fail"
        } else {
            "required"
        };
        Err(missing_columns_reject(spec, &refused, why))
    }

    /// Key columns with no output column (untyped datasets whose files lack them).
    fn missing_key(&self, spec: &DatasetSpec) -> Vec<String> {
        spec.key
            .iter()
            .zip(&self.key_out)
            .filter(|(_, o)| o.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Bad records and the file's verdict.
#[derive(Debug)]
struct BadRecords {
    limit: BadLimit,
    count: u64,
    first: Vec<RecordReject>,
    /// Rejects not yet sent to the writer.
    pending: Vec<RecordReject>,
    /// The file is over its limit whatever follows; rows are no longer sent.
    doomed: bool,
}

impl BadRecords {
    fn new(limit: BadLimit) -> BadRecords {
        BadRecords {
            limit,
            count: 0,
            first: Vec::new(),
            pending: Vec::new(),
            doomed: false,
        }
    }

    fn record(&mut self, r: RecordReject) {
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

    /// The file's rejection, when its bad records are over the limit.
    fn verdict(&self, good: u64, complete: bool) -> Option<Reject> {
        let total = good + self.count;
        if !self.doomed && !self.limit.exceeded(self.count, total) {
            return None;
        }
        let first = self.first.first()?;
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
                        "{} of {total} records are bad, more than max_bad_records = {limit}; \
                         the first: {at}",
                        self.count
                    )
                } else {
                    format!("more than max_bad_records = {limit} records are bad; the first: {at}")
                },
            ),
        };
        let mut r = Reject::new(kind, Stage::Validate, message).at_line(first.line);
        r.field = first.field.clone();
        Some(r)
    }
}

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
    cells: Vec<Cell>,
    /// Whether rows go through the per-cell path (typed columns or a key).
    staged: bool,
    /// What the parser passed over (blank lines), for the file's warnings.
    pub notes: Vec<String>,
}

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
        if let Some(r) = self.bad.verdict(self.good, true) {
            return Err(r.into());
        }
        self.flush()?;
        Ok((self.good, self.bad.count))
    }

    /// The first rejected records, for the reason file of a rejected file.
    pub fn first_rejects(&self) -> Vec<RecordReject> {
        self.bad.first.clone()
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

/// The reject for file columns a dataset refuses (R-drift), typed or not: `described` as the
/// message shows them, `fields` as the reject's field lists them.
pub fn new_columns_reject(spec: &DatasetSpec, described: &[String], fields: &[String]) -> Reject {
    Reject::new(
        Kind::SchemaNewColumn,
        Stage::Validate,
        format!(
            "the file has column{} {} that dataset {:?} does not {} (on_new_column = {})",
            plural(described.len()),
            described.join(", "),
            spec.name,
            if spec.typed() { "declare" } else { "have" },
            spec.on_new_column.id()
        ),
    )
    .in_field(fields.join(", "))
}

/// The reject for dataset columns a file lacks (R-drift), typed or not; `why` names the rule.
pub fn missing_columns_reject(spec: &DatasetSpec, names: &[String], why: &str) -> Reject {
    Reject::new(
        Kind::SchemaMissingColumn,
        Stage::Validate,
        format!(
            "the file lacks column{} {} of dataset {:?} ({why})",
            plural(names.len()),
            name_list(names),
            spec.name
        ),
    )
    .in_field(names.join(", "))
}

/// The reject for a file (or table) with more columns than a table can hold.
pub fn too_many_columns(n: usize) -> Reject {
    Reject::new(
        Kind::SchemaTooManyColumns,
        Stage::Validate,
        format!("{n} columns are more than a dataset table holds ({MAX_DATA_COLUMNS})"),
    )
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

    fn row(&mut self, line: u64, text: &str, spans: &[Option<(usize, usize)>]) -> Result<(), Stop> {
        if self.staged {
            self.staged_row(line, text, spans)?;
            if self.bad.doomed && self.bad.first.len() >= FIRST_REJECTS {
                // Enough examples for the reason file; the rest of the file cannot change
                // the verdict.
                let r = self.bad.verdict(self.good, false).expect("doomed");
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
        if self.chunk.is_full() {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetSpec;
    use crate::schema::{ColType, ColumnSpec};
    use crossbeam_channel::unbounded;

    fn typed() -> DatasetSpec {
        let mut d = DatasetSpec::implied("t");
        let mut id = ColumnSpec::new("id", ColType::Int);
        id.required = true;
        d.columns = vec![id, ColumnSpec::new("amount", ColType::Decimal)];
        d.key = vec!["id".into()];
        d.on_new_column = Policy::Fail;
        d.on_missing_column = Policy::Fail;
        d
    }

    fn feed(
        spec: &DatasetSpec,
        cols: &[&str],
        rows: &[&[&str]],
    ) -> (Vec<Msg>, Result<(u64, u64), Stop>) {
        let (tx, rx) = unbounded();
        let mut s = Stages::new(&tx, spec, true);
        let names: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        let r = s.columns(&names).and_then(|_| {
            for (i, row) in rows.iter().enumerate() {
                let text = row.concat();
                let mut spans = Vec::new();
                let mut at = 0;
                for v in *row {
                    spans.push(if v.is_empty() {
                        None
                    } else {
                        Some((at, at + v.len()))
                    });
                    at += v.len();
                }
                s.row(i as u64 + 2, &text, &spans)?;
            }
            s.finish()
        });
        drop(s);
        drop(tx);
        (rx.into_iter().collect(), r)
    }

    #[test]
    fn typed_rows_are_converted_and_keyed() {
        let spec = typed();
        let (msgs, r) = feed(&spec, &["ID", "amount"], &[&["1", "2.50"], &["2", ""]]);
        assert_eq!(r.unwrap(), (2, 0));
        let chunk = msgs
            .iter()
            .find_map(|m| match m {
                Msg::Rows(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(chunk.row(0)[0], Cell::Int(1));
        assert_eq!(chunk.text(chunk.row(0)[1]), Some("2.5"));
        assert_eq!(chunk.row(1)[1], Cell::Null);
        assert_eq!(chunk.keys.len(), 2);
        assert_ne!(chunk.keys[0], chunk.keys[1]);
    }

    #[test]
    fn drift_and_bad_records_reject_the_file() {
        let spec = typed();
        let (_, r) = feed(&spec, &["id", "amount", "colour"], &[]);
        match r {
            Err(Stop::Reject(r)) => {
                assert_eq!(r.kind, Kind::SchemaNewColumn);
                assert_eq!(r.field.as_deref(), Some("colour"));
            }
            _ => panic!("expected a reject"),
        }
        let (_, r) = feed(&spec, &["amount"], &[]);
        assert!(matches!(r, Err(Stop::Reject(r)) if r.kind == Kind::SchemaMissingColumn));
        let (_, r) = feed(&spec, &["id", "amount"], &[&["1", "x"], &["2", "3"]]);
        match r {
            Err(Stop::Reject(r)) => {
                assert_eq!(r.kind, Kind::RecordInvalid);
                assert_eq!(r.line, Some(2));
                assert_eq!(r.field.as_deref(), Some("amount"));
            }
            _ => panic!("expected a reject"),
        }
    }

    #[test]
    fn bad_records_within_a_percentage_are_set_aside() {
        let mut spec = typed();
        spec.max_bad = BadLimit::Percent(10.0);
        let rows: Vec<Vec<String>> = (0..20)
            .map(|i| vec![if i == 5 { "x".into() } else { i.to_string() }, "1".into()])
            .collect();
        let refs: Vec<Vec<&str>> = rows
            .iter()
            .map(|r| r.iter().map(String::as_str).collect())
            .collect();
        let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        let (msgs, r) = feed(&spec, &["id", "amount"], &slices);
        assert_eq!(r.unwrap(), (19, 1));
        let rejects: Vec<&RecordReject> = msgs
            .iter()
            .filter_map(|m| match m {
                Msg::Rejects(r) => Some(r.iter()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].line, 7);
        assert_eq!(rejects[0].value.as_deref(), Some("x"));
        // Three bad in twenty is over 10%.
        let slices3: Vec<&[&str]> = slices
            .iter()
            .enumerate()
            .map(|(i, r)| if i < 3 { &["bad", "1"][..] } else { *r })
            .collect();
        let (_, r) = feed(&spec, &["id", "amount"], &slices3);
        assert!(matches!(r, Err(Stop::Reject(r)) if r.kind == Kind::TooManyBadRecords));
    }
}
