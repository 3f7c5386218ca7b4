//! JSON and NDJSON parsing, streamed record by record.
//!
//! Records are JSON objects. A `.json` file holds an array of them, a stream of them
//! (one or many, whitespace-separated), or, with a configured JSON pointer, an object holding the
//! array somewhere inside. Values are kept as text in their JSON form: strings as they are,
//! numbers and booleans as written, `null` as null, nested objects and arrays as compact JSON.
//! Typed datasets convert later, in the stages.
//!
//! The array is never materialized: serde seeds visit it element by element and hand each
//! record to the `RowOut` as soon as it is complete.

use super::text::classify;
use super::{ColumnNames, RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufReader, Read};

/// Builds one record at a time and passes it on.
struct Rows<'o> {
    names: ColumnNames,
    /// Columns already announced to `out`.
    announced: usize,
    text: String,
    spans: Vec<Option<(usize, usize)>>,
    out: &'o mut dyn RowOut,
    /// Why the consumer stopped us, if it did (serde only carries strings).
    stop: Option<Stop>,
    records: u64,
}

impl<'o> Rows<'o> {
    fn new(out: &'o mut dyn RowOut) -> Self {
        Rows {
            names: ColumnNames::new(),
            announced: usize::MAX,
            text: String::new(),
            spans: Vec::new(),
            out,
            stop: None,
            records: 0,
        }
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

    fn set_with(&mut self, col: usize, f: impl FnOnce(&mut String)) {
        if self.spans.len() <= col {
            self.spans.resize(col + 1, None);
        }
        let start = self.text.len();
        f(&mut self.text);
        self.spans[col] = Some((start, self.text.len()));
    }

    /// Hands the finished record to `out`. `line` is the line (NDJSON) or record number (JSON).
    fn finish(&mut self, line: u64) -> Result<(), Stop> {
        let width = self.names.len();
        if self.announced != width {
            self.out.columns(self.names.names())?;
            self.announced = width;
        }
        self.spans.resize(width, None);
        let r = self.out.row(line, &self.text, &self.spans);
        self.text.clear();
        self.spans.iter_mut().for_each(|s| *s = None);
        self.records += 1;
        r
    }

    /// Announces the columns even when there were no records, so empty files still have a
    /// (possibly empty) column list.
    fn close(&mut self) -> Result<(), Stop> {
        if self.announced == usize::MAX {
            self.out.columns(self.names.names())?;
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
        while let Some(col) = map.next_key_seed(KeySeed(&mut self.0.names))? {
            map.next_value_seed(ValueSeed(self.0, col))?;
        }
        Ok(())
    }
}

struct KeySeed<'a>(&'a mut ColumnNames);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        Ok(self.0.index(v))
    }
}

struct ValueSeed<'a, 'o>(&'a mut Rows<'o>, usize);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.set(self.1, Some(v));
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.set(self.1, Some(if v { "true" } else { "false" }));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.set_with(self.1, |t| {
            let _ = write!(t, "{v}");
        });
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.set_with(self.1, |t| {
            let _ = write!(t, "{v}");
        });
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Debug is the shortest text that reads back as the same number.
        self.0.set_with(self.1, |t| {
            let _ = write!(t, "{v:?}");
        });
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.set(self.1, None);
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v: serde_json::Value =
            de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.0.set(self.1, Some(&v.to_string()));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v: serde_json::Value =
            de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.0.set(self.1, Some(&v.to_string()));
        Ok(())
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

fn json_reject(e: serde_json::Error, rows: &mut Rows) -> Stop {
    if let Some(stop) = rows.stop.take() {
        return stop;
    }
    let (line, column) = (e.line() as u64, e.column());
    match e.classify() {
        serde_json::error::Category::Io => Stop::Reject(classify(io::Error::from(e))),
        serde_json::error::Category::Data => Stop::Reject(
            Reject::new(
                Kind::JsonNotRecords,
                Stage::Parse,
                format!("record {} is not a JSON object: {e}", rows.records + 1),
            )
            .at_line(line),
        ),
        _ => Stop::Reject(
            Reject::new(
                Kind::JsonSyntax,
                Stage::Parse,
                format!("invalid JSON at line {line}, column {column}: {e}"),
            )
            .at_line(line),
        ),
    }
}

/// Parses a `.json` file: an array of records, a stream of records, or the array at `pointer`.
pub fn parse_json(r: impl Read, pointer: &[String], out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut rows = Rows::new(out);
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, r));
    if de.end().is_ok() {
        return Err(Reject::new(Kind::Empty, Stage::Parse, "the file holds no JSON value").into());
    }
    let top = TopSeed {
        rows: &mut rows,
        pointer,
    }
    .deserialize(&mut de)
    .map_err(|e| json_reject(e, &mut rows))?;
    match top {
        Top::Array | Top::Found => {
            de.end().map_err(|e| json_reject(e, &mut rows))?;
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
                    .map_err(|e| json_reject(e, &mut rows))?;
                rows.finish(n)?;
            }
        }
    }
    rows.close()?;
    Ok(rows.records)
}

/// Parses NDJSON: one record per line; blank lines are skipped.
pub fn parse_ndjson(r: impl Read, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut rows = Rows::new(out);
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut any = false;
    loop {
        line.clear();
        let got = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Stop::Reject(classify(e)))?;
        if got == 0 {
            break;
        }
        n += 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        any = true;
        let mut de = serde_json::Deserializer::from_slice(&line);
        let parsed = RecordSeed(&mut rows)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        if let Err(e) = parsed {
            let mut stop = json_reject(e, &mut rows);
            if let Stop::Reject(r) = &mut stop {
                r.line = Some(n);
                if r.kind == Kind::JsonNotRecords {
                    r.message = format!("line {n} is not a JSON object");
                } else {
                    r.message = r
                        .message
                        .replacen("at line 1,", &format!("at line {n},"), 1);
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
        match parse_json(input.as_bytes(), &p, &mut c) {
            Ok(_) => Ok(c),
            Err(Stop::Reject(r)) => Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }

    fn ndjson(input: &str) -> Result<Collect, Reject> {
        let mut c = Collect::default();
        match parse_ndjson(input.as_bytes(), &mut c) {
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
}
