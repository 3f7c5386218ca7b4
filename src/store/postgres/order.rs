//! PostgreSQL's equality and order for the values ferry compares itself: a chunk's value
//! encoded as it would be stored (`binary::cell`) against the stored one read back by a binary
//! `COPY`, with the result `IS NOT DISTINCT FROM` and `>` would give in the database
//! (`compare.rs` uses it for hash matches).

use super::binary::PgType;

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

#[cfg(test)]
mod tests {
    use super::super::binary;
    use super::*;
    use crate::record::Cell;

    /// A value as `cell` encodes it into a column of `ty`, without the length.
    fn enc(ty: PgType, s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let cell = Cell::Text {
            start: 0,
            end: s.len() as u32,
        };
        binary::cell(&mut out, ty, cell, Some(s)).unwrap();
        binary::field(&out).unwrap().to_vec()
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
}
