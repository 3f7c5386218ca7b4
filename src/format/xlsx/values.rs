//! Cell values as text, exactly: numbers from the digits the workbook wrote (never through a
//! float), Excel serial dates in either date system to ISO 8601, OpenDocument times, and the
//! `_xHHHH_` escapes of Office Open XML strings.
//!
//! A value that cannot be given faithfully (Excel's phantom 1900-02-29, a negative or too large
//! date serial) is an error string: the caller rejects the record with it.

use crate::typed::canonical_decimal;
use chrono::{Days, NaiveDate};
use std::borrow::Cow;

/// What a number cell's format makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A plain number.
    Number,
    /// A date, with or without a time of day.
    Date,
    /// A time of day only (`h:mm:ss`).
    Time,
    /// Elapsed time (`[h]:mm:ss`): the number of days as stored.
    Duration,
}

/// Milliseconds in a day.
const DAY_MS: u128 = 86_400_000;

/// A number as written, checked and put in its exact canonical form (`5.0` → `5`, `1E+3` →
/// `1000`, `0.10000000000000001` kept digit for digit). `None`: not a number.
pub fn number(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.starts_with('+') || raw.ends_with('.') || raw.starts_with('.') {
        return None;
    }
    canonical_decimal(raw, None).ok()
}

/// An Excel serial number (canonical text, see `number`) shown as `shown`, in the 1904 date
/// system or the 1900 one, as ISO 8601: `2026-11-05`, `2026-11-05T14:30:00.250`, `14:30:00`. A
/// time that rounds to 24:00 is the next day's 00:00. Durations stay the number of days.
pub fn serial(canonical: &str, shown: Shown, date1904: bool) -> Result<String, String> {
    if matches!(shown, Shown::Number | Shown::Duration) {
        return Ok(canonical.to_string());
    }
    if canonical.starts_with('-') {
        return Err(format!(
            "a date cell holds {canonical}, a negative serial number, which is no date"
        ));
    }
    let (int, frac) = canonical.split_once('.').unwrap_or((canonical, ""));
    let too_late = || format!("a date cell holds {canonical}, a serial number past 9999-12-31");
    let written: u64 = int.parse().map_err(|_| too_late())?;
    let (mut days, mut ms) = (written, day_fraction_ms(frac));
    if ms == DAY_MS {
        days += 1;
        ms = 0;
    }
    let time = clock(ms as u64);
    // A time of day (24:00 is 00:00); in the 1900 system day 0 is no date ("1900-01-00"), so
    // its value is a time of day only too.
    if (shown == Shown::Time && written == 0) || (!date1904 && days == 0) {
        return Ok(time);
    }
    let date = if date1904 {
        NaiveDate::from_ymd_opt(1904, 1, 1).and_then(|d| d.checked_add_days(Days::new(days)))
    } else if days == 60 {
        return Err(
            "a date cell holds 60, Excel's 1900-02-29 — a day that never existed (Excel counts \
             1900 as a leap year); the partner's sheet must say which date it means"
                .into(),
        );
    } else if days < 60 {
        NaiveDate::from_ymd_opt(1899, 12, 31).and_then(|d| d.checked_add_days(Days::new(days)))
    } else {
        NaiveDate::from_ymd_opt(1899, 12, 30).and_then(|d| d.checked_add_days(Days::new(days)))
    };
    let date = date
        .filter(|d| d.format("%Y").to_string().len() == 4)
        .ok_or_else(too_late)?;
    Ok(if ms == 0 {
        date.format("%Y-%m-%d").to_string()
    } else {
        format!("{}T{time}", date.format("%Y-%m-%d"))
    })
}

/// The fraction of a day written as the digits after the point, in milliseconds, rounded half
/// up, exactly (at most 30 digits count; more cannot change a millisecond but in a tie).
fn day_fraction_ms(digits: &str) -> u128 {
    let digits = &digits[..digits.len().min(30)];
    if digits.is_empty() {
        return 0;
    }
    let n: u128 = digits.parse().unwrap_or(0);
    let denom = 10u128.pow(digits.len() as u32);
    (n * DAY_MS * 2 + denom) / (2 * denom)
}

