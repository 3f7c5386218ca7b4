//! Encoding stored values into batch files: CSV (RFC 4180: header, CRLF, quotes only where
//! needed) or NDJSON. Values are written as stored: typed columns hold their canonical form
//! already. No IO: bytes go into a buffer the caller writes.

use super::BatchFormat;
use crate::store::Value;

/// Turns stored values into CSV or NDJSON, a row at a time.
pub struct Encoder {
    /// NDJSON, else CSV (Parquet batches are written by `parquet`, not here).
    ndjson: bool,
    columns: Vec<String>,
    /// NDJSON: `"name":` per column, JSON-escaped once.
    keys: Vec<Vec<u8>>,
}

impl Encoder {
    pub fn new(format: BatchFormat, columns: &[String]) -> Encoder {
        let keys = columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(c).expect("a string serializes");
                k.push(b':');
                k
            })
            .collect();
        Encoder {
            ndjson: format == BatchFormat::Ndjson,
            columns: columns.to_vec(),
            keys,
        }
    }

    pub fn header(&self, out: &mut Vec<u8>) {
        if !self.ndjson {
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                csv_text(out, c.as_bytes(), true);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn value(&self, out: &mut Vec<u8>, i: usize, v: Value<'_>) {
        match self.ndjson {
            false => {
                if i > 0 {
                    out.push(b',');
                }
                match v {
                    Value::Null => {}
                    Value::Int(n) => push_int(out, n),
                    Value::Real(f) => push_float(out, f),
                    Value::Text(t) => csv_text(out, t, false),
                }
            }
            true => {
                out.push(if i == 0 { b'{' } else { b',' });
                out.extend_from_slice(&self.keys[i]);
                match v {
                    Value::Null => out.extend_from_slice(b"null"),
                    Value::Int(n) => push_int(out, n),
                    Value::Real(f) if f.is_finite() => push_float(out, f),
                    Value::Real(_) => out.extend_from_slice(b"null"),
                    Value::Text(t) => json_text(out, t),
                }
            }
        }
    }

    pub fn end_row(&self, out: &mut Vec<u8>) {
        match self.ndjson {
            false => out.extend_from_slice(b"\r\n"),
            true => {
                if self.columns.is_empty() {
                    out.push(b'{');
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

/// A CSV field: quoted when it holds a delimiter, quote or line break (or is empty, so an empty
/// string stays distinguishable from a missing value).
fn csv_text(out: &mut Vec<u8>, t: &[u8], header: bool) {
    let needs =
        t.is_empty() && !header || t.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs {
        out.extend_from_slice(t);
        return;
    }
    out.push(b'"');
    let mut rest = t;
    while let Some(q) = memchr::memchr(b'"', rest) {
        out.extend_from_slice(&rest[..=q]);
        out.push(b'"');
        rest = &rest[q + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn json_text(out: &mut Vec<u8>, t: &[u8]) {
    let plain = t
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80);
    if plain {
        out.push(b'"');
        out.extend_from_slice(t);
        out.push(b'"');
    } else {
        let s = String::from_utf8_lossy(t);
        serde_json::to_writer(&mut *out, s.as_ref()).expect("writing to a Vec cannot fail");
    }
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// The shortest text that reads back as the same float; exponent form for very large or small
/// magnitudes.
pub(super) fn push_float(out: &mut Vec<u8>, f: f64) {
    let a = f.abs();
    let s = if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{f:e}")
    } else {
        format!("{f}")
    };
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_field(t: &str) -> String {
        let mut v = Vec::new();
        csv_text(&mut v, t.as_bytes(), false);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn csv_quotes_only_where_rfc_4180_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(csv_field(""), "\"\"");
        assert_eq!(csv_field(" spaced "), " spaced ");
    }

    #[test]
    fn numbers_read_back_as_the_same_value() {
        for n in [0i64, 7, -7, i64::MIN, i64::MAX, 1_000_000] {
            let mut v = Vec::new();
            push_int(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
        for f in [0.0f64, 0.1, -2.5, 1e300, 1.5e-9, 123456.789, 9.999e15, 1e16] {
            let mut v = Vec::new();
            push_float(&mut v, f);
            let s = String::from_utf8(v).unwrap();
            assert_eq!(s.parse::<f64>().unwrap(), f, "{s}");
            assert!(s.len() < 30, "{s}");
        }
    }

    #[test]
    fn ndjson_escapes_only_what_json_requires() {
        let enc = Encoder::new(BatchFormat::Ndjson, &["a".into(), "b \"q\"".into()]);
        let mut out = Vec::new();
        enc.value(&mut out, 0, Value::Text(b"tab\there \xc3\xa9"));
        enc.value(&mut out, 1, Value::Null);
        enc.end_row(&mut out);
        let line = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["a"], "tab\there é");
        assert!(v["b \"q\""].is_null());
    }
}
