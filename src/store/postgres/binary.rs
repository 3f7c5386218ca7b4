//! PostgreSQL's binary COPY format, for the values ferry stores and reads back.
//!
//! Rows go in as `COPY … FROM STDIN (FORMAT binary)`: no text parsing on the server, which is
//! where a CSV `COPY` spends its time. Every value is encoded exactly or refused with a reason
//! (`Unsupported`): a datetime with nanoseconds (PostgreSQL keeps microseconds), a date outside
//! PostgreSQL's range, a NUL character in text. Exports read rows back the same way and turn them
//! into the same text the SQLite store holds, so a batch file is the same whichever store wrote
//! it.

use super::datetime::{canonical_date, canonical_utc};
use crate::record::Cell;
use crate::store::Value;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// The column types ferry creates, and the few others a table may have been altered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Text,
    Int8,
    Int4,
    Int2,
    Float8,
    Float4,
    Bool,
    Date,
    Timestamptz,
    Timestamp,
    Numeric,
    Xid8,
}

impl PgType {
    /// From a `pg_type.oid`; `None` for types ferry neither writes nor reads.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        Some(match oid {
            25 | 1043 | 1042 | 19 => PgType::Text,
            20 => PgType::Int8,
            23 => PgType::Int4,
            21 => PgType::Int2,
            701 => PgType::Float8,
            700 => PgType::Float4,
            16 => PgType::Bool,
            1082 => PgType::Date,
            1184 => PgType::Timestamptz,
            1114 => PgType::Timestamp,
            1700 => PgType::Numeric,
            5069 => PgType::Xid8,
            _ => return None,
        })
    }

    /// The type ferry gives a column of a declared type.
    pub fn sql_for(ty: crate::typed::ColType) -> &'static str {
        use crate::typed::ColType as C;
        match ty {
            C::String => "text",
            C::Int => "bigint",
            C::Float => "double precision",
            C::Bool => "boolean",
            C::Date => "date",
            C::DateTime => "timestamptz",
            C::Decimal => "numeric",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PgType::Text => "text",
            PgType::Int8 => "bigint",
            PgType::Int4 => "integer",
            PgType::Int2 => "smallint",
            PgType::Float8 => "double precision",
            PgType::Float4 => "real",
            PgType::Bool => "boolean",
            PgType::Date => "date",
            PgType::Timestamptz => "timestamptz",
            PgType::Timestamp => "timestamp",
            PgType::Numeric => "numeric",
            PgType::Xid8 => "xid8",
        }
    }
}

/// A value the column cannot hold as it is; the reason, for the file's quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// The signature a binary COPY stream starts with.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The start of a binary COPY stream: signature, flags, header extension length.
pub fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
}

/// Reads past the start of a binary COPY stream (`COPY … TO STDOUT (FORMAT binary)`): checks
/// the signature and skips the header extension.
pub fn read_header<R: std::io::Read>(mut r: R) -> anyhow::Result<()> {
    let mut head = [0u8; 19];
    r.read_exact(&mut head)?;
    anyhow::ensure!(&head[..11] == SIGNATURE, "unexpected COPY output");
    let ext = u32::from_be_bytes(head[15..19].try_into().expect("4 bytes"));
    std::io::copy(&mut r.take(ext as u64), &mut std::io::sink())?;
    Ok(())
}

/// The end of a binary COPY stream.
pub fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// A tuple's field count.
pub fn tuple(out: &mut Vec<u8>, fields: usize) {
    out.extend_from_slice(&(fields as i16).to_be_bytes());
}

pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