/// `HH:MM:SS`, with `.mmm` when there are milliseconds.
fn clock(ms: u64) -> String {
    let (s, milli) = (ms / 1000, ms % 1000);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if milli > 0 {
        format!("{h:02}:{m:02}:{s:02}.{milli:03}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// How a number format shows its number: a date, a time of day, elapsed time, or a number.
/// Quoted text, escaped characters, fill and padding characters, colours and conditions are
/// not format tokens; only the first section (positive numbers) counts.
pub fn format_shows(code: &str) -> Shown {
    let mut date = false;
    let mut time = false;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ';' => break,
            '"' => {
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                }
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            '[' => {
                let inner: String = chars.by_ref().take_while(|&b| b != ']').collect();
                let lower = inner.to_ascii_lowercase();
                if !lower.is_empty() && lower.chars().all(|b| matches!(b, 'h' | 'm' | 's')) {
                    return Shown::Duration;
                }
            }
            'y' | 'Y' | 'd' | 'D' => date = true,
            'h' | 'H' | 's' | 'S' => time = true,
            // `m` is a month beside days or years, minutes beside hours or seconds.
            'm' | 'M' => time |= !date,
            'a' | 'A'
                if {
                    let rest: String = chars.clone().take(4).collect();
                    rest.starts_with("M/PM") || rest.starts_with("m/pm") || rest.starts_with("/p")
                } =>
            {
                time = true
            }
            _ => {}
        }
    }
    match (date, time) {
        (true, _) => Shown::Date,
        (false, true) => Shown::Time,
        _ => Shown::Number,
    }
}

/// What one of Excel's built-in number formats (ids below 164) shows.
pub fn builtin_shows(id: u32) -> Shown {
    match id {
        // Dates, and date formats of East Asian locales.
        14..=17 | 22 | 27..=36 | 50..=58 => Shown::Date,
        18..=21 | 45 | 47 => Shown::Time,
        46 => Shown::Duration,
        _ => Shown::Number,
    }
}

/// Office Open XML text with its `_xHHHH_` escapes (how Excel writes characters XML cannot
/// hold, such as `_x000D_` for a carriage return; `_x005F_` escapes an underscore) decoded.
pub fn unescape_ooxml(s: &str) -> Cow<'_, str> {
    if !s.contains("_x") {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let hex_at = |i: usize| -> Option<u32> {
        let h = s.get(i + 2..i + 6)?;
        (b.get(i + 6) == Some(&b'_') && h.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
    };
    while i < b.len() {
        if b[i] == b'_' && b.get(i + 1) == Some(&b'x') {
            if let Some(u) = hex_at(i) {
                // A surrogate pair is written as two escapes.
                if (0xD800..0xDC00).contains(&u) {
                    if let Some(lo) = hex_at(i + 7).filter(|l| (0xDC00..0xE000).contains(l)) {
                        let c = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                        if let Some(ch) = char::from_u32(c) {
                            out.push(ch);
                            i += 14;
                            continue;
                        }
                    }
                }
                if let Some(ch) = char::from_u32(u) {
                    out.push(ch);
                    i += 7;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    Cow::Owned(out)
}

/// An OpenDocument time value (`PT14H30M05.5S`) as a time of day (`14:30:05.5`) when it is
/// one (under 24 hours, not negative); else the duration as written.
pub fn ods_time(raw: &str) -> String {
    let parsed = (|| {
        let rest = raw.strip_prefix("PT")?;
        let (h, rest) = rest.split_once('H')?;
        let (m, rest) = rest.split_once('M')?;
        let s = rest.strip_suffix('S')?;
        let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let whole: u64 = whole.parse().ok()?;
        if !frac.bytes().all(|c| c.is_ascii_digit()) || h >= 24 || m >= 60 || whole >= 60 {
            return None;
        }
        let frac = frac.trim_end_matches('0');
        Some(if frac.is_empty() {
            format!("{h:02}:{m:02}:{whole:02}")
        } else {
            format!("{h:02}:{m:02}:{whole:02}.{frac}")
        })
    })();
    parsed.unwrap_or_else(|| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str, date1904: bool) -> Result<String, String> {
        serial(&number(s).unwrap(), Shown::Date, date1904)
    }

    #[test]
    fn numbers_keep_every_written_digit() {
        assert_eq!(
            number("12345678901234567890").unwrap(),
            "12345678901234567890"
        );
        assert_eq!(number("9007199254740993").unwrap(), "9007199254740993");
        assert_eq!(
            number("0.1234567890123456789").unwrap(),
            "0.1234567890123456789"
        );
        assert_eq!(number("5.0").unwrap(), "5");
        assert_eq!(number("-0").unwrap(), "0");
        assert_eq!(number("1.5E+3").unwrap(), "1500");
        assert_eq!(number("1E-3").unwrap(), "0.001");
        for bad in ["", "abc", "1,5", "NaN", "inf", "+1", "1.", ".5", "1e"] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }

    #[test]
    fn serials_are_dates_in_either_system() {
        assert_eq!(date("46331", false).unwrap(), "2026-11-05");
        assert_eq!(date("46331.5", false).unwrap(), "2026-11-05T12:00:00");
        assert_eq!(date("61", false).unwrap(), "1900-03-01");
        assert_eq!(date("59", false).unwrap(), "1900-02-28");
        assert_eq!(date("1", false).unwrap(), "1900-01-01");
        assert!(date("60", false).unwrap_err().contains("1900-02-29"));
        assert_eq!(date("0.75", false).unwrap(), "18:00:00");
        // The 1904 system: day 0 is 1904-01-01, a date like any other.
        assert_eq!(date("0", true).unwrap(), "1904-01-01");
        assert_eq!(date("0.5", true).unwrap(), "1904-01-01T12:00:00");
        assert_eq!(date("44869", true).unwrap(), "2026-11-05");
        assert!(date("-1", false).is_err());
        assert!(date("2958466", false).is_err());
        assert_eq!(date("2958465", false).unwrap(), "9999-12-31");
        // 23:59:59.9996 rounds to the next day's midnight, never to 24:00.
        assert_eq!(date("46331.999999995", false).unwrap(), "2026-11-06");
        assert_eq!(
            date("46331.0000173611", false).unwrap(),
            "2026-11-05T00:00:01.500"
        );
        let t = serial(&number("0.999999999").unwrap(), Shown::Time, false).unwrap();
        assert_eq!(t, "00:00:00");
        let t = serial("1.5", Shown::Time, false).unwrap();
        assert_eq!(
            t, "1900-01-01T12:00:00",
            "a time cell with a day keeps its day"
        );
        assert_eq!(serial("1.25", Shown::Duration, false).unwrap(), "1.25");
    }

    #[test]
    fn formats_say_what_they_show() {
        for (code, want) in [
            ("yyyy-mm-dd", Shown::Date),
            ("d/m/yy h:mm", Shown::Date),
            ("h:mm:ss", Shown::Time),
            ("mm:ss", Shown::Time),
            ("h:mm AM/PM", Shown::Time),
            ("[h]:mm:ss", Shown::Duration),
            ("[$-409]mmmm d, yyyy", Shown::Date),
            ("0.00", Shown::Number),
            ("#,##0\\ \"days\"", Shown::Number),
            ("\"Y: \"0.00", Shown::Number),
            ("[Red]0.00;[Blue]-0.00", Shown::Number),
            ("General", Shown::Number),
            ("0.0%", Shown::Number),
            ("_(* #,##0_)", Shown::Number),
        ] {
            assert_eq!(format_shows(code), want, "{code}");
        }
        assert_eq!(builtin_shows(14), Shown::Date);
        assert_eq!(builtin_shows(21), Shown::Time);
        assert_eq!(builtin_shows(2), Shown::Number);
    }

    #[test]
    fn ooxml_escapes_decode() {
        assert_eq!(unescape_ooxml("a_x000D_b"), "a\rb");
        assert_eq!(unescape_ooxml("_x005F_x0041_"), "_x0041_");
        assert_eq!(unescape_ooxml("_xD83D__xDE00_"), "😀");
        assert_eq!(unescape_ooxml("plain_x_text"), "plain_x_text");
        assert_eq!(unescape_ooxml("é_x00e9_"), "éé");
    }

    #[test]
    fn ods_times_are_times_of_day_when_they_are() {
        assert_eq!(ods_time("PT14H30M05S"), "14:30:05");
        assert_eq!(ods_time("PT14H30M05.500S"), "14:30:05.5");
        assert_eq!(ods_time("PT36H00M00S"), "PT36H00M00S");
        assert_eq!(ods_time("-PT01H00M00S"), "-PT01H00M00S");
    }
}
