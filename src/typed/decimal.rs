//! Exact decimals: the canonical text a `decimal` column stores (never a float).

/// Whether `s` already is the canonical text of a decimal (so it can be stored as it is).
pub(super) fn is_canonical_decimal(s: &str, scale: Option<u32>) -> bool {
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
