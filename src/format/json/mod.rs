//! JSON and NDJSON parsing, streamed record by record.
//!
//! Records are JSON objects. A `.json` file holds an array of them, a stream of them
//! (one or many, whitespace-separated), or, with a configured JSON pointer, an object holding the
//! array somewhere inside. Values are kept exactly as sent: strings unescaped, numbers and
//! booleans as their source text (`1E2` stays `1E2`, `-0` stays `-0`, 30 digits stay 30 digits:
//! nothing goes through a float), `null` as null, nested objects and arrays as their source text
//! byte for byte. Typed datasets convert later, in the stages, exactly or not at all.
//!
//! Strict by default: a record that names a key twice is `json.duplicate_key` (which value was
//! meant would be a guess), a `\u0000` in a string is `encoding.nul`, and a record longer than
//! `max_record` bytes is `json.record_too_long` before it is buffered whole.
//!
//! The array is never materialized: serde seeds visit it element by element and hand each
//! record to the `RowOut` as soon as it is complete.

mod seeds;

use super::rows::Builder;
use super::text::{classify, nul_reject, reject_io};
use super::{RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use seeds::{RecordSeed, Top, TopSeed};
use serde::de::{self, DeserializeSeed};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// The longest record accepted, in bytes.
    pub max_record: usize,
    /// Keep `\u0000` in strings instead of refusing the file.
    pub allow_nul: bool,
    pub records: Records,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            max_record: super::DEFAULT_MAX_RECORD,
            allow_nul: false,
            records: Records::Auto,
        }
    }
}

/// What a JSON file's records are (`records = …` on a dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Records {
    /// Objects, or arrays under a header row when the first record is an array of strings.
    #[default]
    Auto,
    /// Objects only (an array is `json.not_records`).
    Objects,
    /// Compact rows: the first array names the columns, every later array holds one record's
    /// values in that order (ClickHouse's JSONCompactEachRowWithNames, and JSON arrays of
    /// arrays with a header row).
    Arrays,
}

/// What a file's records turned out to be, decided by its first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    Unknown,
    Objects,
    /// Arrays: the header's columns, in order.
    Arrays(Vec<usize>),
}

/// Counts the bytes read since the last record ended; refuses to go past the limit.
struct Limit<R> {
    inner: R,
    read: Rc<Cell<usize>>,
    max: usize,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read.get() > self.max {
            return Err(reject_io(Reject::new(
                Kind::JsonRecordTooLong,
                Stage::Parse,
                format!(
                    "a record is longer than max_line_bytes ({} bytes); the rest of it was not read",
                    self.max
                ),
            )));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

/// Builds one record at a time and passes it on.
pub(super) struct Rows<'o> {
    pub(super) opt: JsonOptions,
    pub(super) rec: Builder<'o>,
    /// Why we stopped, when serde can only carry a string: the consumer's stop, or a content
    /// error found inside a record (its position is filled in from serde's error).
    pub(super) stop: Option<Stop>,
    /// Bytes read since the last record ended (shared with the `Limit` reader).
    pub(super) since_record: Rc<Cell<usize>>,
    pub(super) shape: Shape,
}

impl<'o> Rows<'o> {
    fn new(out: &'o mut dyn RowOut, opt: &JsonOptions) -> Self {
        Rows {
            opt: opt.clone(),
            rec: Builder::new(out),
            stop: None,
            since_record: Rc::new(Cell::new(0)),
            shape: Shape::Unknown,
        }
    }

    /// A reader of `r` that this record builder bounds.
    fn limited<R: Read>(&self, r: R) -> BufReader<Limit<R>> {
        BufReader::with_capacity(
            64 * 1024,
            Limit {
                inner: r,
                read: self.since_record.clone(),
                max: self.opt.max_record,
            },
        )
    }

    /// Fails the parse with a content error; serde only carries a string, so the reject waits in
    /// `stop` and `json_reject` picks it up with serde's position.
    pub(super) fn fail<E: de::Error>(&mut self, r: Reject) -> E {
        let msg = r.message.clone();
        self.stop = Some(Stop::Reject(r));
        E::custom(msg)
    }

