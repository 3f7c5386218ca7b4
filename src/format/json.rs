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

use super::text::{classify, nul_reject, reject_io};
use super::{RowOut, Stop, MAX_COLUMN_NAME};
use crate::reject::{Kind, Reject, Stage};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// The longest record accepted, in bytes.
    pub max_record: usize,
    /// Keep `\u0000` in strings instead of refusing the file.
    pub allow_nul: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            max_record: super::DEFAULT_MAX_RECORD,
            allow_nul: false,
        }
    }
}

/// Most distinct keys a file may use (bounds the column list, whatever the input).
const MAX_KEYS: usize = 1 << 16;

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
struct Rows<'o> {
    opt: JsonOptions,
    /// Column names (keys without surrounding spaces) in order of first appearance.
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Per column: the record that last set it (finds keys named twice in one record).
    set_in: Vec<u64>,
    /// Columns already announced to `out`.
    announced: usize,
    text: String,
    spans: Vec<Option<(usize, usize)>>,
    out: &'o mut dyn RowOut,
    /// Why we stopped, when serde can only carry a string: the consumer's stop, or a content
    /// error found inside a record (its position is filled in from serde's error).
    stop: Option<Stop>,
    records: u64,
    /// Bytes read since the last record ended (shared with the `Limit` reader).
    since_record: Rc<Cell<usize>>,
}

impl<'o> Rows<'o> {
    fn new(out: &'o mut dyn RowOut, opt: &JsonOptions) -> Self {
        Rows {
            opt: opt.clone(),
            names: Vec::new(),
            by_name: HashMap::new(),
            set_in: Vec::new(),
            announced: usize::MAX,
            text: String::new(),
            spans: Vec::new(),
            out,
            stop: None,
            records: 0,
            since_record: Rc::new(Cell::new(0)),
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
    fn fail<E: de::Error>(&mut self, r: Reject) -> E {
        let msg = r.message.clone();
        self.stop = Some(Stop::Reject(r));
        E::custom(msg)
    }

    /// The column of a key in the current record (`None` after `fail`: a key named twice).
    fn column<E: de::Error>(&mut self, raw: &str) -> Result<usize, E> {
        let key = raw.trim();
        if key.contains('\0') {
            // Not even with allow_nul: a column name cannot hold a NUL.
            return Err(self.fail(nul_reject(0, 0)));
        }
        if key.len() > MAX_COLUMN_NAME {
            return Err(self.fail(Reject::new(
                Kind::SchemaColumnNameTooLong,
                Stage::Parse,
                format!(
                    "record {} has a key of {} bytes; column names are at most {MAX_COLUMN_NAME} bytes",
                    self.records + 1,
                    key.len()
                ),
            )));
        }
        let col = match self.by_name.get(key) {
            Some(&c) => c,
            None => {
                if self.names.len() >= MAX_KEYS {
                    return Err(self.fail(Reject::new(
                        Kind::SchemaTooManyColumns,
                        Stage::Parse,
                        format!("the file uses more than {MAX_KEYS} different keys"),
                    )));
                }
                self.names.push(key.to_string());
                self.by_name.insert(key.to_string(), self.names.len() - 1);
                self.set_in.push(0);
                self.names.len() - 1
            }
        };
        let this = self.records + 1;
        if self.set_in[col] == this {
            let same = if raw == key {
                format!("{key:?} twice")
            } else {
                format!(
                    "{key:?} twice (keys that differ only in surrounding spaces name one column)"
                )
            };
            return Err(self.fail(Reject::new(
                Kind::JsonDuplicateKey,
                Stage::Parse,
                format!(
                    "record {this} names the key {same}; which value is meant would be a guess"
                ),
            )));
        }
        self.set_in[col] = this;
        Ok(col)
    }

    fn set(&mut self, col: usize, value: Option<&str>) {
        if self.spans.len() <= col {
            self.spans.resize(col + 1, None);
        }
        self.spans[col] = value.map(|v| {
            let start = self.text.len();
            self.text.push_str(v);
            (start, self.text.len())
        });
    }

    /// Hands the finished record to `out`. `line` is the line (NDJSON) or record number (JSON).
    fn finish(&mut self, line: u64) -> Result<(), Stop> {
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
        self.since_record.set(0);
        r
    }

    /// Announces the columns even when there were no records, so empty files still have a
    /// (possibly empty) column list.
    fn close(&mut self) -> Result<(), Stop> {
        if self.announced == usize::MAX {
            self.out.columns(&self.names)?;
            self.announced = self.names.len();
        }
        Ok(())
    }
}

/// Marker message for "a record was expected here": serde reports it as a data error.
const EXPECTED_RECORD: &str = "a JSON object (a record)";

struct RecordSeed<'a, 'o>(&'a mut Rows<'o>);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(RecordVisitor(self.0))
    }
}

