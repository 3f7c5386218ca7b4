//! Typed columns: what a dataset's contract says about each value, and the conversions that
//! enforce it.
//!
//! A configured column turns one raw text value into a canonical value: normalized (trim, case),
//! parsed (numbers, booleans, dates with chrono), then validated (required, allowed values). The
//! canonical forms are what SQLite stores and what key hashes are computed over:
//!
//! | type       | SQLite column | stored as                                                    |
//! |------------|---------------|--------------------------------------------------------------|
//! | `string`   | TEXT          | the text, trimmed / case-folded if asked                     |
//! | `int`      | INTEGER       | 64-bit integer                                               |
//! | `float`    | REAL          | 64-bit float (finite)                                        |
//! | `bool`     | INTEGER       | 1 or 0                                                       |
//! | `date`     | TEXT          | ISO 8601 `YYYY-MM-DD`                                        |
//! | `datetime` | TEXT          | ISO 8601 in UTC, `YYYY-MM-DDTHH:MM:SS[.fff]Z`                |
//! | `decimal`  | TEXT          | exact decimal text: `-12.50` (with `scale = 2`), never float |
//!
//! Decimals stay exact as canonical TEXT rather than scaled INTEGER: the value reads the same in
//! SQLite, exports and spreadsheets, and there is no 18-digit ceiling. Nothing here does IO.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    String,
    Int,
    Float,
    Bool,
    Date,
    DateTime,
    Decimal,
}

impl ColType {
    pub const ALL: [ColType; 7] = [
        ColType::String,
        ColType::Int,
        ColType::Float,
        ColType::Bool,
        ColType::Date,
        ColType::DateTime,
        ColType::Decimal,
    ];

    pub fn id(self) -> &'static str {
        match self {
            ColType::String => "string",
            ColType::Int => "int",
            ColType::Float => "float",
            ColType::Bool => "bool",
            ColType::Date => "date",
            ColType::DateTime => "datetime",
            ColType::Decimal => "decimal",
        }
    }

    pub fn from_id(s: &str) -> Option<ColType> {
        ColType::ALL.into_iter().find(|t| t.id() == s)
    }

    /// The declared type of the SQLite column.
    pub fn sql_type(self) -> &'static str {
        match self {
            ColType::Int | ColType::Bool => "INTEGER",
            ColType::Float => "REAL",
            ColType::String | ColType::Date | ColType::DateTime | ColType::Decimal => "TEXT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Case {
    #[default]
    Keep,
    Lower,
    Upper,
}

/// A value after conversion. Text borrows from the input when it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Text(Cow<'a, str>),
    Int(i64),
    Real(f64),
}

impl Value<'_> {
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Int(i) => Value::Int(i),
            Value::Real(r) => Value::Real(r),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Text(t) => f.write_str(t),
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
        }
    }
}

/// Date formats tried when a `date` column names none.
pub const DEFAULT_DATE_FORMATS: &[&str] = &["%Y-%m-%d"];
/// Datetime formats tried when a `datetime` column names none. `rfc3339` is ISO 8601 with an
/// offset or `Z`; the others carry no zone and are read in the column's `timezone`.
pub const DEFAULT_DATETIME_FORMATS: &[&str] = &[
    "rfc3339",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// One configured column.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// The column's name in the table.
    pub name: String,
    /// The header name (or JSON key) it is read from; matched without case.
    pub source: String,
    pub ty: ColType,
    /// A null or empty value rejects the record.
    pub required: bool,
    /// Canonical allowed values; empty means any.
    pub allowed: Vec<Value<'static>>,
    /// Strip surrounding whitespace from strings (other types always ignore it).
    pub trim: bool,
    pub case: Case,
    /// chrono formats for dates and datetimes, tried in order; also `rfc3339`, `unix`,
    /// `unix_ms` for datetimes.
    pub formats: Vec<String>,
    /// The zone of datetimes written without one.
    pub timezone: FixedOffset,
    /// Digits after the decimal point for `decimal` (values with more are rejected, never rounded).
    pub scale: Option<u32>,
    /// The decimal separator of `float` and `decimal` values in the files.
    pub decimal_separator: char,
}

