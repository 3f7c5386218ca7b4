//! Formats, data-driven: every folder under `tests/data/formats/` is one case, dropped as its own
//! dataset. `expected.json` gives the columns and rows (`_line` first) that must be stored, or
//! the `error_kind` (and `line`/`offset`) a bad file must be quarantined with.

use crate::harness::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

/// Runs every case of a data-driven table (`tests/data/<surface>/<case>/`): each case's
/// `input*` files are dropped as dataset `<case>` (its options from `dataset.toml`, when there
/// is one), and `expected.json` says what must come of them: the `columns` and `rows` (`_line`
/// first) stored, or the `error_kind` (and `line`/`offset`) the file is quarantined with; and
/// `warnings`, texts each of which some warning on the file's ledger row must contain.
pub fn check_cases(surface: &str) {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(surface);
    let s = Spool::new();
    let mut cases = Vec::new();
    let mut config = String::new();
    let mut dirs: Vec<_> = fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected: Value =
            serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
        if let Ok(opts) = fs::read_to_string(dir.join("dataset.toml")) {
            config.push_str(&format!(
                "[[dataset]]\nname = \"{name}\"\nmatch = \"{name}/**\"\n{opts}\n"
            ));
        }
        for f in fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let fname = f.file_name().unwrap().to_string_lossy().into_owned();
            if fname.starts_with("input") {
                s.drop_file(&format!("{name}/{fname}"), &fs::read(&f).unwrap());
            }
        }
        cases.push((name, expected));
    }
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    s.ferry(&["run"]);
    let files = s.files();
    for (name, exp) in cases {
        let rows: Vec<&Value> = files
            .iter()
            .filter(|f| f["dataset"] == name.as_str())
            .collect();
        assert_eq!(rows.len(), 1, "{surface}/{name}: one ledger row");
        let f = rows[0];
        for w in exp
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let w = w.as_str().unwrap();
            assert!(
                f["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|have| have.as_str().unwrap().contains(w)),
                "{surface}/{name}: no warning with {w:?} in {}",
                f["warnings"]
            );
        }
        if let Some(kind) = exp.get("error_kind") {
            assert_eq!(f["state"], "quarantined", "{surface}/{name}");
            assert_eq!(
                f["error_kind"], *kind,
                "{surface}/{name}: {}",
                f["error_message"]
            );
            if let Some(l) = exp.get("line") {
                assert_eq!(f["error_line"], *l, "{surface}/{name}");
            }
            if let Some(o) = exp.get("offset") {
                assert_eq!(f["error_offset"], *o, "{surface}/{name}");
            }
            assert!(
                !s.table_exists(&name),
                "{surface}/{name}: nothing of a bad file is stored"
            );
            continue;
        }
        assert_eq!(
            f["state"], "ingested",
            "{surface}/{name}: {}",
            f["error_message"]
        );
        let want_cols: Vec<String> = exp["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut all = vec!["_id".to_string(), "_file_id".into(), "_line".into()];
        all.extend(want_cols.iter().cloned());
        let mut have = s.columns(&name);
        have.retain(|c| c != "_key");
        assert_eq!(have, all, "{surface}/{name}: columns");
        let want_rows: Vec<Vec<Option<String>>> = exp["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect()
            })
            .collect();
        let mut got = s.rows(&name);
        // `rows` leaves out `_id` and `_file_id`; a keyed table's `_key` hash is not data.
        let cols: Vec<String> = s
            .columns(&name)
            .into_iter()
            .filter(|c| c != "_id" && c != "_file_id")
            .collect();
        if let Some(at) = cols.iter().position(|c| c == "_key") {
            got.iter_mut().for_each(|r| {
                r.remove(at);
            });
        }
        assert_eq!(got, want_rows, "{surface}/{name}: rows");
        assert_eq!(
            f["records"],
            want_rows.len(),
            "{surface}/{name}: records in the ledger"
        );
        if let Some(n) = exp.get("rejected") {
            assert_eq!(f["rejected"], *n, "{surface}/{name}: rejected records");
        }
    }
}

#[test]
fn every_format_case_is_stored_as_expected() {
    check_cases("formats");
}

both_stores! {
    fn every_encoding_case_is_decoded_exactly_or_refused() {
        check_cases("encodings");
    }
}

both_stores! {
    fn every_workbook_case_keeps_its_values_or_says_why() {
        check_cases("workbooks");
    }
}

