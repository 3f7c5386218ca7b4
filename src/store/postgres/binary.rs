//! PostgreSQL's binary COPY format, for the values ferry stores and reads back.
//!
//! Rows go in as `COPY … FROM STDIN (FORMAT binary)`: no text parsing on the server, which is
//! where a CSV `COPY` spends its time. Every value is encoded exactly or refused with a reason
//! (`Unsupported`): a datetime with nanoseconds (PostgreSQL keeps microseconds), a date outside
//! PostgreSQL's range, a NUL character in text. Exports read rows back the same way and turn them
//! into the same text the SQLite store holds, so a batch file is the same whichever store wrote
//! it.

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

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

/// 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn epoch() -> NaiveDate {
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

/// `n` ASCII digits at `b[at..]` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0i64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as i64)
    })
}

/// Days from 2000-01-01 of a valid `YYYY-MM-DD` (years 0000–9999), else `None`.
fn canonical_date(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), shifted to PostgreSQL's epoch.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468 - 10_957)
}

/// Microseconds from 2000-01-01T00:00:00Z of `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: `None` when
/// the text is not of that form (the general RFC 3339 parser decides), `Err` when its fraction
/// holds nanoseconds.
fn canonical_utc(b: &[u8]) -> Option<Result<i64, ()>> {
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return None;
    }
    let days = canonical_date(&b[..10])?;
    let (h, mi, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut nanos = 0i64;
    match &b[19..b.len() - 1] {
        [] => {}
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            nanos = digits(frac, 0, frac.len())? * 10i64.pow(9 - frac.len() as u32);
        }
        _ => return None,
    }
    if nanos % 1000 != 0 {
        return Some(Err(()));
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(Ok(secs * 1_000_000 + nanos / 1000))
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

/// Whether two values of a column of type `ty` are the same as PostgreSQL's
/// `IS NOT DISTINCT FROM` judges them: numerics by value whatever their scale (`1.5` = `1.50`),
/// floats with `-0` = `0` and NaN = NaN, text byte for byte (what a deterministic collation
/// does; `bpchar` is read as text, its padding stripped), the rest by their binary form.
pub fn same(ty: PgType, a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match ty {
            PgType::Numeric | PgType::Float8 | PgType::Float4 => {
                order(ty, a, b) == Some(std::cmp::Ordering::Equal)
            }
            _ => a == b,
        },
        _ => false,
    }
}

/// How two non-NULL values of a column of type `ty` compare in PostgreSQL's order; `None` for
/// text (its order is the collation's) or a value that does not decode.
pub fn order(ty: PgType, a: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    fn int<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.try_into().ok()
    }
    Some(match ty {
        PgType::Text => return None,
        PgType::Int8 | PgType::Timestamptz | PgType::Timestamp => {
            i64::from_be_bytes(int(a)?).cmp(&i64::from_be_bytes(int(b)?))
        }
        PgType::Xid8 => u64::from_be_bytes(int(a)?).cmp(&u64::from_be_bytes(int(b)?)),
        PgType::Int4 | PgType::Date => {
            i32::from_be_bytes(int(a)?).cmp(&i32::from_be_bytes(int(b)?))
        }
        PgType::Int2 => i16::from_be_bytes(int(a)?).cmp(&i16::from_be_bytes(int(b)?)),
        PgType::Bool => int::<1>(a)?[0].cmp(&int::<1>(b)?[0]),
        PgType::Float8 => float_order(f64::from_be_bytes(int(a)?), f64::from_be_bytes(int(b)?)),
        PgType::Float4 => float_order(
            f32::from_be_bytes(int(a)?) as f64,
            f32::from_be_bytes(int(b)?) as f64,
        ),
        PgType::Numeric => Numeric::read(a)?.cmp(&Numeric::read(b)?),
    })
}

/// PostgreSQL's float order: NaN equals NaN and sorts above every other value; `-0` = `0`.
fn float_order(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("not NaN"),
    }
}

/// A binary numeric's value, normalized (no leading or trailing zero groups, no scale), in
/// PostgreSQL's order: -Infinity, negatives, zero, positives, Infinity, NaN.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Numeric {
    NegInfinity,
    /// A negative value: its magnitude reversed, so larger magnitudes sort first.
    Negative(std::cmp::Reverse<(i16, Vec<i16>)>),
    Zero,
    Positive((i16, Vec<i16>)),
    Infinity,
    NaN,
}