    /// The column of a key in the current record (`None` after `fail`: a key named twice).
    pub(super) fn column<E: de::Error>(&mut self, raw: &str) -> Result<usize, E> {
        let key = raw.trim();
        match self.rec.column(key) {
            Ok(Some(col)) => Ok(col),
            Ok(None) => {
                let same = if raw == key {
                    format!("{key:?} twice")
                } else {
                    format!(
                        "{key:?} twice (keys that differ only in surrounding spaces name one column)"
                    )
                };
                let this = self.rec.records + 1;
                Err(self.fail(Reject::new(
                    Kind::JsonDuplicateKey,
                    Stage::Parse,
                    format!(
                        "record {this} names the key {same}; which value is meant would be a guess"
                    ),
                )))
            }
            Err(r) => Err(self.fail(r)),
        }
    }

    pub(super) fn set(&mut self, col: usize, value: Option<&str>) {
        self.rec.set(col, value);
    }

    /// Hands the finished record on. `line` is the line (NDJSON) or record number (JSON).
    pub(super) fn finish(&mut self, line: u64) -> Result<(), Stop> {
        let r = self.rec.finish(line);
        self.since_record.set(0);
        r
    }

    /// A compact stream of lines that turned out to be only its first line: a file that is one
    /// array of strings (`["A","B"]`). With `records = "auto"` that is not records (a header
    /// row over nothing would be a guess); with `records = "arrays"` it is a header row and no
    /// records, like a CSV header alone. (`[["A","B"]]` says it is rows: a header, no records.)
    pub(super) fn header_only(&self) -> Result<(), Stop> {
        if matches!(self.shape, Shape::Arrays(_))
            && self.rec.records == 0
            && self.opt.records == Records::Auto
        {
            return Err(Reject::new(
                Kind::JsonNotRecords,
                Stage::Parse,
                "the file is one array of strings and nothing else: that is not records (set \
                 records = \"arrays\" on the dataset if it is a header row of a compact file \
                 that may hold no rows)",
            )
            .into());
        }
        Ok(())
    }

    pub(super) fn close(&mut self) -> Result<(), Stop> {
        self.rec.close()
    }
}

/// Splits a JSON pointer (RFC 6901) into unescaped segments.
pub fn pointer_segments(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("JSON pointer {pointer:?} must start with '/'"));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// serde_json's message without the " at line L column C" it appends (ferry says where itself).
pub(super) fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

/// Turns a serde_json error into why the file stops. `ndjson_line`: the line of an NDJSON record
/// (parsed on its own, so serde's line says nothing about the file).
fn json_reject(e: serde_json::Error, rows: &mut Rows, ndjson_line: Option<u64>) -> Stop {
    let line = ndjson_line.unwrap_or(e.line() as u64);
    let column = e.column();
    match rows.stop.take() {
        Some(Stop::Reject(mut r)) => {
            // A content error found inside a record: serde knows where.
            if r.kind == Kind::EncodingNul {
                r = nul_reject(line, 0);
                r.offset = None;
                r.message = format!(
                    "line {line}: a string holds a \\u0000 (NUL) character; most tools cut a \
                     value there and PostgreSQL cannot store it. If the partner really sends \
                     NULs, set allow_nul = true on the dataset"
                );
            } else {
                r.message = format!("line {line}: {}", r.message);
            }
            r.line = Some(line);
            return Stop::Reject(r);
        }
        Some(stop) => return stop,
        None => {}
    }
    match e.classify() {
        serde_json::error::Category::Io => Stop::Reject(classify(io::Error::from(e))),
        serde_json::error::Category::Data => Stop::Reject(
            Reject::new(
                Kind::JsonNotRecords,
                Stage::Parse,
                format!(
                    "record {} (line {line}) is not a JSON object: {}",
                    rows.rec.records + 1,
                    bare_message(&e)
                ),
            )
            .at_line(line),
        ),
        _ => Stop::Reject(
            Reject::new(
                Kind::JsonSyntax,
                Stage::Parse,
                format!(
                    "invalid JSON at line {line}, column {column}: {}",
                    bare_message(&e)
                ),
            )
            .at_line(line),
        ),
    }
}

/// Parses a `.json` file: an array of records, a stream of records, or the array at `pointer`.
pub fn parse_json(
    r: impl Read,
    pointer: &[String],
    opt: &JsonOptions,
    out: &mut dyn RowOut,
) -> Result<u64, Stop> {
    let mut rows = Rows::new(out, opt);
    let mut de = serde_json::Deserializer::from_reader(rows.limited(r));
    if de.end().is_ok() {
        return Err(Reject::new(Kind::Empty, Stage::Parse, "the file holds no JSON value").into());
    }
    let top = TopSeed {
        rows: &mut rows,
        pointer,
    }
    .deserialize(&mut de)
    .map_err(|e| json_reject(e, &mut rows, None))?;
    match top {
        Top::Array | Top::Found => {
            if let Err(e) = de.end() {
                // More after the records: another JSON value is valid JSON that is not records
                // in the shape ferry reads; anything else is a syntax error.
                let line = e.line() as u64;
                <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut de)
                    .map_err(|_| json_reject(e, &mut rows, None))?;
                return Err(Reject::new(
                    Kind::JsonNotRecords,
                    Stage::Parse,
                    format!(
                        "after its array of records the file holds another JSON value (line \
                         {line}): a .json file is one array of records or a stream of objects, \
                         not several arrays"
                    ),
                )
                .at_line(line)
                .into());
            }
        }
        Top::NotFound => {
            return Err(Reject::new(
                Kind::JsonNotRecords,
                Stage::Parse,
                format!(
                    "nothing at JSON pointer /{}: no records found",
                    pointer.join("/")
                ),
            )
            .into())
        }
        Top::Record => {
            // A stream of records: the first one is read, pass it on, then the rest.
            rows.finish(1)?;
            while de.end().is_err() {
                let n = rows.rec.records + 1;
                let record = RecordSeed(&mut rows)
                    .deserialize(&mut de)
                    .map_err(|e| json_reject(e, &mut rows, None))?;
                if record {
                    rows.finish(n)?;
                }
            }
        }
    }
    rows.close()?;
    Ok(rows.rec.records)
}