impl ColumnSpec {
    pub fn new(name: &str, ty: ColType) -> ColumnSpec {
        ColumnSpec {
            name: name.to_string(),
            source: name.to_string(),
            ty,
            required: false,
            allowed: Vec::new(),
            trim: false,
            case: Case::Keep,
            formats: Vec::new(),
            timezone: FixedOffset::east_opt(0).expect("zero offset"),
            scale: None,
            decimal_separator: '.',
        }
    }

    /// Converts one raw value: normalize, parse, validate. The error is the reason for a reject.
    pub fn convert<'a>(&self, raw: Option<&'a str>) -> Result<Value<'a>, String> {
        let v = self.parse(raw)?;
        if matches!(v, Value::Null) {
            if self.required {
                return Err("a value is required".to_string());
            }
            return Ok(v);
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&v) {
            return Err(format!("{} is not one of the allowed values", quote(&v)));
        }
        Ok(v)
    }

    fn parse<'a>(&self, raw: Option<&'a str>) -> Result<Value<'a>, String> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        if self.ty == ColType::String {
            let s = if self.trim { raw.trim() } else { raw };
            if s.is_empty() {
                return Ok(Value::Null);
            }
            return Ok(Value::Text(match self.case {
                Case::Keep => Cow::Borrowed(s),
                Case::Lower if !s.chars().any(char::is_uppercase) => Cow::Borrowed(s),
                Case::Upper if !s.chars().any(char::is_lowercase) => Cow::Borrowed(s),
                Case::Lower => Cow::Owned(s.to_lowercase()),
                Case::Upper => Cow::Owned(s.to_uppercase()),
            }));
        }
        let s = raw.trim();
        if s.is_empty() {
            return Ok(Value::Null);
        }
        match self.ty {
            ColType::String => unreachable!("handled above"),
            ColType::Int => parse_int(s)
                .map(Value::Int)
                .ok_or_else(|| format!("{s:?} is not an integer")),
            ColType::Float => {
                let t = self.with_point(s);
                match t.parse::<f64>() {
                    Ok(f) if f.is_finite() && !t.contains(['i', 'I', 'n', 'N']) => {
                        // A value too small for a float would be stored as 0: a silent change.
                        let mantissa = t.split(['e', 'E']).next().unwrap_or("");
                        if f == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
                            return Err(format!(
                                "{s:?} is too small for a float (it would be stored as 0); \
                                 declare the column as decimal to keep it exactly"
                            ));
                        }
                        Ok(Value::Real(f))
                    }
                    Ok(_) => Err(format!(
                        "{s:?} is too large for a float; declare the column as decimal to keep \
                         it exactly"
                    )),
                    _ => Err(format!("{s:?} is not a number")),
                }
            }
            ColType::Bool => parse_bool(s)
                .map(|b| Value::Int(b as i64))
                .ok_or_else(|| format!("{s:?} is not a boolean (true/false, yes/no, 1/0)")),
            ColType::Date => self.parse_date(s).map(Value::Text),
            ColType::DateTime => self.parse_datetime(s).map(Value::Text),
            ColType::Decimal
                if self.decimal_separator == '.' && is_canonical_decimal(s, self.scale) =>
            {
                Ok(Value::Text(Cow::Borrowed(s)))
            }
            ColType::Decimal => canonical_decimal(&self.with_point(s), self.scale)
                .map(|d| Value::Text(Cow::Owned(d)))
                .map_err(|why| format!("{s:?} is not a decimal{why}")),
        }
    }

    fn with_point<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.decimal_separator == '.' {
            Cow::Borrowed(s)
        } else {
            if s.contains('.') {
                // A point where a comma is the separator: not a number in this file's convention.
                return Cow::Owned(format!("{s}?"));
            }
            Cow::Owned(s.replace(self.decimal_separator, "."))
        }
    }

    fn formats(&self, defaults: &'static [&'static str]) -> Vec<&str> {
        if self.formats.is_empty() {
            defaults.to_vec()
        } else {
            self.formats.iter().map(String::as_str).collect()
        }
    }

    fn parse_date<'a>(&self, s: &'a str) -> Result<Cow<'a, str>, String> {
        let formats = self.formats(DEFAULT_DATE_FORMATS);
        for f in &formats {
            if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                // Already ISO 8601 (the common case): no rewriting.
                if *f == "%Y-%m-%d" && s.len() == 10 {
                    return Ok(Cow::Borrowed(s));
                }
                return Ok(Cow::Owned(d.format("%Y-%m-%d").to_string()));
            }
        }
        Err(format!(
            "{s:?} is not a date in the format{} {}",
            if formats.len() > 1 { "s" } else { "" },
            formats.join(", ")
        ))
    }

    fn parse_datetime<'a>(&self, s: &'a str) -> Result<Cow<'a, str>, String> {
        let formats = self.formats(DEFAULT_DATETIME_FORMATS);
        for f in &formats {
            if let Some(t) = self.datetime_in(s, f) {
                // Already canonical (`YYYY-MM-DDTHH:MM:SSZ`, the common case): no rewriting.
                if *f == "rfc3339" && s.len() == 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z')
                {
                    return Ok(Cow::Borrowed(s));
                }
                return Ok(Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)));
            }
        }
        Err(format!(
            "{s:?} is not a datetime in the format{} {}",
            if formats.len() > 1 { "s" } else { "" },
            formats.join(", ")
        ))
    }

    fn datetime_in(&self, s: &str, f: &str) -> Option<DateTime<Utc>> {
        match f {
            "rfc3339" => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            "unix" => parse_int(s).and_then(|n| Utc.timestamp_opt(n, 0).single()),
            "unix_ms" => parse_int(s).and_then(|n| Utc.timestamp_millis_opt(n).single()),
            _ if has_zone(f) => DateTime::parse_from_str(s, f)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            _ => NaiveDateTime::parse_from_str(s, f)
                .ok()
                .and_then(|n| self.timezone.from_local_datetime(&n).single())
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

fn quote(v: &Value<'_>) -> String {
    match v {
        Value::Text(t) => format!("{t:?}"),
        other => other.to_string(),
    }
}

/// Whether a chrono format reads a zone or offset itself.
fn has_zone(f: &str) -> bool {
    f.contains("%z") || f.contains("%:z") || f.contains("%#z") || f.contains("%Z")
}

/// Checks a chrono format string: it must parse, and hold no unknown specifier.
pub fn check_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if matches!(f, "rfc3339" | "unix" | "unix_ms") {
        return Ok(());
    }
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!("{f:?} is not a valid chrono format"));
    }
    Ok(())
}

