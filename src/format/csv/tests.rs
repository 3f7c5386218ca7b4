//! Unit tests of the CSV parser.
use super::*;
use crate::format::Collect;

fn run(input: &str, opt: &CsvOptions) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    match parse(input.as_bytes(), opt, &mut c) {
        Ok(_) => Ok(c),
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

#[test]
fn rfc4180_quoting() {
    let c = run(
        "id,text\r\n1,\"a \"\"quoted\"\", word\"\r\n2,\"multi\nline\"\r\n3,\n",
        &CsvOptions::default(),
    )
    .unwrap();
    assert_eq!(c.cols, ["id", "text"]);
    assert_eq!(c.rows.len(), 3);
    assert_eq!(c.rows[0].1[1].as_deref(), Some("a \"quoted\", word"));
    assert_eq!(c.rows[1].1[1].as_deref(), Some("multi\nline"));
    assert_eq!(c.rows[2], (5, vec![Some("3".into()), None]));
}

#[test]
fn header_only_is_zero_records() {
    assert_eq!(run("a,b\n", &CsvOptions::default()).unwrap().rows.len(), 0);
    assert_eq!(
        run("", &CsvOptions::default()).unwrap_err().kind,
        Kind::Empty
    );
}

#[test]
fn ragged_rows_are_rejected_with_their_line() {
    let e = run("a,b\n1,2\n3\n", &CsvOptions::default()).unwrap_err();
    assert_eq!(e.kind, Kind::CsvRaggedRow);
    assert_eq!(e.line, Some(3));
}

#[test]
fn unterminated_quotes_are_caught() {
    for bad in [
        "a,b\n1,\"open\n",
        "a,b\n1,\"x\"\"",
        "\"a",
        "a,b\n1,\"x\"\"\"\"y",
    ] {
        let e = run(bad, &CsvOptions::default()).unwrap_err();
        assert_eq!(e.kind, Kind::CsvUnterminatedQuote, "{bad:?}");
    }
    let e = run("a,b\n1,2\n3,\"cut\nshort", &CsvOptions::default()).unwrap_err();
    assert_eq!((e.line, e.offset), (Some(3), Some(10)));
    // Closed quotes and escaped quotes are fine.
    for good in [
        "a,b\n1,\"x\"\n",
        "a,b\n\"\",\"\"\"\"\n",
        "a,b\r1,\"x\"\r\"y\",2\r",
    ] {
        run(good, &CsvOptions::default()).unwrap();
    }
}

#[test]
fn stray_quotes_are_refused_where_they_are() {
    // (input, line, offset of the offending byte)
    for (bad, line, offset) in [
        ("a,b,c\na,\"b\"c,d\n", 2, 11),       // text after a closing quote
        ("a\n\"d\"e\"f\"\n", 2, 5),           // …inside what looks like one field
        ("a,b\n\"Foo\",   \"Bar\"\n", 2, 13), // spaces, then a quote: not a field start
        ("a,b,c,d\n\"1\",\"2\",\"3\" \"\n", 2, 19),
        ("a,b\n1,x\"y\n", 2, 7), // a quote inside an unquoted field
        ("a,b\r\n1,2\r\n3,x\"\r\n", 3, 13),
        ("a,b\r1,2\r3,x\"\r", 3, 11), // CR-only line ends
        ("x\"y,b\n1,2\n", 1, 1),      // in the header
    ] {
        let e = run(bad, &CsvOptions::default()).unwrap_err();
        assert_eq!(e.kind, Kind::CsvStrayQuote, "{bad:?}: {}", e.message);
        assert_eq!((e.line, e.offset), (Some(line), Some(offset)), "{bad:?}");
    }
    // The same inputs load as today when the dataset asks for lenient quotes.
    let lenient = CsvOptions {
        strict_quotes: false,
        ..CsvOptions::default()
    };
    let c = run("a,b,c\na,\"b\"c,d\n", &lenient).unwrap();
    assert_eq!(c.rows[0].1[1].as_deref(), Some("bc"));
    // Another quote character: double quotes are plain text then.
    let single = CsvOptions {
        quote: b'\'',
        ..CsvOptions::default()
    };
    let c = run("a,b\n'x,y',say \"hi\"\n", &single).unwrap();
    assert_eq!(c.rows[0].1[1].as_deref(), Some("say \"hi\""));
}

#[test]
fn blank_lines_between_records_are_noted_not_trailing_ones() {
    #[derive(Default)]
    struct Notes(Collect, Vec<String>);
    impl RowOut for Notes {
        fn columns(&mut self, n: &[String]) -> Result<(), Stop> {
            self.0.columns(n)
        }
        fn row(&mut self, l: u64, t: &str, s: &[Option<(usize, usize)>]) -> Result<(), Stop> {
            self.0.row(l, t, s)
        }
        fn note(&mut self, n: String) {
            self.1.push(n);
        }
    }
    let parse_notes = |input: &str| {
        let mut n = Notes::default();
        assert!(parse(input.as_bytes(), &CsvOptions::default(), &mut n).is_ok());
        (n.0.rows.iter().map(|r| r.0).collect::<Vec<_>>(), n.1)
    };
    let (lines, notes) = parse_notes("a,b\n1,2\n\n3,4\r\n\r\n\r\n5,6\n\n\n");
    assert_eq!(lines, [2, 4, 7]);
    assert_eq!(notes, ["3 blank lines skipped (lines 3, 5, 6)"]);
    let (_, notes) = parse_notes("a,b\n1,2\n3,\"x\ny\"\n4,5\n\n");
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn lines_count_lone_cr_line_ends() {
    let c = run("a,b\r1,2\r3,4\r", &CsvOptions::default()).unwrap();
    let lines: Vec<u64> = c.rows.iter().map(|r| r.0).collect();
    assert_eq!(lines, [2, 3]);
    let e = run("a,b\r1,2\r3\r", &CsvOptions::default()).unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::CsvRaggedRow, Some(3)));
}