/// Parses NDJSON: one record per line; blank lines are skipped and noted.
pub fn parse_ndjson(r: impl Read, opt: &JsonOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut rows = Rows::new(out, opt);
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut offset = 0u64;
    let mut any = false;
    // Blank lines before a record (those after the last one are the file's end).
    let (mut blank, mut blank_at) = (0u64, Vec::new());
    // Blank lines since the last record: how many, and the first few.
    let (mut gap, mut gap_at) = (0u64, Vec::new());
    loop {
        line.clear();
        let got = (&mut reader)
            .take(opt.max_record as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Stop::Reject(classify(e)))?;
        if got == 0 {
            break;
        }
        n += 1;
        if got > opt.max_record && line.last() != Some(&b'\n') {
            return Err(Reject::new(
                Kind::JsonRecordTooLong,
                Stage::Parse,
                format!(
                    "line {n} is longer than max_line_bytes ({} bytes); the rest of it was not read",
                    opt.max_record
                ),
            )
            .at_line(n)
            .at_offset(offset)
            .into());
        }
        offset += got as u64;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            gap += 1;
            if gap_at.len() < crate::format::BLANK_LINES_NAMED {
                gap_at.push(n);
            }
            continue;
        }
        blank += std::mem::take(&mut gap);
        let room = crate::format::BLANK_LINES_NAMED.saturating_sub(blank_at.len());
        blank_at.extend(gap_at.drain(..).take(room));
        any = true;
        let mut de = serde_json::Deserializer::from_slice(&line);
        let parsed = RecordSeed(&mut rows)
            .deserialize(&mut de)
            .and_then(|record| de.end().map(|()| record));
        let record = match parsed {
            Ok(record) => record,
            Err(e) => {
                let mut stop = json_reject(e, &mut rows, Some(n));
                if let Stop::Reject(r) = &mut stop {
                    if r.kind == Kind::JsonNotRecords && !r.message.contains("array") {
                        r.message = format!("line {n} is not a JSON object");
                    }
                }
                return Err(stop);
            }
        };
        if record {
            rows.finish(n)?;
        }
    }
    if !any {
        return Err(Reject::new(Kind::Empty, Stage::Parse, "the file holds no records").into());
    }
    if let Some(note) = crate::format::blank_note(blank, &blank_at) {
        rows.rec.note(note);
    }
    rows.header_only()?;
    rows.close()?;
    Ok(rows.rec.records)
}

#[cfg(test)]
mod tests;