pub fn int8(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

/// 2000-01-01, PostgreSQL's epoch for dates and timestamps.
pub(super) fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// PostgreSQL's date range in days from its epoch (4713 BC to 5874897 AD).
const DATE_DAYS: std::ops::RangeInclusive<i64> = -2_451_545..=2_147_483_493;
/// PostgreSQL's timestamp range in microseconds from its epoch (4713 BC to 294276 AD).
const TIMESTAMP_US: std::ops::RangeInclusive<i64> =
    -211_813_488_000_000_000..=9_223_371_331_200_000_000;

/// Encodes one chunk cell into a column of type `ty`. `text` is the cell's text when it is
/// one. Conversions are exact or refused.
pub fn cell(out: &mut Vec<u8>, ty: PgType, c: Cell, text: Option<&str>) -> Result<(), String> {
    match c {
        Cell::Null => {
            null(out);
            Ok(())
        }
        Cell::Int(v) => int_into(out, ty, v),
        Cell::Real(v) => real_into(out, ty, v),
        Cell::Text { .. } => text_into(out, ty, text.unwrap_or_default()),
    }
}

fn int_into(out: &mut Vec<u8>, ty: PgType, v: i64) -> Result<(), String> {
    match ty {
        PgType::Int8 => int8(out, v),
        PgType::Int4 => {
            let v = i32::try_from(v).map_err(|_| format!("{v} does not fit an integer column"))?;
            bytes(out, &v.to_be_bytes());
        }
        PgType::Int2 => {
            let v = i16::try_from(v).map_err(|_| format!("{v} does not fit a smallint column"))?;
            bytes(out, &v.to_be_bytes());
        }
        PgType::Bool => match v {
            0 | 1 => bytes(out, &[v as u8]),
            _ => return Err(format!("{v} is not a boolean")),
        },
        PgType::Float8 if (v as f64) as i64 == v && v.unsigned_abs() <= 1 << 53 => {
            bytes(out, &(v as f64).to_be_bytes())
        }
        PgType::Numeric => numeric(out, &v.to_string())?,
        PgType::Text => bytes(out, v.to_string().as_bytes()),
        other => {
            return Err(format!(
                "the integer {v} cannot be stored as {}",
                other.name()
            ))
        }
    }
    Ok(())
}

fn real_into(out: &mut Vec<u8>, ty: PgType, v: f64) -> Result<(), String> {
    match ty {
        PgType::Float8 => bytes(out, &v.to_be_bytes()),
        PgType::Float4 if (v as f32) as f64 == v => bytes(out, &(v as f32).to_be_bytes()),
        PgType::Numeric if v.is_finite() => numeric(out, &plain(v))?,
        PgType::Text => bytes(out, v.to_string().as_bytes()),
        PgType::Int8 if v.fract() == 0.0 && v.abs() < 9.0e15 => int8(out, v as i64),
        other => {
            return Err(format!(
                "the number {v} cannot be stored as {}",
                other.name()
            ))
        }
    }
    Ok(())
}

/// A float as plain decimal digits (no exponent), exactly its shortest round-trip value.
fn plain(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['e', 'E']) {
        crate::typed::canonical_decimal(&s, None).unwrap_or(s)
    } else {
        s
    }
}

fn text_into(out: &mut Vec<u8>, ty: PgType, s: &str) -> Result<(), String> {
    match ty {
        PgType::Text => {
            if s.contains('\0') {
                return Err("PostgreSQL text cannot hold a NUL character".into());
            }
            bytes(out, s.as_bytes());
        }
        PgType::Date => {
            let days = match canonical_date(s.as_bytes()) {
                Some(days) => days,
                None => {
                    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))?;
                    (d - epoch()).num_days()
                }
            };
            if !DATE_DAYS.contains(&days) {
                return Err(format!("{s:?} is outside PostgreSQL's date range"));
            }
            bytes(out, &(days as i32).to_be_bytes());
        }
        PgType::Timestamptz | PgType::Timestamp => {
            // The canonical form typed columns store (`…Z`), read without a general parser.
            if let Some(us) = canonical_utc(s.as_bytes()) {
                let us = us.map_err(|()| {
                    format!(
                        "{s:?} has nanoseconds; PostgreSQL keeps microseconds, so it would be \
                         rounded"
                    )
                })?;
                if !TIMESTAMP_US.contains(&us) {
                    return Err(format!("{s:?} is outside PostgreSQL's timestamp range"));
                }
                bytes(out, &us.to_be_bytes());
                return Ok(());
            }
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| format!("{s:?} is not an RFC 3339 datetime"))?
                .with_timezone(&Utc);
            if t.timestamp_subsec_nanos() % 1000 != 0 {
                return Err(format!(
                    "{s:?} has nanoseconds; PostgreSQL keeps microseconds, so it would be rounded"
                ));
            }
            let base = epoch().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            let us = (t - base)
                .num_microseconds()
                .filter(|us| TIMESTAMP_US.contains(us))
                .ok_or_else(|| format!("{s:?} is outside PostgreSQL's timestamp range"))?;
            bytes(out, &us.to_be_bytes());
        }
        PgType::Numeric => numeric(out, s)?,
        PgType::Int8 | PgType::Int4 | PgType::Int2 => {
            let v = crate::typed::parse_int(s).ok_or_else(|| format!("{s:?} is not an integer"))?;
            int_into(out, ty, v)?;
        }
        PgType::Float8 | PgType::Float4 => {
            let v: f64 = s
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| format!("{s:?} is not a number"))?;
            real_into(out, ty, v)?;
        }
        PgType::Bool => match s {
            "true" | "t" | "1" => bytes(out, &[1]),
            "false" | "f" | "0" => bytes(out, &[0]),
            _ => return Err(format!("{s:?} is not a boolean")),
        },
        PgType::Xid8 => return Err("xid8 columns are ferry's own".into()),
    }
    Ok(())
}

