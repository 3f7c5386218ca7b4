//! Unit tests of the JSON and NDJSON parsers.
use super::*;
use crate::format::Collect;

fn json(input: &str, pointer: &str) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    let p = pointer_segments(pointer).unwrap();
    match parse_json(input.as_bytes(), &p, &JsonOptions::default(), &mut c) {
        Ok(_) => Ok(c),
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

fn ndjson(input: &str) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    match parse_ndjson(input.as_bytes(), &JsonOptions::default(), &mut c) {
        Ok(_) => Ok(c),
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn arrays_of_records() {
    let c = json(
        r#"[{"id":1,"name":"a","ok":true,"x":1.5},{"id":2,"tags":["t"],"n":null,"o":{"k":1}}]"#,
        "",
    )
    .unwrap();
    assert_eq!(c.cols, ["id", "name", "ok", "x", "tags", "n", "o"]);
    assert_eq!(c.rows[0], (1, vec![s("1"), s("a"), s("true"), s("1.5")]));
    assert_eq!(
        c.rows[1],
        (
            2,
            vec![s("2"), None, None, None, s("[\"t\"]"), None, s("{\"k\":1}")]
        )
    );
    assert_eq!(json("[]", "").unwrap().rows.len(), 0);
}

#[test]
fn streams_of_records_and_pointers() {
    let c = json("{\"a\":1}\n{\"a\":2}\n", "").unwrap();
    assert_eq!(c.rows.len(), 2);
    let c = json(
        r#"{"meta":{"n":2},"data":{"items":[{"a":1},{"a":2}]}}"#,
        "/data/items",
    )
    .unwrap();
    assert_eq!(c.rows.len(), 2);
    let e = json(r#"{"data":{}}"#, "/data/items").unwrap_err();
    assert_eq!(e.kind, Kind::JsonNotRecords);
}

#[test]
fn not_records_and_syntax_errors() {
    for bad in ["42", "\"x\"", "[1,2]", "[{\"a\":1}, 3]", "null"] {
        assert_eq!(
            json(bad, "").unwrap_err().kind,
            Kind::JsonNotRecords,
            "{bad}"
        );
    }
    for bad in ["[{\"a\":1}", "[{\"a\":1},]", "{\"a\" 1}", "[{}] x"] {
        assert_eq!(json(bad, "").unwrap_err().kind, Kind::JsonSyntax, "{bad}");
    }
    assert_eq!(json("  \n", "").unwrap_err().kind, Kind::Empty);
}

#[test]
fn ndjson_lines() {
    let c = ndjson("{\"a\":1}\n\n{\"b\":\"x\"}\r\n").unwrap();
    assert_eq!(c.rows, vec![(1, vec![s("1")]), (3, vec![None, s("x")])]);
    let e = ndjson("{\"a\":1}\n{\"a\":\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::JsonSyntax, Some(2)));
    let e = ndjson("{\"a\":1}\n[1]\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::JsonNotRecords, Some(2)));
    assert_eq!(ndjson("\n\n").unwrap_err().kind, Kind::Empty);
}

#[test]
fn numbers_and_nested_values_keep_their_source_text() {
    let c = json(
        r#"[{"a":123456789012345678901234567890,"b":3.141592653589793238,"c":1E2,"d":-0,
            "e":{"z": 0.10, "a":[1 ,2]},"f":"\u00e9\n","g":""}]"#,
        "",
    )
    .unwrap();
    assert_eq!(
        c.rows[0].1,
        vec![
            s("123456789012345678901234567890"),
            s("3.141592653589793238"),
            s("1E2"),
            s("-0"),
            s(r#"{"z": 0.10, "a":[1 ,2]}"#),
            s("é\n"),
            s("")
        ]
    );
}

#[test]
fn keys_named_twice_and_nuls_are_refused() {
    for bad in [r#"[{"a":1,"a":2}]"#, r#"{"a":1," a ":2}"#] {
        let e = json(bad, "").unwrap_err();
        assert_eq!(e.kind, Kind::JsonDuplicateKey, "{bad}");
        assert_eq!(e.line, Some(1));
    }
    let e = ndjson("{\"a\":1}\n{\"b\":1,\"b\":2}\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::JsonDuplicateKey, Some(2)));
    assert!(e.message.starts_with("line 2:"), "{}", e.message);
    let e = ndjson("{\"a\":1}\n\n{\"a\":\"x\\u0000y\"}\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::EncodingNul, Some(3)));
    let e = json(r#"{"foo\u0000bar": 42}"#, "").unwrap_err();
    assert_eq!(e.kind, Kind::EncodingNul);
    // The same key in different records is one column, not a duplicate.
    assert_eq!(ndjson("{\"a\":1}\n{\"a\":2}\n").unwrap().rows.len(), 2);
}

#[test]
fn messages_name_the_line_the_error_is_recorded_at() {
    let e = ndjson("{\"a\":1}\n{\"a\":\"\\ud800\"}\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::JsonSyntax, Some(2)));
    assert!(e.message.contains("line 2"), "{}", e.message);
    assert!(!e.message.contains("line 1"), "{}", e.message);
}

#[test]
fn records_longer_than_the_limit_are_refused_unread() {
    let opt = JsonOptions {
        max_record: 100,
        ..JsonOptions::default()
    };
    let long = format!("[{{\"a\":\"{}\"}}]", "x".repeat(1 << 20));
    let mut c = Collect::default();
    match parse_json(long.as_bytes(), &[], &opt, &mut c) {
        Err(Stop::Reject(r)) => assert_eq!(r.kind, Kind::JsonRecordTooLong),
        other => panic!("{other:?}"),
    }
    let mut c = Collect::default();
    let nd = format!("{{\"a\":1}}\n{{\"a\":\"{}\"}}\n", "x".repeat(1000));
    match parse_ndjson(nd.as_bytes(), &opt, &mut c) {
        Err(Stop::Reject(r)) => {
            assert_eq!((r.kind, r.line), (Kind::JsonRecordTooLong, Some(2)))
        }
        other => panic!("{other:?}"),
    }
    // Many small records are fine: the limit is per record.
    let many = format!("[{}]", vec!["{\"a\":\"0123456789\"}"; 10_000].join(","));
    let mut c = Collect::default();
    assert!(parse_json(many.as_bytes(), &[], &opt, &mut c).is_ok());
}

#[test]
fn compact_rows_under_a_header_row() {
    // A JSON array of arrays, and the same as NDJSON (JSONCompactEachRowWithNames).
    let doc = r#"[["id","name","tags"],[1,"a",["x"]],[2,null,{"k":1}]]"#;
    let lines = "[\"id\",\"name\",\"tags\"]\n[1,\"a\",[\"x\"]]\n\n[2,null,{\"k\":1}]\n";
    for c in [json(doc, "").unwrap(), ndjson(lines).unwrap()] {
        assert_eq!(c.cols, ["id", "name", "tags"]);
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows[0].1, vec![s("1"), s("a"), s("[\"x\"]")]);
        assert_eq!(c.rows[1].1, vec![s("2"), None, s("{\"k\":1}")]);
    }
    // Under a pointer too; a header alone is a file with columns and no records.
    let c = json(r#"{"data":[["a"],[1]]}"#, "/data").unwrap();
    assert_eq!((c.cols.len(), c.rows.len()), (1, 1));
    assert_eq!(json(r#"[["a","b"]]"#, "").unwrap().rows.len(), 0);
}

#[test]
fn compact_rows_that_do_not_fit_their_header_are_refused() {
    let kind = |doc: &str| json(doc, "").unwrap_err().kind;
    assert_eq!(kind(r#"[["a","b"],[1]]"#), Kind::JsonRowLength);
    assert_eq!(kind(r#"[["a","b"],[1,2,3]]"#), Kind::JsonRowLength);
    assert_eq!(kind(r#"[["a","a"],[1,2]]"#), Kind::JsonDuplicateKey);
    assert_eq!(
        kind(r#"[[1,2],[3,4]]"#),
        Kind::JsonNotRecords,
        "no header row"
    );
    assert_eq!(
        kind(r#"[["a"],{"a":1}]"#),
        Kind::JsonNotRecords,
        "arrays, then an object"
    );
    assert_eq!(
        kind(r#"[{"a":1},["a"]]"#),
        Kind::JsonNotRecords,
        "objects, then an array"
    );
    assert_eq!(kind(r#"[[],[1]]"#), Kind::JsonNotRecords);
    let e = ndjson("[\"a\",\"b\"]\n[1,2]\n[3]\n").unwrap_err();
    assert_eq!((e.kind, e.line), (Kind::JsonRowLength, Some(3)));
    // `records = "objects"` refuses arrays; `"arrays"` refuses objects.
    let only = |records: Records, doc: &str| {
        let opt = JsonOptions {
            records,
            ..JsonOptions::default()
        };
        parse_json(doc.as_bytes(), &[], &opt, &mut Collect::default()).map(|_| ())
    };
    assert!(only(Records::Objects, r#"[["a"],[1]]"#).is_err());
    assert!(only(Records::Arrays, r#"[{"a":1}]"#).is_err());
    assert!(only(Records::Arrays, r#"[["a"],[1]]"#).is_ok());
}

#[test]
fn one_array_of_strings_is_not_records_unless_the_dataset_says_arrays() {
    assert_eq!(
        ndjson("[\"A\",\"B\"]").unwrap_err().kind,
        Kind::JsonNotRecords
    );
    assert_eq!(
        ndjson("[\"A\",\"B\"]\n\n").unwrap_err().kind,
        Kind::JsonNotRecords
    );
    let mut c = Collect::default();
    let opt = JsonOptions {
        records: Records::Arrays,
        ..JsonOptions::default()
    };
    parse_ndjson(&b"[\"A\",\"B\"]\n"[..], &opt, &mut c).unwrap();
    assert_eq!((c.cols.len(), c.rows.len()), (2, 0));
}

#[test]
fn blank_lines_between_ndjson_records_are_noted_trailing_ones_are_the_end() {
    let c = ndjson("{\"a\":1}\n\n \r\n{\"a\":2}\n\n\n").unwrap();
    assert_eq!(c.notes, ["2 blank lines skipped (lines 2, 3)"]);
    let many = format!("{{\"a\":1}}\n{}{{\"a\":2}}\n", "\n".repeat(10));
    let c = ndjson(&many).unwrap();
    assert_eq!(c.notes, ["10 blank lines skipped (lines 2, 3, 4, 5, 6, …)"]);
}
