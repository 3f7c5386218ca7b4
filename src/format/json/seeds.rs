//! The serde seeds and visitors that walk a JSON document: a record (an object) into `Rows`,
//! an array of records, a stream of records, the way down a JSON pointer.

use super::{bare_message, Records, Rows, Shape};
use crate::format::text::nul_reject;
use crate::reject::{Kind, Reject, Stage};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Marker message for "a record was expected here": serde reports it as a data error.
const EXPECTED_RECORD: &str = "a JSON object (a record)";

/// One record: an object, or (compact JSON) an array of values under the header row — or the
/// header row itself. `true`: a record to pass on; `false`: it was the header.
pub(super) struct RecordSeed<'a, 'o>(pub &'a mut Rows<'o>);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(RecordVisitor(self.0))
    }
}

pub(super) struct RecordVisitor<'a, 'o>(&'a mut Rows<'o>);

impl<'de> Visitor<'de> for RecordVisitor<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED_RECORD)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let rows = self.0;
        let n = rows.rec.records + 1;
        if matches!(rows.shape, Shape::Arrays(_)) || rows.opt.records == Records::Arrays {
            return Err(not_records(
                rows,
                format!(
                    "record {n} is an object, but this file's records are arrays under a header \
                     row of column names"
                ),
            ));
        }
        rows.shape = Shape::Objects;
        while let Some(col) = map.next_key_seed(KeySeed(&mut *rows))? {
            let raw: Box<RawValue> = map.next_value()?;
            value(rows, col, raw.get())?;
        }
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let rows = self.0;
        let n = rows.rec.records + 1;
        if rows.shape == Shape::Objects || rows.opt.records == Records::Objects {
            return Err(not_records(
                rows,
                format!("record {n} is an array, but this file's records are objects"),
            ));
        }
        match std::mem::replace(&mut rows.shape, Shape::Unknown) {
            Shape::Arrays(cols) => {
                let mut i = 0;
                while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                    let Some(&col) = cols.get(i) else {
                        return Err(row_length(rows, n, None, cols.len()));
                    };
                    value(rows, col, raw.get())?;
                    i += 1;
                }
                if i < cols.len() {
                    return Err(row_length(rows, n, Some(i), cols.len()));
                }
                rows.shape = Shape::Arrays(cols);
                Ok(true)
            }
            _ => {
                // The first array: the header row, every element a column name.
                let mut cols = Vec::new();
                while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                    let Ok(name) = serde_json::from_str::<String>(raw.get()) else {
                        return Err(not_records(
                            rows,
                            format!(
                                "the first record is an array, but not of column names: {} is \
                                 not a string (compact JSON starts with a header row of names)",
                                raw.get()
                            ),
                        ));
                    };
                    cols.push(rows.column(&name)?);
                }
                if cols.is_empty() {
                    return Err(not_records(rows, "the header row names no columns".into()));
                }
                rows.shape = Shape::Arrays(cols);
                Ok(false)
            }
        }
    }
}

fn not_records<E: de::Error>(rows: &mut Rows, message: String) -> E {
    rows.fail(Reject::new(Kind::JsonNotRecords, Stage::Parse, message))
}

/// A compact row with `got` values (`None`: more than the header names).
fn row_length<E: de::Error>(rows: &mut Rows, n: u64, got: Option<usize>, names: usize) -> E {
    let s = |k: usize| if k == 1 { "" } else { "s" };
    let message = match got {
        None => format!(
            "record {n} has more values than the {names} column{} the header row names",
            s(names)
        ),
        Some(k) => format!(
            "record {n} has {k} value{}; the header row names {names} column{}",
            s(k),
            s(names)
        ),
    };
    rows.fail(Reject::new(Kind::JsonRowLength, Stage::Parse, message))
}

/// Stores one value as its text: strings unescaped, everything else as sent.
pub(super) fn value<E: de::Error>(rows: &mut Rows, col: usize, raw: &str) -> Result<(), E> {
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

pub(super) struct KeySeed<'a, 'o>(&'a mut Rows<'o>);

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
pub(super) struct ArraySeed<'a, 'o>(pub &'a mut Rows<'o>);

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
            let n = rows.rec.records + 1;
            match seq.next_element_seed(RecordSeed(rows))? {
                None => return Ok(()),
                Some(false) => continue,
                Some(true) => {}
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
pub(super) struct TopSeed<'a, 'o, 'p> {
    pub rows: &'a mut Rows<'o>,
    pub pointer: &'p [String],
}

/// What the top-level value turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum Top {
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
pub(super) struct PointerSeed<'a, 'o, 'p>(TopSeed<'a, 'o, 'p>);

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