struct RecordVisitor<'a, 'o>(&'a mut Rows<'o>);

impl<'de> Visitor<'de> for RecordVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED_RECORD)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(col) = map.next_key_seed(KeySeed(&mut *self.0))? {
            let raw: Box<RawValue> = map.next_value()?;
            value(self.0, col, raw.get())?;
        }
        Ok(())
    }
}

/// Stores one value as its text: strings unescaped, everything else as sent.
fn value<E: de::Error>(rows: &mut Rows, col: usize, raw: &str) -> Result<(), E> {
    match raw.as_bytes().first() {
        Some(b'n') => rows.set(col, None),
        Some(b'"') => {
            // Borrowed when there is nothing to unescape.
            let owned;
            let s = match serde_json::from_str::<&str>(raw) {
                Ok(s) => s,
                Err(_) => match serde_json::from_str::<String>(raw) {
                    Ok(o) => {
                        owned = o;
                        owned.as_str()
                    }
                    // A string serde could scan but not decode (a lone surrogate escape).
                    Err(e) => {
                        let msg = format!("invalid string: {}", bare_message(&e));
                        return Err(rows.fail(Reject::new(Kind::JsonSyntax, Stage::Parse, msg)));
                    }
                },
            };
            if !rows.opt.allow_nul && s.contains('\0') {
                return Err(rows.fail(nul_reject(0, 0)));
            }
            rows.set(col, Some(s));
        }
        _ => rows.set(col, Some(raw)),
    }
    Ok(())
}

struct KeySeed<'a, 'o>(&'a mut Rows<'o>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0.column(v)
    }
}

/// An array of records; each is passed on as soon as it is read.
struct ArraySeed<'a, 'o>(&'a mut Rows<'o>);

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let rows = self.0;
        // What came before the array (skipped on the way down a pointer) is not a record.
        rows.since_record.set(0);
        loop {
            let n = rows.records + 1;
            if seq.next_element_seed(RecordSeed(rows))?.is_none() {
                return Ok(());
            }
            if let Err(stop) = rows.finish(n) {
                rows.stop = Some(stop);
                return Err(de::Error::custom("stopped"));
            }
        }
    }
}

/// The first top-level value of a `.json` file: an array of records, a record, or (with a
/// pointer) the way down to the array.
struct TopSeed<'a, 'o, 'p> {
    rows: &'a mut Rows<'o>,
    pointer: &'p [String],
}

