//! The values a config holds, parsed as it is read: each type turns a TOML string (or number)
//! into what ferry uses, or fails with a message that serde places at the key's line.

use super::{BadLimit, Policy};
use crate::format::{json::pointer_segments, text, Format};
use crate::typed::{Case, ColType};
use globset::Glob;
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// Parses a value from a string, failing with a message serde attaches to the key's position.
fn from_str_with<'de, D, T>(d: D, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    f(&s).map_err(de::Error::custom)
}

/// A duration like `500ms`, `1s`, `2m`, `1h`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| parse_duration(s).map(Dur))
    }
}

/// Parses `500ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`. A bare number is refused: `5` could mean
/// seconds or milliseconds, and guessing wrong by a factor of 1000 is silent.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try \"500ms\", \"1s\", \"2m\")"))?;
    let secs = match unit.trim() {
        "" => {
            return Err(format!(
                "{s:?} has no unit; write \"{num}s\" or \"{num}ms\" (units: ms, s, m, h, d)"
            ))
        }
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in duration {s:?} (use ms, s, m, h, d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone)]
pub(super) struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            Glob::new(s)
                .map(|_| Pattern(s.to_string()))
                .map_err(|e| format!("{s:?} is not a valid glob: {e}"))
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct DatasetName(pub String);

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.trim().is_empty() || s.contains('/') || s.starts_with('.') {
                Err(format!(
                    "{s:?} is not a dataset name (non-empty, no '/', not starting with '.')"
                ))
            } else {
                Ok(DatasetName(s.to_string()))
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FormatName(pub Format);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Ok(FormatName(Format::Csv)),
            "ndjson" | "jsonl" => Ok(FormatName(Format::Ndjson)),
            "json" => Ok(FormatName(Format::Json)),
            "xml" => Ok(FormatName(Format::Xml)),
            "fixed" => Ok(FormatName(Format::Fixed)),
            "xlsx" | "xls" | "ods" | "excel" => Ok(FormatName(Format::Excel)),
            _ => Err(format!(
                "unknown format {s:?} (csv, tsv, ndjson, json, xml, fixed, xlsx)"
            )),
        })
    }
}

/// A fixed-width layout's unit: `chars` (false) or `bytes` (true).
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitName(pub bool);

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "chars" | "characters" => Ok(UnitName(false)),
            "bytes" => Ok(UnitName(true)),
            _ => Err(format!("unknown unit {s:?} (chars, bytes)")),
        })
    }
}

/// `","`, `";"`, `"\t"` (or `"tab"`), `"|"`, any single ASCII character, or `"auto"`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delimiter(pub Option<u8>);

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s {
            "auto" => Ok(Delimiter(None)),
            "tab" | "\\t" => Ok(Delimiter(Some(b'\t'))),
            _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
                Ok(Delimiter(Some(s.as_bytes()[0])))
            }
            _ => Err(format!(
                "{s:?} is not a delimiter (one ASCII character, \"tab\" or \"auto\")"
            )),
        })
    }
}

/// `quotes = "strict" | "lenient"`; true for strict.
#[derive(Debug, Clone, Copy)]
pub(super) struct QuotesName(pub bool);

impl<'de> Deserialize<'de> for QuotesName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(QuotesName(true)),
            "lenient" => Ok(QuotesName(false)),
            _ => Err(format!("unknown quotes {s:?} (strict, lenient)")),
        })
    }
}

/// `records = "auto" | "objects" | "arrays"`: what a JSON file's records are.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordsName(pub crate::format::json::Records);

impl<'de> Deserialize<'de> for RecordsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::format::json::Records;
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(RecordsName(Records::Auto)),
            "objects" => Ok(RecordsName(Records::Objects)),
            "arrays" => Ok(RecordsName(Records::Arrays)),
            _ => Err(format!("unknown records {s:?} (auto, objects, arrays)")),
        })
    }
}

/// A size in bytes: a count (`65536`) or with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`, also
/// `KB`/`MB`/`GB` as powers of 1000). Between 1 KiB and 1 GiB.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub usize);

/// Parses a size like `16MiB` (any number of bytes; `parse_size` bounds it).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 65536, \"64KiB\", \"16MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit {u:?} in size {s:?} (use KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = n.saturating_mul(mult);
    Ok(bytes)
}

