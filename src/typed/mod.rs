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

mod decimal;
mod key;

pub use decimal::canonical_decimal;
pub use key::KeyHasher;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use decimal::is_canonical_decimal;
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
    /// The character grouping digits by thousands in `int`, `float` and `decimal` values
    /// (`"1.234,50"`), if the files use one. Groups are checked, never guessed: `"1.23,5"` is
    /// rejected, not read as 1.235.
    pub thousands_separator: Option<char>,
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
            thousands_separator: None,
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
        if let Some(sep) = self.thousands_separator.filter(|c| s.contains(*c)) {
            if matches!(self.ty, ColType::Int | ColType::Float | ColType::Decimal) {
                let plain = self.ungroup(s, sep)?;
                return self.parse(Some(&plain)).map(Value::into_owned);
            }
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
                    // Infinity from digits is a number too large; "NaN", "inf" are no numbers.
                    Ok(f) if f.is_infinite() && !t.contains(['i', 'I', 'n', 'N']) => Err(format!(
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

    /// A number written with thousands separators, without them: the digits before the decimal
    /// separator must come in groups of three after the first (of one to three); none may
    /// appear after it, nor in an exponent.
    fn ungroup(&self, s: &str, sep: char) -> Result<String, String> {
        let bad = |why: &str| {
            Err(format!(
                "{s:?} is not a number with {sep:?} between groups of thousands: {why}"
            ))
        };
        let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
        let sign = &s[..s.len() - unsigned.len()];
        let (whole, rest) = match unsigned.find(self.decimal_separator) {
            Some(i) if self.ty != ColType::Int => unsigned.split_at(i),
            _ => (unsigned, ""),
        };
        if rest.contains(sep) {
            return bad("a separator after the decimal separator");
        }
        if unsigned.contains(['e', 'E']) {
            return bad("an exponent with grouped digits");
        }
        let groups: Vec<&str> = whole.split(sep).collect();
        let digits = |g: &str| g.bytes().all(|b| b.is_ascii_digit());
        let first_ok = (1..=3).contains(&groups[0].len()) && digits(groups[0]);
        if !first_ok || groups[1..].iter().any(|g| g.len() != 3 || !digits(g)) {
            return bad("the groups after the first must have exactly three digits");
        }
        Ok(format!("{sign}{}{rest}", groups.concat()))
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

pub(crate) fn parse_int(s: &str) -> Option<i64> {
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

#[cfg(test)]
mod tests;