/// The most fraction digits PostgreSQL's numeric keeps, and the most base-10000 groups before
/// the point.
const NUMERIC_MAX_SCALE: usize = 16_383;
const NUMERIC_MAX_WEIGHT: usize = 131_072 / 4;

/// Encodes decimal text (`-12.50`, digits with an optional sign and point) as PostgreSQL's
/// binary numeric: base-10000 digit groups, the weight of the first, the sign, and the display
/// scale (the fraction digits as written, so `12.50` comes back as `12.50`).
pub fn numeric(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(format!("{s:?} is not a decimal"));
    }
    if frac.len() > NUMERIC_MAX_SCALE {
        return Err(format!(
            "{s:?} has more fraction digits than PostgreSQL keeps"
        ));
    }
    let int = int.trim_start_matches('0');
    // Digit groups of four, aligned on the point.
    let lead = (4 - int.len() % 4) % 4;
    let tail = (4 - frac.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', lead)
        .chain(int.bytes())
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', tail))
        .collect();
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |a, &d| a * 10 + (d - b'0') as i16))
        .collect();
    let int_groups = (int.len() + lead) / 4;
    if int_groups > NUMERIC_MAX_WEIGHT {
        return Err(format!("{s:?} is too large for PostgreSQL's numeric"));
    }
    let mut weight = int_groups as i32 - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let neg = neg && !groups.is_empty();
    out.extend_from_slice(&((8 + 2 * groups.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

/// Reads binary numeric back as decimal text with its display scale.
pub fn numeric_text(b: &[u8]) -> Option<String> {
    let be16 = |i: usize| b.get(i..i + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let (n, weight, sign, dscale) = (be16(0)?, be16(2)?, be16(4)? as u16, be16(6)? as u16);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..n as usize)
        .map(|i| be16(8 + 2 * i))
        .collect::<Option<_>>()?;
    let group = |i: i32| -> i16 {
        if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight as i32 {
            if i == 0 {
                s.push_str(&group(i).to_string());
            } else {
                s.push_str(&format!("{:04}", group(i)));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight as i32 + 1;
        while frac.len() < dscale as usize {
            frac.push_str(&format!("{:04}", group(i)));
            i += 1;
        }
        frac.truncate(dscale as usize);
        s.push_str(&frac);
    }
    Some(s)
}

/// A value read back from a binary COPY, as the export encoders take it. Dates, datetimes and
/// numerics become the canonical text the SQLite store keeps.
pub enum Decoded {
    Borrowed,
    Owned(String),
    Int(i64),
    Real(f64),
}

/// Decodes one field of a column of type `ty`.
pub fn decode(ty: PgType, b: &[u8]) -> Option<Decoded> {
    let arr = |n: usize| b.get(..n);
    Some(match ty {
        PgType::Text => Decoded::Borrowed,
        PgType::Int8 | PgType::Xid8 => Decoded::Int(i64::from_be_bytes(arr(8)?.try_into().ok()?)),
        PgType::Int4 => Decoded::Int(i32::from_be_bytes(arr(4)?.try_into().ok()?) as i64),
        PgType::Int2 => Decoded::Int(i16::from_be_bytes(arr(2)?.try_into().ok()?) as i64),
        PgType::Float8 => Decoded::Real(f64::from_be_bytes(arr(8)?.try_into().ok()?)),
        PgType::Float4 => Decoded::Real(f32::from_be_bytes(arr(4)?.try_into().ok()?) as f64),
        PgType::Bool => Decoded::Int(i64::from(*b.first()? != 0)),
        PgType::Date => {
            let days = i32::from_be_bytes(arr(4)?.try_into().ok()?);
            let d = epoch().checked_add_signed(chrono::Duration::days(days as i64))?;
            Decoded::Owned(d.format("%Y-%m-%d").to_string())
        }
        PgType::Timestamptz | PgType::Timestamp => {
            let us = i64::from_be_bytes(arr(8)?.try_into().ok()?);
            let base = epoch().and_hms_opt(0, 0, 0)?.and_utc();
            let t = base.checked_add_signed(chrono::Duration::microseconds(us))?;
            Decoded::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
        PgType::Numeric => Decoded::Owned(numeric_text(b)?),
    })
}

/// What `read_rows` hands each tuple: each field's place in the buffer (`None`: NULL), the
/// buffer, and the decoded values.
pub type RowFn<'a> =
    dyn FnMut(&[Option<(usize, usize)>], &[u8], &[Option<Decoded>]) -> anyhow::Result<()> + 'a;

/// Reads the tuples of a binary `COPY … TO STDOUT` whose columns have `types`: per tuple, each
/// field's place in `buf` (`None`: NULL) and its decoded value. Returns how many.
pub fn read_rows<R: std::io::Read>(
    reader: R,
    types: &[PgType],
    each: &mut RowFn,
) -> anyhow::Result<u64> {
    let mut decoded = Vec::with_capacity(types.len());
    read_raw_rows(reader, types.len(), &mut |raw, buf| {
        decoded.clear();
        for (i, f) in raw.iter().enumerate() {
            decoded.push(f.and_then(|(s, e)| decode(types[i], &buf[s..e])));
        }
        each(raw, buf, &decoded)
    })
}

/// What `read_raw_rows` hands each tuple: each field's place in the buffer (`None`: NULL).
pub type RawRowFn<'a> = dyn FnMut(&[Option<(usize, usize)>], &[u8]) -> anyhow::Result<()> + 'a;

/// Reads the tuples of a binary `COPY … TO STDOUT` of `fields` columns, undecoded. Returns how
/// many.
pub fn read_raw_rows<R: std::io::Read>(
    reader: R,
    fields: usize,
    each: &mut RawRowFn,
) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut r = std::io::BufReader::with_capacity(1 << 20, reader);
    read_header(&mut r)?;
    let mut buf = Vec::new();
    let mut raw = Vec::with_capacity(fields);
    let mut n = 0u64;
    loop {
        let mut two = [0u8; 2];
        r.read_exact(&mut two)?;
        let count = i16::from_be_bytes(two);
        if count == -1 {
            break;
        }
        if count as usize != fields {
            anyhow::bail!("unexpected field count in COPY output");
        }
        buf.clear();
        raw.clear();
        for _ in 0..count {
            let mut four = [0u8; 4];
            r.read_exact(&mut four)?;
            let len = i32::from_be_bytes(four);
            if len < 0 {
                raw.push(None);
                continue;
            }
            let start = buf.len();
            buf.resize(start + len as usize, 0);
            r.read_exact(&mut buf[start..])?;
            raw.push(Some((start, buf.len())));
        }
        each(&raw, &buf)?;
        n += 1;
    }
    Ok(n)
}

/// The value of a COPY field as `cell` wrote it (length, then bytes): `None` for NULL.
pub fn field(encoded: &[u8]) -> Option<&[u8]> {
    let len = i32::from_be_bytes(encoded.get(..4)?.try_into().ok()?);
    (len >= 0)
        .then(|| encoded.get(4..4 + len as usize))
        .flatten()
}

/// A decoded field as a `Value` borrowing from the row.
pub fn value<'a>(d: &'a Decoded, raw: &'a [u8]) -> Value<'a> {
    match d {
        Decoded::Borrowed => Value::Text(raw),
        Decoded::Owned(s) => Value::Text(s.as_bytes()),
        Decoded::Int(v) => Value::Int(*v),
        Decoded::Real(v) => Value::Real(*v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str) -> String {
        let mut out = Vec::new();
        numeric(&mut out, s).unwrap();
        numeric_text(&out[4..]).unwrap()
    }

    #[test]
    fn numerics_keep_their_digits_and_scale() {
        for s in [
            "0",
            "12.50",
            "-12.5",
            "1",
            "10000",
            "123456789.000001",
            "0.0001",
            "0.00",
            "99999999999999999999999999999.123456789012345678901234567890",
            "-0.5",
        ] {
            assert_eq!(round(s), s, "{s}");
        }
        // PostgreSQL has no negative zero; the canonical decimal never has one either.
        assert_eq!(round("-0.00"), "0.00");
        let mut out = Vec::new();
        assert!(numeric(&mut out, "1e5").is_err());
        assert!(numeric(&mut out, "").is_err());
    }

    #[test]
    fn datetimes_and_dates_are_exact_or_refused() {
        let mut out = Vec::new();
        text_into(&mut out, PgType::Timestamptz, "2026-01-02T03:04:05.123456Z").unwrap();
        let d = decode(PgType::Timestamptz, &out[4..]).unwrap();
        assert!(matches!(d, Decoded::Owned(ref s) if s == "2026-01-02T03:04:05.123456Z"));
        let e = text_into(
            &mut out,
            PgType::Timestamptz,
            "2026-01-02T03:04:05.123456789Z",
        );
        assert!(e.unwrap_err().contains("nanoseconds"));
        out.clear();
        text_into(&mut out, PgType::Date, "1999-12-31").unwrap();
        assert_eq!(&out[4..], &(-1i32).to_be_bytes());
        assert!(
            matches!(decode(PgType::Date, &out[4..]).unwrap(), Decoded::Owned(ref s) if s == "1999-12-31")
        );
        assert!(text_into(&mut out, PgType::Text, "a\0b").is_err());
        assert!(int_into(&mut out, PgType::Bool, 2).is_err());
        assert!(int_into(&mut out, PgType::Int4, 1 << 40).is_err());
    }
}