/// Parses a size like `16MiB` between 1 KiB and 1 GiB; see `Size`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bytes = parse_bytes(s)?;
    if !(1024..=1 << 30).contains(&bytes) {
        return Err(format!("size {s:?} must be between 1KiB and 1GiB"));
    }
    Ok(bytes as usize)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Count(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Count(n) => parse_size(&n.to_string()).map(Size),
            Either::Text(s) => parse_size(&s).map(Size),
        }
        .map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct QuoteChar(pub u8);

impl<'de> Deserialize<'de> for QuoteChar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" {
                Ok(QuoteChar(s.as_bytes()[0]))
            } else {
                Err(format!(
                    "{s:?} is not a quote character (one ASCII character)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct Pointer(pub String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| pointer_segments(s).map(|_| Pointer(s.to_string())))
    }
}

#[derive(Clone, Copy)]
pub(super) struct EncodingName(pub text::Encoding);

impl fmt::Debug for EncodingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for EncodingName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| text::Encoding::for_label(s).map(EncodingName))
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TypeName(pub ColType);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            ColType::from_id(&s.to_ascii_lowercase())
                .map(TypeName)
                .ok_or_else(|| {
                    format!(
                        "unknown type {s:?} ({})",
                        ColType::ALL.map(|t| t.id()).join(", ")
                    )
                })
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CaseName(pub Case);

impl<'de> Deserialize<'de> for CaseName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "lower" => Ok(CaseName(Case::Lower)),
            "upper" => Ok(CaseName(Case::Upper)),
            "keep" => Ok(CaseName(Case::Keep)),
            _ => Err(format!("unknown case {s:?} (lower, upper, keep)")),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PolicyName(pub Policy);

impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(PolicyName(Policy::Fail)),
            "add" => Ok(PolicyName(Policy::Add)),
            "ignore" => Ok(PolicyName(Policy::Ignore)),
            _ => Err(format!("unknown policy {s:?} (fail, add, ignore)")),
        })
    }
}

/// `on_key`: skip, update or reject.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnKeyName(pub crate::config::OnKey);

impl<'de> Deserialize<'de> for OnKeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::config::OnKey;
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "skip" => Ok(OnKeyName(OnKey::Skip)),
            "update" => Ok(OnKeyName(OnKey::Update)),
            "reject" => Ok(OnKeyName(OnKey::Reject)),
            _ => Err(format!("unknown on_key {s:?} (skip, update, reject)")),
        })
    }
}

/// A zone for datetimes written without one: `UTC`, `Z`, or a fixed offset like `+02:00`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Zone(pub chrono::FixedOffset);

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            let bad = || format!("{s:?} is not a timezone (UTC, or an offset like \"+02:00\")");
            if s.eq_ignore_ascii_case("utc") || s == "Z" {
                return Ok(Zone(chrono::FixedOffset::east_opt(0).expect("zero")));
            }
            let (sign, rest) = match s.as_bytes().first() {
                Some(b'+') => (1, &s[1..]),
                Some(b'-') => (-1, &s[1..]),
                _ => return Err(bad()),
            };
            let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
            let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .map(Zone)
                .ok_or_else(bad)
        })
    }
}

/// `max_bad_records`: a count (`10`) or a share of the file (`"5%"`).
#[derive(Debug, Clone, Copy)]
pub(super) struct BadLimitRaw(pub BadLimit);

impl<'de> Deserialize<'de> for BadLimitRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Count(i64),
            Text(String),
        }
        let msg = |s: &str| {
            format!("max_bad_records {s} is not a count (e.g. 10) or a percentage (e.g. \"5%\")")
        };
        match Either::deserialize(d)? {
            Either::Count(n) if n >= 0 => Ok(BadLimitRaw(BadLimit::Count(n as u64))),
            Either::Count(n) => Err(de::Error::custom(msg(&n.to_string()))),
            Either::Text(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(p) if (0.0..=100.0).contains(&p) => {
                            Ok(BadLimitRaw(BadLimit::Percent(p)))
                        }
                        _ => Err(de::Error::custom(msg(&format!("{s:?}")))),
                    }
                } else {
                    t.parse::<u64>()
                        .map(|n| BadLimitRaw(BadLimit::Count(n)))
                        .map_err(|_| de::Error::custom(msg(&format!("{s:?}"))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
