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
    let parse_notes = |input: &str| {
        let mut n = Collect::default();
        assert!(parse(input.as_bytes(), &CsvOptions::default(), &mut n).is_ok());
        (n.rows.iter().map(|r| r.0).collect::<Vec<_>>(), n.notes)
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

/// Hands out its bytes at most `piece` at a time, as the layers under the parser may.
struct Pieces<'a> {
    rest: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.len().min(self.piece).min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// A record as read: the line and byte it starts at, and its fields.
type Read3 = (u64, u64, Vec<Vec<u8>>);

/// Every record of `input` as the record reader reads it (handed `piece` bytes at a time); or
/// the reject.
fn records_of(input: &[u8], strict: bool, piece: usize) -> Result<Vec<Read3>, Reject> {
    let opt = CsvOptions {
        strict_quotes: strict,
        ..CsvOptions::default()
    };
    let mut recs = Records::new(Pieces { rest: input, piece }, &opt);
    let mut all = Vec::new();
    loop {
        match recs.next() {
            Ok(true) => all.push((
                recs.rec_line,
                recs.rec_byte,
                recs.fields().map(<[u8]>::to_vec).collect(),
            )),
            Ok(false) => return Ok(all),
            Err(Stop::Reject(r)) => return Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }
}

/// The records csv-core reads from `input` (the reference for lenient mode).
fn csv_core_records(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut rdr = csv_core::Reader::new();
    let (mut out, mut ends) = (vec![0u8; input.len() + 1], vec![0usize; input.len() + 2]);
    let (mut all, mut at, mut nout, mut nends) = (Vec::new(), 0, 0, 0);
    loop {
        let (res, nin, o, e) = rdr.read_record(&input[at..], &mut out[nout..], &mut ends[nends..]);
        (at, nout, nends) = (at + nin, nout + o, nends + e);
        match res {
            csv_core::ReadRecordResult::Record => {
                let mut start = 0;
                all.push(
                    ends[..nends]
                        .iter()
                        .map(|&e| {
                            let f = out[start..e].to_vec();
                            start = e;
                            f
                        })
                        .collect(),
                );
                (nout, nends) = (0, 0);
            }
            csv_core::ReadRecordResult::End => return all,
            csv_core::ReadRecordResult::InputEmpty => {}
            other => panic!("reference buffers too small: {other:?}"),
        }
    }
}

/// Inputs made of the bytes that matter to CSV, with a little text between them.
fn csv_soup(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(vec![b'a', b'b', b' ', b',', b'"', b'\n', b'\r']),
        0..max,
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// Lenient mode reads what csv-core reads, except that input ending inside quotes is
    /// refused; every record starts on the line its byte offset says.
    #[test]
    fn lenient_records_are_csv_cores_and_lines_are_exact(
        input in csv_soup(48),
        piece in 1usize..9,
    ) {
        match records_of(&input, false, piece) {
            Ok(recs) => {
                let fields: Vec<_> = recs.iter().map(|r| r.2.clone()).collect();
                proptest::prop_assert_eq!(fields, csv_core_records(&input));
                for (line, byte, _) in &recs {
                    let mut l = crate::format::text::Lines::default();
                    l.feed(&input[..*byte as usize]);
                    proptest::prop_assert_eq!(*line, l.line());
                }
            }
            Err(r) => proptest::prop_assert_eq!(r.kind, Kind::CsvUnterminatedQuote),
        }
    }

    /// Strict mode reads the same records where it accepts the input, and refuses only at a
    /// quote RFC 4180 does not allow (or input ending inside quotes), at that very byte.
    #[test]
    fn strict_mode_only_adds_refusals(input in csv_soup(48), piece in 1usize..9) {
        match records_of(&input, true, piece) {
            Ok(recs) => proptest::prop_assert_eq!(Ok(recs), records_of(&input, false, 64)),
            Err(r) if r.kind == Kind::CsvStrayQuote => {
                let at = r.offset.expect("a stray quote has its byte") as usize;
                proptest::prop_assert!(
                    input[at] == b'"' || input[at - 1] == b'"',
                    "refused at byte {} of {:?}", at, String::from_utf8_lossy(&input)
                );
                let mut l = crate::format::text::Lines::default();
                l.feed(&input[..at]);
                proptest::prop_assert_eq!(r.line, Some(l.line()));
            }
            Err(r) => proptest::prop_assert_eq!(r.kind, Kind::CsvUnterminatedQuote),
        }
    }
}

#[test]
fn records_split_across_buffer_refills_read_whole() {
    // Fields, quotes, doubled quotes and CRLFs straddling the reader's 64 KiB buffer.
    let mut input = String::from("a,b\r\n");
    let mut want = Vec::new();
    for i in 0..9000 {
        let v = format!("v{i}\"\"x\r\ny");
        input.push_str(&format!("{i},\"{v}\"\r\n"));
        want.push(v.replace("\"\"", "\""));
    }
    let c = run(&input, &CsvOptions::default()).unwrap();
    let got: Vec<String> = c.rows.iter().map(|r| r.1[1].clone().unwrap()).collect();
    assert_eq!(got, want);
    let lines: Vec<u64> = c.rows.iter().map(|r| r.0).collect();
    assert_eq!(lines, (0..9000).map(|i| 2 + 2 * i).collect::<Vec<u64>>());
}