#[test]
fn compact_json_loads_the_same_typed_values_as_objects() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"t\"\nmatch = \"**\"\n\
         columns = [{ name = \"id\", type = \"int\" }, { name = \"amount\", type = \"decimal\" }, \
         { name = \"day\", type = \"date\" }, { name = \"note\" }]\n",
    )
    .unwrap();
    s.drop_file(
        "t/objects.ndjson",
        br#"{"id":1,"amount":12.50,"day":"2026-11-01","note":{"k":[1]}}
{"id":2,"amount":"0.1","day":"2026-11-02","note":null}
"#,
    );
    let rows = |s: &Spool| {
        let mut r: Vec<_> = s
            .rows("t")
            .into_iter()
            .map(|mut r| {
                r.remove(0);
                r
            })
            .collect();
        r.sort();
        r
    };
    s.ferry_ok(&["run"], 0);
    let expected = rows(&s);
    assert_eq!(expected.len(), 2);
    for (name, body) in [
        (
            "t/array.json",
            &br#"[["id","amount","day","note"],[1,12.50,"2026-11-01",{"k":[1]}],[2,"0.1","2026-11-02",null]]"#[..],
        ),
        (
            "t/lines.json",
            &b"[\"id\",\"amount\",\"day\",\"note\"]\n[1,12.50,\"2026-11-01\",{\"k\":[1]}]\n[2,\"0.1\",\"2026-11-02\",null]\n"[..],
        ),
        (
            "t/lines.ndjson",
            &b"[\"id\",\"amount\",\"day\",\"note\"]\n[1,12.50,\"2026-11-01\",{\"k\":[1]}]\n[2,\"0.1\",\"2026-11-02\",null]\n"[..],
        ),
    ] {
        let t = Spool::new();
        fs::copy(s.root.join("ferry.toml"), t.root.join("ferry.toml")).unwrap();
        t.drop_file(name, body);
        t.ferry_ok(&["run"], 0);
        assert_eq!(rows(&t), expected, "{name}");
    }
}

/// A spool holding `fixtures/formats` (XML, fixed-width and Excel samples) and their contracts.
fn format_fixtures() -> Spool {
    let s = Spool::new();
    copy_tree(&fixtures().join("formats/incoming"), &s.incoming());
    fs::copy(
        fixtures().join("formats/ferry.toml"),
        s.root.join("ferry.toml"),
    )
    .unwrap();
    s.ferry_ok(&["run"], 3);
    s
}

both_stores! {
    fn xml_fixed_width_and_excel_fixtures_load_as_their_contracts_say() {
        let s = format_fixtures();
        let exp = crate::run::expected_at(&fixtures().join("formats/expected.json"));
        crate::run::assert_ledger_matches(&s, &exp);
        let text = |sql: &str| s.query(sql);
        let v = |x: &str| Some(x.to_string());
        // Fixed-width: characters counted (ü, ë, Å are one each), trimmed, typed.
        assert_eq!(
            text("SELECT account, name, CAST(amount AS TEXT), CAST(booked AS TEXT), currency \
                  FROM payments ORDER BY _line"),
            [
                [v("DE00000001"), v("Müller & Söhne"), v("1250.50"), v("2026-11-02"), v("EUR")],
                [v("DE00000002"), v("Zoë Ångström"), v("0.99"), v("2026-11-02"), v("EUR")],
                [v("GB00000003"), v("O'Brien Ltd"), v("10000.00"), v("2026-11-03"), v("GBP")],
                [v("CH00000004"), v("Crème Brûlée AG"), v("0.07"), v("2026-11-03"), v("CHF")],
                [v("US00000005"), None, v("1234567.89"), v("2026-11-04"), v("USD")],
            ]
        );
        // XML: attributes by `from = "@id"`, a prefixed child by its local name, CDATA, entities.
        assert_eq!(
            text("SELECT CAST(id AS TEXT), consignee, CAST(weight_kg AS TEXT), \
                  CAST(shipped AS TEXT), carrier, carrier_name, remarks \
                  FROM shipments WHERE id < 1003 ORDER BY id"),
            [
                [v("1001"), v("Müller & Söhne"), v("12.5"), v("2026-11-04"), v("DHL"),
                 v("DHL Express"), v("fragile <glass>")],
                [v("1002"), v("O'Brien Ltd"), v("0.75"), v("2026-11-05"), v("UPS"), v("UPS"), None],
            ]
        );
        // Excel: the "Ledger" sheet under its title rows; date cells as dates, the formula's
        // cached value, 0.1 exactly; each record's line is its row in the sheet.
        assert_eq!(
            text("SELECT _line, CAST(entry AS TEXT), CAST(booked AS TEXT), account, \
                  CAST(amount AS TEXT) FROM ledger ORDER BY entry"),
            [
                [v("4"), v("1"), v("2026-11-02"), v("4000 Sales"), v("1250.50")],
                [v("5"), v("2"), v("2026-11-02"), v("4000 Sales"), v("0.10")],
                [v("7"), v("3"), v("2026-11-03"), v("6000 Travel"), v("1250.40")],
                [v("8"), v("4"), v("2026-11-04"), v("6100 Meals"), v("-12.75")],
            ]
        );
        // The empty row 6 is passed over, and said so.
        let ledger = &s.files_by_path()["ledger/ledger-2026-11.xlsx"];
        assert!(ledger["warnings"].to_string().contains("empty row"), "{ledger}");
    }
}

