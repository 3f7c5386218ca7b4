use super::*;
use crate::format::Collect;
use calamine::{ExcelDateTime, ExcelDateTimeType};

fn date(serial: f64) -> String {
    datetime(&ExcelDateTime::new(
        serial,
        ExcelDateTimeType::DateTime,
        false,
    ))
}

#[test]
fn dates_and_times_read_as_iso_8601() {
    assert_eq!(date(46331.0), "2026-11-05");
    assert_eq!(date(46331.5), "2026-11-05T12:00:00");
    assert_eq!(date(46331.0 + 1.5 / 86400.0), "2026-11-05T00:00:01.500");
    assert_eq!(date(0.75), "18:00:00");
    assert_eq!(date(61.0), "1900-03-01");
    // Out of the calendar Excel knows: the stored number, for a typed column to refuse.
    assert_eq!(date(-1.0), "-1");
    assert_eq!(date(3e6), "3000000");
    let one_1904 = ExcelDateTime::new(0.0 + 1.0, ExcelDateTimeType::DateTime, true);
    assert_eq!(datetime(&one_1904), "1904-01-02");
    let span = ExcelDateTime::new(1.25, ExcelDateTimeType::TimeDelta, false);
    assert_eq!(datetime(&span), "1.25");
}

#[test]
fn values_are_written_as_the_sheet_stores_them() {
    use calamine::Data;
    assert_eq!(text(&Data::Float(0.1)).unwrap(), "0.1");
    assert_eq!(text(&Data::Float(5.0)).unwrap(), "5");
    assert_eq!(
        text(&Data::Float(0.30000000000000004)).unwrap(),
        "0.30000000000000004"
    );
    assert_eq!(text(&Data::Int(-7)).unwrap(), "-7");
    assert_eq!(text(&Data::Bool(true)).unwrap(), "true");
    assert_eq!(text(&Data::String(String::new())), None);
    assert_eq!(text(&Data::Empty), None);
    let err = Data::Error(calamine::CellErrorType::Div0);
    assert_eq!(text(&err).unwrap(), "#DIV/0!");
}

fn sheet(cells: &[(u32, u32, &str)], header_row: u32) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    let mut rows = Rows::new(header_row, &mut c);
    let run = || -> Result<u64, Stop> {
        for &(r, col, v) in cells {
            rows.cell(r, col, (!v.is_empty()).then_some(Cow::Borrowed(v)))?;
        }
        rows.finish()
    };
    match run() {
        Ok(_) => Ok(c),
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

#[test]
fn rows_under_the_header_become_records() {
    let c = sheet(
        &[
            (0, 0, "title"),
            (2, 0, "a"),
            (2, 1, "b"),
            (2, 2, ""),
            (3, 0, "1"),
            (3, 1, "2"),
            (5, 1, "x"),
            (5, 3, "extra"),
        ],
        3,
    )
    .unwrap();
    assert_eq!(c.cols, ["a", "b", "", ""]);
    // The header's trailing blank is dropped; a value under no header adds columns later.
    assert_eq!(c.rows[0], (4, vec![Some("1".into()), Some("2".into())]));
    assert_eq!(
        c.rows[1],
        (6, vec![None, Some("x".into()), None, Some("extra".into())])
    );
}

#[test]
fn broken_sheets_are_refused() {
    // Rows out of order, a cell given twice, no header row.
    let e = sheet(&[(0, 0, "a"), (2, 0, "1"), (1, 0, "2")], 1).unwrap_err();
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = sheet(&[(0, 0, "a"), (1, 0, "1"), (1, 0, "2")], 1).unwrap_err();
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = sheet(&[(0, 0, "a"), (1, MAX_COLUMNS, "1")], 1).unwrap_err();
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    assert_eq!(sheet(&[], 1).unwrap_err().kind, Kind::Empty);
    assert_eq!(sheet(&[(3, 0, "1")], 1).unwrap_err().kind, Kind::Empty);
}

#[test]
fn not_a_workbook_is_corrupt() {
    let mut c = Collect::default();
    let r = parse(
        &b"PK\x03\x04 not really a zip"[..],
        &ExcelOptions::default(),
        &mut c,
    );
    assert!(matches!(r, Err(Stop::Reject(r)) if r.kind == Kind::XlsxCorrupt));
}
