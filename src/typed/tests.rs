//! Unit tests of typed columns.
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
    assert!(f.convert(Some("NaN")).unwrap_err().contains("not a number"));
    assert!(f.convert(Some("inf")).unwrap_err().contains("not a number"));
    assert!(f
        .convert(Some("-Infinity"))
        .unwrap_err()
        .contains("not a number"));
    assert!(f.convert(Some("1e400")).unwrap_err().contains("too large"));
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

#[test]
fn thousands_separators_are_checked_not_guessed() {
    let mut d = col(ColType::Decimal);
    d.decimal_separator = ',';
    d.thousands_separator = Some('.');
    assert_eq!(ok(&d, "1.234,50"), Value::Text("1234.5".into()));
    assert_eq!(ok(&d, "-12.345.678,9"), Value::Text("-12345678.9".into()));
    assert_eq!(ok(&d, "999,5"), Value::Text("999.5".into()));
    assert_eq!(
        ok(&d, "1234,5"),
        Value::Text("1234.5".into()),
        "grouping is optional"
    );
    for bad in [
        "1.23,5",
        "1.2345,0",
        ".123,4",
        "1..234",
        "1.234,5.6",
        "1234.5",
        "1.234e3",
    ] {
        assert!(d.convert(Some(bad)).is_err(), "{bad:?} must be rejected");
    }
    let mut i = col(ColType::Int);
    i.thousands_separator = Some(',');
    assert_eq!(ok(&i, "1,234,567"), Value::Int(1_234_567));
    assert_eq!(ok(&i, "+1,000"), Value::Int(1000));
    assert!(i.convert(Some("1,23")).is_err());
    assert!(i.convert(Some("1,234.0")).is_err());
    let mut f = col(ColType::Float);
    f.thousands_separator = Some('\u{a0}');
    assert_eq!(ok(&f, "1\u{a0}234.5"), Value::Real(1234.5));
}
