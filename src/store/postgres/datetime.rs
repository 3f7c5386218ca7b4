//! Dates and UTC datetimes in the canonical text typed columns store (`YYYY-MM-DD`,
//! `YYYY-MM-DDTHH:MM:SS[.fraction]Z`), turned into PostgreSQL's binary values without a
//! general parser; anything else is left to chrono's (`binary::text_into`).

/// `n` ASCII digits at `b[at..]` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0i64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as i64)
    })
}

/// Days from 2000-01-01 of a valid `YYYY-MM-DD` (years 0000–9999), else `None`.
pub(super) fn canonical_date(b: &[u8]) -> Option<i64> {
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
pub(super) fn canonical_utc(b: &[u8]) -> Option<Result<i64, ()>> {
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

#[cfg(test)]
mod tests {
    use super::super::binary::epoch;
    use super::*;
    use chrono::{DateTime, NaiveDate, Utc};

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
}