fn parse_int(s: &str) -> Option<i64> {
    let t = s.strip_prefix('+').unwrap_or(s);
    if t.starts_with(['+', '-']) && t.len() == 1 {
        return None;
    }
    t.parse::<i64>().ok()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Whether `s` already is the canonical text of a decimal (so it can be stored as it is).
fn is_canonical_decimal(s: &str, scale: Option<u32>) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    let frac_ok = match (frac, scale) {
        (None, Some(0)) | (None, None) => true,
        (None, Some(_)) => false,
        (Some(f), Some(n)) => digits(f) && f.len() == n as usize,
        (Some(f), None) => digits(f) && !f.ends_with('0'),
    };
    // "-0", "-0.00": the canonical zero has no sign.
    frac_ok && !(s.starts_with('-') && body.bytes().all(|b| b == b'0' || b == b'.'))
}

/// The canonical text of a decimal: no leading `+`, no leading zeros, `-0` is `0`, and either
/// exactly `scale` fraction digits or, without a scale, no trailing zeros. An exponent
/// (`1.5E3`) is applied exactly. Errors say why after "is not a decimal".
pub fn canonical_decimal(s: &str, scale: Option<u32>) -> Result<String, String> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => {
            let e = &body[i + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4
            {
                return Err(String::new());
            }
            (&body[..i], e.parse::<i64>().map_err(|_| String::new())?)
        }
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(String::new());
    }
    // All digits, and where the point goes among them.
    let all: String = [int, frac].concat();
    let point = int.len() as i64 + exp;
    let (int, frac): (String, String) = if point <= 0 {
        let zeros = "0".repeat((-point) as usize);
        (String::new(), format!("{zeros}{all}"))
    } else if point as usize >= all.len() {
        let zeros = "0".repeat(point as usize - all.len());
        (format!("{all}{zeros}"), String::new())
    } else {
        let (i, f) = all.split_at(point as usize);
        (i.to_string(), f.to_string())
    };
    let int = int.trim_start_matches('0');
    let mut frac = frac;
    match scale {
        Some(n) => {
            let n = n as usize;
            if frac.len() > n {
                if frac[n..].bytes().any(|b| b != b'0') {
                    return Err(format!(" with at most {n} decimal places"));
                }
                frac.truncate(n);
            }
            while frac.len() < n {
                frac.push('0');
            }
        }
        None => {
            let t = frac.trim_end_matches('0').len();
            frac.truncate(t);
        }
    }
    let zero = int.is_empty() && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(s.len() + 2);
    if neg && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// A 64-bit hash of a record's key, stable across runs and versions (it is stored): FNV-1a over