/// What the top-level value turned out to be.
#[derive(Debug, PartialEq)]
enum Top {
    Array,
    Record,
    Found,
    NotFound,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_, '_> {
    type Value = Top;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_, '_> {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str("an array of records or a record")
        } else {
            f.write_str("an object or array on the way to the records")
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        match self.pointer.split_first() {
            None => {
                ArraySeed(self.rows).visit_seq(seq)?;
                Ok(Top::Array)
            }
            Some((seg, rest)) => {
                let Ok(want) = seg.parse::<usize>() else {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(Top::NotFound);
                };
                let mut i = 0;
                let mut found = Top::NotFound;
                loop {
                    if i == want {
                        let next = TopSeed {
                            rows: &mut *self.rows,
                            pointer: rest,
                        };
                        match seq.next_element_seed(PointerSeed(next))? {
                            Some(t) => found = t,
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    i += 1;
                }
                Ok(found)
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        match self.pointer.split_first() {
            None => {
                RecordVisitor(self.rows).visit_map(map)?;
                Ok(Top::Record)
            }
            Some((seg, rest)) => {
                let mut found = Top::NotFound;
                while let Some(key) = map.next_key::<String>()? {
                    if key == *seg && found == Top::NotFound {
                        let next = TopSeed {
                            rows: &mut *self.rows,
                            pointer: rest,
                        };
                        found = map.next_value_seed(PointerSeed(next))?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(found)
            }
        }
    }
}

/// A step down a pointer: reaching the end means the value must be the array of records.
struct PointerSeed<'a, 'o, 'p>(TopSeed<'a, 'o, 'p>);

impl<'de> DeserializeSeed<'de> for PointerSeed<'_, '_, '_> {
    type Value = Top;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        if self.0.pointer.is_empty() {
            ArraySeed(self.0.rows).deserialize(d)?;
            Ok(Top::Found)
        } else {
            d.deserialize_any(self.0)
        }
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
fn bare_message(e: &serde_json::Error) -> String {
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
                    rows.records + 1,
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
            de.end().map_err(|e| json_reject(e, &mut rows, None))?;
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
                let n = rows.records + 1;
                RecordSeed(&mut rows)
                    .deserialize(&mut de)
                    .map_err(|e| json_reject(e, &mut rows, None))?;
                rows.finish(n)?;
            }
        }
    }
    rows.close()?;
    Ok(rows.records)
}

/// Parses NDJSON: one record per line; blank lines are skipped.
pub fn parse_ndjson(r: impl Read, opt: &JsonOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut rows = Rows::new(out, opt);
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut offset = 0u64;
    let mut any = false;
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
            continue;
        }
        any = true;
        let mut de = serde_json::Deserializer::from_slice(&line);
        let parsed = RecordSeed(&mut rows)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        if let Err(e) = parsed {
            let mut stop = json_reject(e, &mut rows, Some(n));
            if let Stop::Reject(r) = &mut stop {
                if r.kind == Kind::JsonNotRecords {
                    r.message = format!("line {n} is not a JSON object");
                }
            }
            return Err(stop);
        }
        rows.finish(n)?;
    }
    if !any {
        return Err(Reject::new(Kind::Empty, Stage::Parse, "the file holds no records").into());
    }
    rows.close()?;
    Ok(rows.records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Collect;

    fn json(input: &str, pointer: &str) -> Result<Collect, Reject> {
        let mut c = Collect::default();
        let p = pointer_segments(pointer).unwrap();
        match parse_json(input.as_bytes(), &p, &JsonOptions::default(), &mut c) {
            Ok(_) => Ok(c),
            Err(Stop::Reject(r)) => Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }

    fn ndjson(input: &str) -> Result<Collect, Reject> {
        let mut c = Collect::default();
        match parse_ndjson(input.as_bytes(), &JsonOptions::default(), &mut c) {
            Ok(_) => Ok(c),
            Err(Stop::Reject(r)) => Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn arrays_of_records() {
        let c = json(
            r#"[{"id":1,"name":"a","ok":true,"x":1.5},{"id":2,"tags":["t"],"n":null,"o":{"k":1}}]"#,
            "",
        )
        .unwrap();
        assert_eq!(c.cols, ["id", "name", "ok", "x", "tags", "n", "o"]);
        assert_eq!(c.rows[0], (1, vec![s("1"), s("a"), s("true"), s("1.5")]));
        assert_eq!(
            c.rows[1],
            (
                2,
                vec![s("2"), None, None, None, s("[\"t\"]"), None, s("{\"k\":1}")]
            )
        );
        assert_eq!(json("[]", "").unwrap().rows.len(), 0);
    }

    #[test]
    fn streams_of_records_and_pointers() {
        let c = json("{\"a\":1}\n{\"a\":2}\n", "").unwrap();
        assert_eq!(c.rows.len(), 2);
        let c = json(
            r#"{"meta":{"n":2},"data":{"items":[{"a":1},{"a":2}]}}"#,
            "/data/items",
        )
        .unwrap();
        assert_eq!(c.rows.len(), 2);
        let e = json(r#"{"data":{}}"#, "/data/items").unwrap_err();
        assert_eq!(e.kind, Kind::JsonNotRecords);
    }

    #[test]
    fn not_records_and_syntax_errors() {
        for bad in ["42", "\"x\"", "[1,2]", "[{\"a\":1}, 3]", "null"] {
            assert_eq!(
                json(bad, "").unwrap_err().kind,
                Kind::JsonNotRecords,
                "{bad}"
            );
        }
        for bad in ["[{\"a\":1}", "[{\"a\":1},]", "{\"a\" 1}", "[{}] x"] {
            assert_eq!(json(bad, "").unwrap_err().kind, Kind::JsonSyntax, "{bad}");
        }
        assert_eq!(json("  \n", "").unwrap_err().kind, Kind::Empty);
    }

    #[test]
    fn ndjson_lines() {
        let c = ndjson("{\"a\":1}\n\n{\"b\":\"x\"}\r\n").unwrap();
        assert_eq!(c.rows, vec![(1, vec![s("1")]), (3, vec![None, s("x")])]);
        let e = ndjson("{\"a\":1}\n{\"a\":\n").unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::JsonSyntax, Some(2)));
        let e = ndjson("{\"a\":1}\n[1]\n").unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::JsonNotRecords, Some(2)));
        assert_eq!(ndjson("\n\n").unwrap_err().kind, Kind::Empty);
    }

    #[test]
    fn numbers_and_nested_values_keep_their_source_text() {
        let c = json(
            r#"[{"a":123456789012345678901234567890,"b":3.141592653589793238,"c":1E2,"d":-0,
                "e":{"z": 0.10, "a":[1 ,2]},"f":"\u00e9\n","g":""}]"#,
            "",
        )
        .unwrap();
        assert_eq!(
            c.rows[0].1,
            vec![
                s("123456789012345678901234567890"),
                s("3.141592653589793238"),
                s("1E2"),
                s("-0"),
                s(r#"{"z": 0.10, "a":[1 ,2]}"#),
                s("é\n"),
                s("")
            ]
        );
    }

    #[test]
    fn keys_named_twice_and_nuls_are_refused() {
        for bad in [r#"[{"a":1,"a":2}]"#, r#"{"a":1," a ":2}"#] {
            let e = json(bad, "").unwrap_err();
            assert_eq!(e.kind, Kind::JsonDuplicateKey, "{bad}");
            assert_eq!(e.line, Some(1));
        }
        let e = ndjson("{\"a\":1}\n{\"b\":1,\"b\":2}\n").unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::JsonDuplicateKey, Some(2)));
        assert!(e.message.starts_with("line 2:"), "{}", e.message);
        let e = ndjson("{\"a\":1}\n\n{\"a\":\"x\\u0000y\"}\n").unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::EncodingNul, Some(3)));
        let e = json(r#"{"foo\u0000bar": 42}"#, "").unwrap_err();
        assert_eq!(e.kind, Kind::EncodingNul);
        // The same key in different records is one column, not a duplicate.
        assert_eq!(ndjson("{\"a\":1}\n{\"a\":2}\n").unwrap().rows.len(), 2);
    }

    #[test]
    fn messages_name_the_line_the_error_is_recorded_at() {
        let e = ndjson("{\"a\":1}\n{\"a\":\"\\ud800\"}\n").unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::JsonSyntax, Some(2)));
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert!(!e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn records_longer_than_the_limit_are_refused_unread() {
        let opt = JsonOptions {
            max_record: 100,
            allow_nul: false,
        };
        let long = format!("[{{\"a\":\"{}\"}}]", "x".repeat(1 << 20));
        let mut c = Collect::default();
        match parse_json(long.as_bytes(), &[], &opt, &mut c) {
            Err(Stop::Reject(r)) => assert_eq!(r.kind, Kind::JsonRecordTooLong),
            other => panic!("{other:?}"),
        }
        let mut c = Collect::default();
        let nd = format!("{{\"a\":1}}\n{{\"a\":\"{}\"}}\n", "x".repeat(1000));
        match parse_ndjson(nd.as_bytes(), &opt, &mut c) {
            Err(Stop::Reject(r)) => {
                assert_eq!((r.kind, r.line), (Kind::JsonRecordTooLong, Some(2)))
            }
            other => panic!("{other:?}"),
        }
        // Many small records are fine: the limit is per record.
        let many = format!("[{}]", vec!["{\"a\":\"0123456789\"}"; 10_000].join(","));
        let mut c = Collect::default();
        assert!(parse_json(many.as_bytes(), &[], &opt, &mut c).is_ok());
    }
}