#[test]
fn xml_fixed_width_and_excel_survive_an_export_round_trip() {
    let s = format_fixtures();
    let out = s.scratch("out");
    let t = Spool::new();
    // The same datasets as CSV: same column names and types, no format options.
    fs::write(
        t.root.join("ferry.toml"),
        r#"
[[dataset]]
name = "payments"
match = "payments/**"
columns = [{ name = "account" }, { name = "name" }, { name = "amount", type = "decimal", scale = 2 },
  { name = "booked", type = "date" }, { name = "currency" }]
[[dataset]]
name = "shipments"
match = "shipments/**"
columns = [{ name = "id", type = "int" }, { name = "consignee" }, { name = "weight_kg", type = "float" },
  { name = "shipped", type = "date" }, { name = "carrier" }, { name = "carrier_name" }, { name = "remarks" }]
[[dataset]]
name = "ledger"
match = "ledger/**"
columns = [{ name = "entry", type = "int" }, { name = "booked", type = "date" }, { name = "account" },
  { name = "amount", type = "decimal", scale = 2 }, { name = "approved", type = "bool" }]
"#,
    )
    .unwrap();
    for d in ["payments", "shipments", "ledger"] {
        let to = out.join(d);
        s.ferry_ok(&["export", d, "--to", to.to_str().unwrap()], 0);
        for f in fs::read_dir(&to).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "csv") {
                let name = f.file_name().unwrap().to_str().unwrap().to_string();
                t.drop_file(&format!("{d}/{name}"), &fs::read(&f).unwrap());
            }
        }
    }
    t.ferry_ok(&["run"], 0);
    for d in ["payments", "shipments", "ledger"] {
        let values = |sp: &Spool| {
            let cols: Vec<String> = sp
                .columns(d)
                .into_iter()
                .filter(|c| !c.starts_with('_'))
                .map(|c| format!("\"{c}\""))
                .collect();
            sp.query(&format!(
                "SELECT {} FROM \"{d}\" ORDER BY _id",
                cols.join(", ")
            ))
        };
        let first = values(&s);
        assert!(!first.is_empty(), "{d}");
        assert_eq!(
            values(&t),
            first,
            "{d}: the same typed values after the round trip"
        );
    }
}

/// Writes `total` bytes of gzip made by `piece(i)` repeated, between `head` and `tail`.
fn gzip_file(
    path: &std::path::Path,
    head: &str,
    piece: impl Fn(u64) -> String,
    tail: &str,
    total: u64,
) {
    use std::io::Write;
    let f = fs::File::create(path).unwrap();
    let mut gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
    gz.write_all(head.as_bytes()).unwrap();
    let (mut n, mut i) = (head.len() as u64, 0);
    while n < total {
        let p = piece(i);
        gz.write_all(p.as_bytes()).unwrap();
        n += p.len() as u64;
        i += 1;
    }
    gz.write_all(tail.as_bytes()).unwrap();
    gz.finish().unwrap().flush().unwrap();
}

#[test]
fn a_gigabyte_of_xml_or_fixed_width_streams_in_flat_memory() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"wide\"\nmatch = \"wide/**\"\nformat = \"fixed\"\n\
         columns = [{ name = \"id\", start = 1, width = 8 }, { name = \"body\", start = 9, width = 65528 }]\n\
         [[dataset]]\nname = \"feed\"\nmatch = \"feed/**\"\n",
    )
    .unwrap();
    const GIB: u64 = 1 << 30;
    let filler = "x".repeat(65_000);
    fs::create_dir_all(s.incoming().join("feed")).unwrap();
    fs::create_dir_all(s.incoming().join("wide")).unwrap();
    gzip_file(
        &s.incoming().join("feed/big.xml.gz"),
        "<feed>\n",
        |i| format!("<r id=\"{i}\"><body>{filler}</body></r>\n"),
        "</feed>\n",
        GIB,
    );
    gzip_file(
        &s.incoming().join("wide/big.txt.gz"),
        "",
        |i| format!("{i:08}{filler}{}\n", " ".repeat(528)),
        "",
        GIB,
    );
    let mut cmd = s.cmd();
    cmd.arg("run");
    let (code, rss) = run_measuring_rss(cmd);
    assert_eq!(code, Some(0));
    eprintln!("a gigabyte each of XML and fixed-width: peak RSS {rss:.0} MiB");
    assert!(rss < 150.0, "peak RSS {rss:.0} MiB");
    let files = s.files_by_path();
    for path in ["feed/big.xml.gz", "wide/big.txt.gz"] {
        // A record is about 65 KB: a gigabyte holds at least 16,384 of them.
        let n = files[path]["records"].as_u64().unwrap();
        assert!((16_384..16_600).contains(&n), "{path}: {n} records");
    }
    // Every record whole: the widest value is the filler, and the ids run without a gap.
    assert_eq!(
        s.count("SELECT count(*) FROM wide WHERE length(body) = 65000"),
        files["wide/big.txt.gz"]["records"].as_i64().unwrap()
    );
    assert_eq!(
        s.count("SELECT max(CAST(\"@id\" AS INTEGER)) + 1 FROM feed"),
        files["feed/big.xml.gz"]["records"].as_i64().unwrap()
    );
}