impl Numeric {
    fn read(b: &[u8]) -> Option<Numeric> {
        let be16 = |i: usize| b.get(i..i + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
        let (n, mut weight, sign) = (be16(0)?, be16(2)?, be16(4)? as u16);
        match sign {
            0xC000 => return Some(Numeric::NaN),
            0xD000 => return Some(Numeric::Infinity),
            0xF000 => return Some(Numeric::NegInfinity),
            0x0000 | 0x4000 => {}
            _ => return None,
        }
        let mut digits: Vec<i16> = (0..n.max(0) as usize)
            .map(|i| be16(8 + 2 * i))
            .collect::<Option<_>>()?;
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        weight = weight.checked_sub(lead as i16)?;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Some(if digits.is_empty() {
            Numeric::Zero
        } else if sign == 0x4000 {
            Numeric::Negative(std::cmp::Reverse((weight, digits)))
        } else {
            Numeric::Positive((weight, digits))
        })
    }
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

    /// A value as `cell` encodes it into a column of `ty`, without the length.
    fn enc(ty: PgType, s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        text_into(&mut out, ty, s).unwrap();
        field(&out).unwrap().to_vec()
    }

    #[test]
    fn stored_values_compare_as_postgresql_compares_them() {
        use std::cmp::Ordering::*;
        let n = |s: &str| enc(PgType::Numeric, s);
        // Numerics by value, whatever their scale.
        assert!(same(PgType::Numeric, Some(&n("1.5")), Some(&n("1.50"))));
        assert!(same(PgType::Numeric, Some(&n("0")), Some(&n("-0.00"))));
        assert!(!same(PgType::Numeric, Some(&n("1.5")), Some(&n("1.05"))));
        assert!(!same(PgType::Numeric, Some(&n("10000")), Some(&n("1"))));
        let sorted = [
            "-100000",
            "-10000.5",
            "-10000",
            "-1",
            "-0.0001",
            "0",
            "0.00001",
            "0.0001",
            "1",
            "1.00000001",
            "1.5",
            "9999",
            "10000",
            "99999999.99",
        ];
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(
                    order(PgType::Numeric, &n(a), &n(b)),
                    Some(i.cmp(&j)),
                    "{a} vs {b}"
                );
            }
        }
        // NaN and infinities as PostgreSQL writes them.
        let special = |sign: u16| [0u8, 0, 0, 0, (sign >> 8) as u8, 0, 0, 0].to_vec();
        let (nan, inf, ninf) = (special(0xC000), special(0xD000), special(0xF000));
        assert_eq!(order(PgType::Numeric, &nan, &nan), Some(Equal));
        assert_eq!(order(PgType::Numeric, &nan, &inf), Some(Greater));
        assert_eq!(
            order(PgType::Numeric, &inf, &n("99999999.99")),
            Some(Greater)
        );
        assert_eq!(order(PgType::Numeric, &ninf, &n("-99999")), Some(Less));
        // Floats: -0 = 0, NaN = NaN above everything.
        let f = |v: f64| v.to_be_bytes().to_vec();
        assert!(same(PgType::Float8, Some(&f(-0.0)), Some(&f(0.0))));
        assert!(same(
            PgType::Float8,
            Some(&f(f64::NAN)),
            Some(&f(-f64::NAN))
        ));
        assert_eq!(
            order(PgType::Float8, &f(f64::NAN), &f(f64::INFINITY)),
            Some(Greater)
        );
        // Dates and datetimes by their time, before the epoch too; text byte for byte.
        let d = |s: &str| enc(PgType::Date, s);
        assert_eq!(
            order(PgType::Date, &d("1999-12-31"), &d("2000-01-01")),
            Some(Less)
        );
        let t = |s: &str| enc(PgType::Timestamptz, s);
        assert!(same(
            PgType::Timestamptz,
            Some(&t("2026-01-01T01:00:00+01:00")),
            Some(&t("2026-01-01T00:00:00Z"))
        ));
        assert_eq!(
            order(
                PgType::Timestamptz,
                &t("1970-01-01T00:00:00Z"),
                &t("2030-01-01T00:00:00Z")
            ),
            Some(Less)
        );
        assert!(!same(PgType::Text, Some(b"abc"), Some(b"abc ")));
        assert!(same(PgType::Text, None, None));
        assert!(!same(PgType::Text, None, Some(b"")));
        assert_eq!(order(PgType::Text, b"a", b"b"), None);
    }

    #[test]
    fn canonical_dates_and_datetimes_read_fast_as_the_general_parser_reads_them() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..20_000 {
            let (y, m, d) = (next(10_000), 1 + next(12), 1 + next(31));
            let (h, mi, s) = (next(24), next(60), next(60));
            let frac = match next(4) {
                0 => String::new(),
                1 => format!(".{:03}", next(1000)),
                2 => format!(".{:06}", next(1_000_000)),
                _ => format!(".{:09}", next(1_000_000_000)),
            };
            let date = format!("{y:04}-{m:02}-{d:02}");
            let general = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .ok()
                .map(|v| (v - epoch()).num_days());
            assert_eq!(canonical_date(date.as_bytes()), general, "{date}");
            let t = format!("{date}T{h:02}:{mi:02}:{s:02}{frac}Z");
            let general = DateTime::parse_from_rfc3339(&t).ok().map(|v| {
                let v = v.with_timezone(&Utc);
                if v.timestamp_subsec_nanos() % 1000 != 0 {
                    return Err(());
                }
                let base = epoch().and_hms_opt(0, 0, 0).unwrap().and_utc();
                Ok((v - base).num_microseconds().unwrap())
            });
            assert_eq!(canonical_utc(t.as_bytes()), general, "{t}");
        }
        // Not the canonical form: left to the general parser.
        for t in [
            "2026-01-01T00:00:00+01:00",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-1-01T00:00:00Z",
        ] {
            assert_eq!(canonical_utc(t.as_bytes()), None, "{t}");
        }
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