/// each value's type tag, length and bytes, then a final avalanche (murmur3's fmix64).
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl KeyHasher {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn null(&mut self) {
        self.bytes(&[0]);
    }

    pub fn text(&mut self, s: &str) {
        self.bytes(&[1]);
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }

    pub fn int(&mut self, v: i64) {
        self.bytes(&[2]);
        self.bytes(&v.to_le_bytes());
    }

    pub fn real(&mut self, v: f64) {
        self.bytes(&[3]);
        // -0.0 and 0.0 are the same key.
        let v = if v == 0.0 { 0.0 } else { v };
        self.bytes(&v.to_bits().to_le_bytes());
    }

    pub fn finish(self) -> i64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColType) -> ColumnSpec {
        ColumnSpec::new("c", ty)
    }

    fn ok(c: &ColumnSpec, s: &str) -> Value<'static> {
        c.convert(Some(s)).unwrap().into_owned()
    }

    fn text(s: &str) -> Value<'static> {
        Value::Text(Cow::Owned(s.to_string()))
    }

    #[test]
    fn numbers_and_booleans() {
        let i = col(ColType::Int);
        assert_eq!(ok(&i, " 42 "), Value::Int(42));
        assert_eq!(ok(&i, "+7"), Value::Int(7));
        assert_eq!(ok(&i, "-7"), Value::Int(-7));
        assert!(i.convert(Some("4.0")).is_err());
        assert!(i.convert(Some("99999999999999999999")).is_err());
        assert_eq!(ok(&i, "  "), Value::Null);
        let f = col(ColType::Float);
        assert_eq!(ok(&f, "1.5e3"), Value::Real(1500.0));
        assert!(f.convert(Some("NaN")).is_err());
        assert!(f.convert(Some("inf")).is_err());
        assert!(f.convert(Some("1e400")).is_err());
        assert!(f.convert(Some("1e-400")).unwrap_err().contains("too small"));
        assert_eq!(ok(&f, "0e-400"), Value::Real(0.0));
        assert!(i.convert(Some("1E2")).is_err());
        let mut comma = col(ColType::Float);
        comma.decimal_separator = ',';
        assert_eq!(ok(&comma, "2,5"), Value::Real(2.5));
        assert!(comma.convert(Some("2.5")).is_err());
        let b = col(ColType::Bool);
        assert_eq!(ok(&b, "Yes"), Value::Int(1));
        assert_eq!(ok(&b, "0"), Value::Int(0));
        assert!(b.convert(Some("maybe")).is_err());
    }

    #[test]
    fn decimals_stay_exact() {
        assert_eq!(canonical_decimal("0012.50", None).unwrap(), "12.5");
        assert_eq!(canonical_decimal("-0.000", None).unwrap(), "0");
        assert_eq!(canonical_decimal(".5", Some(2)).unwrap(), "0.50");
        assert_eq!(canonical_decimal("+3", Some(2)).unwrap(), "3.00");
        assert_eq!(canonical_decimal("1.2300", Some(2)).unwrap(), "1.23");
        assert!(canonical_decimal("1.234", Some(2)).is_err());
        assert_eq!(canonical_decimal("1e5", None).unwrap(), "100000");
        assert_eq!(canonical_decimal("1E2", Some(2)).unwrap(), "100.00");
        assert_eq!(canonical_decimal("-2.50E+1", None).unwrap(), "-25");
        assert_eq!(canonical_decimal("1.5e-3", None).unwrap(), "0.0015");
        assert_eq!(canonical_decimal("-0E7", None).unwrap(), "0");
        assert!(canonical_decimal("1.5e-3", Some(2)).is_err());
        assert!(canonical_decimal("1e", None).is_err());
        assert!(canonical_decimal("1e99999", None).is_err());
        assert_eq!(
            canonical_decimal("123456789012345678901234567890", None).unwrap(),
            "123456789012345678901234567890"
        );
        assert!(canonical_decimal("-", None).is_err());
        assert!(canonical_decimal("1.2.3", None).is_err());
        // Canonical input is recognized as such, and only canonical input.
        for (s, scale) in [
            ("12.50", Some(2)),
            ("0.5", None),
            ("-3", None),
            ("7", Some(0)),
        ] {
            assert!(is_canonical_decimal(s, scale), "{s}");
            assert_eq!(canonical_decimal(s, scale).unwrap(), s);
        }
        for (s, scale) in [
            ("012.50", Some(2)),
            ("0.50", None),
            ("-0.00", Some(2)),
            ("1.5", Some(2)),
            ("+1", None),
            (".5", None),
        ] {
            assert!(!is_canonical_decimal(s, scale), "{s}");
        }
        let mut d = col(ColType::Decimal);
        d.scale = Some(2);
        d.decimal_separator = ',';
        assert_eq!(ok(&d, "1234,5"), text("1234.50"));
        let e = d.convert(Some("1,234")).unwrap_err();
        assert!(e.contains("at most 2 decimal places"), "{e}");
    }

    #[test]
    fn dates_in_several_formats() {
        let mut d = col(ColType::Date);
        d.formats = vec!["%Y-%m-%d".into(), "%d.%m.%Y".into(), "%m/%d/%Y".into()];
        assert_eq!(ok(&d, "2026-03-01"), text("2026-03-01"));
        assert_eq!(ok(&d, "01.03.2026"), text("2026-03-01"));
        assert_eq!(ok(&d, "3/1/2026"), text("2026-03-01"));
        let e = d.convert(Some("2026-02-30")).unwrap_err();
        assert!(e.contains("not a date"), "{e}");
        assert_eq!(ok(&col(ColType::Date), "2026-11-22"), text("2026-11-22"));
    }

    #[test]
    fn datetimes_become_utc() {
        let t = col(ColType::DateTime);
        assert_eq!(
            ok(&t, "2026-11-22T10:15:00+02:00"),
            text("2026-11-22T08:15:00Z")
        );
        assert_eq!(ok(&t, "2026-11-22 10:15:00"), text("2026-11-22T10:15:00Z"));
        assert_eq!(
            ok(&t, "2026-11-22T10:15:00.250Z"),
            text("2026-11-22T10:15:00.250Z")
        );
        let mut local = col(ColType::DateTime);
        local.formats = vec!["%d/%m/%Y %H:%M".into(), "unix".into()];
        local.timezone = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(ok(&local, "22/11/2026 10:15"), text("2026-11-22T09:15:00Z"));
        assert_eq!(ok(&local, "0"), text("1970-01-01T00:00:00Z"));
        assert!(local.convert(Some("yesterday")).is_err());
        assert!(check_format("%Y-%m-%d").is_ok());
        assert!(check_format("%Y-%Q").is_err());
    }

    #[test]
    fn strings_required_and_allowed() {
        let mut s = col(ColType::String);
        s.trim = true;
        s.case = Case::Upper;
        s.required = true;
        s.allowed = vec![text("NO"), text("SE")];
        assert_eq!(ok(&s, " no "), text("NO"));
        assert!(s.convert(Some("dk")).unwrap_err().contains("allowed"));
        assert_eq!(s.convert(Some("  ")).unwrap_err(), "a value is required");
        assert_eq!(s.convert(None).unwrap_err(), "a value is required");
        let plain = col(ColType::String);
        assert_eq!(ok(&plain, " a "), text(" a "));
    }

    const PINNED: i64 = -1156442770466217457;

    #[test]
    fn key_hashes_are_stable_and_typed() {
        let h = |f: &dyn Fn(&mut KeyHasher)| {
            let mut k = KeyHasher::default();
            f(&mut k);
            k.finish()
        };
        // Stored in ledgers: this value must never change.
        assert_eq!(
            h(&|k| {
                k.text("VIN1");
                k.int(2026)
            }),
            PINNED
        );
        assert_ne!(h(&|k| k.text("1")), h(&|k| k.int(1)));
        assert_ne!(
            h(&|k| {
                k.text("ab");
                k.text("c")
            }),
            h(&|k| {
                k.text("a");
                k.text("bc")
            })
        );
        assert_eq!(h(&|k| k.real(0.0)), h(&|k| k.real(-0.0)));
    }
}