#[test]
fn records_longer_than_the_limit_are_refused_unread() {
    let opt = CsvOptions {
        max_record: 1000,
        ..CsvOptions::default()
    };
    let long = format!("a,b\n1,2\n3,{}\n5,6\n", "x".repeat(5000));
    let e = run(&long, &opt).unwrap_err();
    assert_eq!(
        (e.kind, e.line, e.offset),
        (Kind::CsvLineTooLong, Some(3), Some(8))
    );
    let quoted = format!("a,b\n1,\"{}\"\n", "x\n".repeat(5000));
    assert_eq!(run(&quoted, &opt).unwrap_err().kind, Kind::CsvLineTooLong);
    let header = format!("a,{}\n1,2\n", "h".repeat(2000));
    assert_eq!(
        run(&header, &CsvOptions::default()).unwrap_err().kind,
        Kind::SchemaColumnNameTooLong
    );
}

#[test]
fn numeric_headers_are_refused_when_asked() {
    let opt = CsvOptions {
        numeric_header_check: true,
        ..CsvOptions::default()
    };
    for bad in ["2,20\n3,30\n", "1,-2.5,1e3\n", "1,50\n", " 7 \n8\n"] {
        let e = run(bad, &opt).unwrap_err();
        assert_eq!(
            (e.kind, e.line),
            (Kind::CsvNumericHeader, Some(1)),
            "{bad:?}"
        );
    }
    for good in ["id,2\n1,2\n", "2024q1,x\n1,2\n", "e,1\n1,2\n", ".,1\n1,2\n"] {
        run(good, &opt).unwrap();
    }
    run("2,20\n3,30\n", &CsvOptions::default()).unwrap();
}

#[test]
fn headerless_files_use_configured_names() {
    let opt = CsvOptions {
        header: false,
        names: vec!["x".into(), "y".into()],
        ..CsvOptions::default()
    };
    let c = run("1,2\n3,4\n", &opt).unwrap();
    assert_eq!(c.cols, ["x", "y"]);
    assert_eq!(c.rows.len(), 2);
    let semi = CsvOptions {
        header: false,
        delimiter: b';',
        ..CsvOptions::default()
    };
    let c = run("1;2\n", &semi).unwrap();
    assert_eq!(c.cols, ["column_1", "column_2"]);
    assert_eq!(c.rows.len(), 1);
}
