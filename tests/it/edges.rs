//! Trust at the edges: ferry never changes a value, a column or a record count without a visible
//! reason. Each test is named after what once broke, and covers its class with several shapes.

use crate::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// dataset → table, from the ledger's registry.
fn registry(s: &Spool) -> BTreeMap<String, String> {
    s.query("SELECT name, table_name FROM datasets")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
}

/// The datasets of the files a table's records came from.
fn datasets_in_table(s: &Spool, table: &str) -> BTreeSet<String> {
    s.query(&format!(
        "SELECT DISTINCT f.dataset FROM \"{table}\" t JOIN files f ON f.id = t._file_id"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

/// One column of a table, in record order.
fn column(s: &Spool, table: &str, col: &str) -> Vec<Option<String>> {
    s.query(&format!("SELECT \"{col}\" FROM \"{table}\" ORDER BY _id"))
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

/// The table column a file column (name, occurrence) of a dataset landed in.
fn column_of(s: &Spool, dataset: &str, source: &str, occurrence: u32) -> String {
    s.query(&format!(
        "SELECT column_name FROM dataset_columns WHERE dataset = '{dataset}' \
         AND source = '{source}' AND occurrence = {occurrence}"
    ))
    .pop()
    .and_then(|mut r| r.remove(0))
    .unwrap_or_else(|| panic!("no column for {dataset}/{source}#{occurrence}"))
}

#[test]
fn two_datasets_never_share_a_table() {
    let s = Spool::new();
    let long = "d".repeat(100);
    let long2 = format!("{long}x");
    let datasets = [
        "Orders",
        "orders",
        "ORDERS",
        "files",
        "FILES",
        "files_data",
        "sqlite_stat1",
        "Ferry_log",
        long.as_str(),
        long2.as_str(),
    ];
    for d in &datasets {
        s.drop_file(
            &format!("{d}/a.csv"),
            format!("id,src\n1,{d}\n2,{d}\n").as_bytes(),
        );
    }
    s.ferry_ok(&["run"], 0);

    let reg = registry(&s);
    assert_eq!(reg.len(), datasets.len(), "{reg:?}");
    let lower: BTreeSet<String> = reg.values().map(|t| t.to_lowercase()).collect();
    assert_eq!(
        lower.len(),
        datasets.len(),
        "tables differ without case: {reg:?}"
    );
    for d in &datasets {
        let table = &reg[*d];
        assert!(table.len() <= 63, "{table}");
        // Each table holds exactly its dataset's records, and nothing else.
        assert_eq!(
            datasets_in_table(&s, table),
            BTreeSet::from([d.to_string()]),
            "{d} → {table}"
        );
        assert_eq!(column(&s, table, "src"), vec![Some(d.to_string()); 2]);
    }
    // Whichever of the clashing names came first keeps its name; the others get a suffix that
    // depends on their own name only.
    let plain = ["Orders", "orders", "ORDERS"]
        .iter()
        .filter(|d| reg[**d] == **d)
        .count();
    assert_eq!(plain, 1, "{reg:?}");
    for d in ["Orders", "orders", "ORDERS", "FILES", "files_data"] {
        let t = &reg[d];
        assert!(t == d || t.starts_with(&format!("{d}_")), "{d} → {t}");
    }
    assert!(reg["files"].starts_with("files_data"), "{reg:?}");
    assert_eq!(reg["sqlite_stat1"], "data_sqlite_stat1");
    assert_eq!(reg["Ferry_log"], "data_Ferry_log");

    // Every command uses the registry: status, export, config check.
    let status = s.json(&["status", "--json"]);
    for d in status["datasets"].as_array().unwrap() {
        assert_eq!(d["table"], reg[d["name"].as_str().unwrap()].as_str());
    }
    let out = s.scratch("out");
    let summary = s.json(&["export", "orders", "--to", out.to_str().unwrap(), "--json"]);
    assert_eq!(summary["rows"], 2);
    let batch = summary["batches"][0]["file"].as_str().unwrap();
    let text = fs::read_to_string(out.join(batch)).unwrap();
    assert_eq!(text, "id,src\r\n1,orders\r\n2,orders\r\n");

    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"orders\"\nmatch = \"orders/**\"\n\n\
         [[dataset]]\nname = \"Files\"\nmatch = \"Files/**\"\n",
    )
    .unwrap();
    let check = s.json(&["config", "check", "--json"]);
    let tables: BTreeMap<String, (String, bool)> = check["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                (
                    d["table"].as_str().unwrap().to_string(),
                    d["table_exists"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(tables["orders"], (reg["orders"].clone(), true));
    // Not stored yet: the table it would get, which no other dataset has.
    let (planned, exists) = &tables["Files"];
    assert!(!exists);
    assert!(!lower.contains(&planned.to_lowercase()), "{planned}");
}

#[test]
fn header_names_map_to_the_same_column_in_every_file() {
    let s = Spool::new();
    // Case, surrounding spaces and repeated names, in a different order in every file.
    s.drop_file("people/1.csv", b"id,Name,name\n1,A,a\n");
    s.ferry_ok(&["run"], 0);
    s.drop_file("people/2.csv", b"id,name,Name\n2,b,B\n");
    s.ferry_ok(&["run"], 0);
    s.drop_file("people/3.csv", b" id , name \n3,c\n");
    s.ferry_ok(&["run"], 0);
    s.drop_file("people/4.csv", b"Name,id\nD,4\n");
    s.ferry_ok(&["run"], 0);
    let name_upper = column_of(&s, "people", "Name", 1);
    let name_lower = column_of(&s, "people", "name", 1);
    assert_ne!(name_upper.to_lowercase(), name_lower.to_lowercase());
    assert_eq!(
        column(&s, "people", &name_upper),
        [Some("A".into()), Some("B".into()), None, Some("D".into())]
    );
    assert_eq!(
        column(&s, "people", &name_lower),
        [Some("a".into()), Some("b".into()), Some("c".into()), None]
    );
    assert_eq!(
        column(&s, "people", "id"),
        ["1", "2", "3", "4"].map(|v| Some(v.to_string()))
    );
    // The rename is reported, in the ledger, on each file that has the renamed column.
    assert_eq!(name_upper, "Name");
    assert_eq!(name_lower, "name_2");
    let files = s.files_by_path();
    for (f, n) in [("1.csv", 1), ("2.csv", 1), ("3.csv", 1), ("4.csv", 0)] {
        let w = files[&format!("people/{f}")]["warnings"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(w.len(), n, "{f}: {w:?}");
        if n > 0 {
            let text = w[0].as_str().unwrap();
            assert!(text.contains("\"name\" is stored as \"name_2\""), "{text}");
        }
    }

    // Repeated names: the second `a` of a header is the same column in every file.
    s.drop_file("rep/1.csv", b"a,a,b\n1,2,3\n");
    s.drop_file("rep/2.csv", b"b,a,c,a\n4,5,6,7\n");
    s.ferry_ok(&["run"], 0);
    let first_a = column_of(&s, "rep", "a", 1);
    let second_a = column_of(&s, "rep", "a", 2);
    let mut firsts = column(&s, "rep", &first_a);
    let mut seconds = column(&s, "rep", &second_a);
    firsts.sort();
    seconds.sort();
    assert_eq!(firsts, [Some("1".into()), Some("5".into())]);
    assert_eq!(seconds, [Some("2".into()), Some("7".into())]);

    // JSON keys that differ in case are two columns too, whatever order they come in.
    s.drop_file(
        "j/1.ndjson",
        b"{\"id\":1,\"Code\":\"X\"}\n{\"id\":2,\"code\":\"y\"}\n",
    );
    s.drop_file("j/2.json", b"[{\"code\":\"z\",\"Code\":\"Z\",\"id\":3}]");
    s.ferry_ok(&["run"], 0);
    let upper = column_of(&s, "j", "Code", 1);
    let mut vals = column(&s, "j", &upper);
    vals.sort();
    assert_eq!(vals, [None, Some("X".into()), Some("Z".into())]);
}

#[test]
fn json_numbers_and_nested_values_are_stored_as_sent() {
    let s = Spool::new();
    let numbers = [
        "123456789012345678901234567890",
        "3.141592653589793238",
        "1E2",
        "-0",
        "1e-400",
        "0.10",
        "-1.5E+308",
        "12345678901234567890",
    ];
    let mut body = String::from("[");
    for (i, n) in numbers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"n\":{n},\"nested\":{{\"b\": 0.10, \"a\" :[1, {n}]}},\"t\":true}}"
        ));
    }
    body.push(']');
    s.drop_file("nums/a.json", body.as_bytes());
    s.drop_file(
        "nums/b.ndjson",
        numbers
            .iter()
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    s.ferry_ok(&["run"], 0);
    let stored: Vec<String> = s
        .query("SELECT n FROM nums ORDER BY _id")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let mut want: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
    want.extend(want.clone());
    let mut got = stored.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "numbers are stored as their source text");
    // Nested values byte for byte; the column is TEXT, never a number SQLite could rewrite.
    let nested =
        s.query("SELECT nested, typeof(n) FROM nums WHERE nested IS NOT NULL ORDER BY _id");
    for (row, n) in nested.iter().zip(numbers) {
        assert_eq!(
            row[0].as_deref().unwrap(),
            format!("{{\"b\": 0.10, \"a\" :[1, {n}]}}")
        );
        assert_eq!(row[1].as_deref(), Some("text"));
    }

    // Typed columns convert exactly, or reject.
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"typed\"\nmax_bad_records = 100\ncolumns = [\n  \
         { name = \"i\", type = \"int\" },\n  { name = \"d\", type = \"decimal\" },\n  \
         { name = \"f\", type = \"float\" },\n]\n",
    )
    .unwrap();
    s.drop_file(
        "typed/a.ndjson",
        b"{\"i\":1,\"d\":1E2,\"f\":1.5}\n\
          {\"i\":1E2,\"d\":1,\"f\":1}\n\
          {\"i\":99999999999999999999,\"d\":1,\"f\":1}\n\
          {\"i\":1.0,\"d\":1,\"f\":1}\n\
          {\"i\":2,\"d\":123456789012345678901234567890.5,\"f\":1e-400}\n\
          {\"i\":3,\"d\":-2.50E+1,\"f\":-0}\n",
    );
    s.ferry_ok(&["run"], 0);
    assert_eq!(
        s.rows("typed"),
        [
            [
                Some("1".into()),
                Some("1".into()),
                Some("100".into()),
                Some("1.5".into())
            ],
            // -0 and 0 are the same float; SQLite stores integral reals as integers.
            [
                Some("6".into()),
                Some("3".into()),
                Some("-25".into()),
                Some("0".into())
            ],
        ]
    );
    let f = &s.files_by_path()["typed/a.ndjson"];
    assert_eq!(f["records"], 2);
    assert_eq!(f["rejected"], 4);
    let rejected: Vec<i64> = s
        .query("SELECT line FROM rejects ORDER BY line")
        .into_iter()
        .map(|r| r[0].clone().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rejected, [2, 3, 4, 5]);
}

#[test]
fn stray_quotes_quarantine_the_file_unless_the_dataset_is_lenient() {
    let s = Spool::new();
    // (file, content, line, offset of the stray quote)
    let cases = [
        ("after_close.csv", "a,b,c\na,\"b\"c,d\n", 2, 11),
        ("inside_unquoted.csv", "a,b\n1,x\"y\n", 2, 7),
        ("spaces_then_quote.csv", "a,b\n\"Foo\",   \"Bar\"\n", 2, 13),
        ("trailing_quote.csv", "a,b,c\n\"1\",\"2\",\"3\" \"\n", 2, 17),
        ("crlf.csv", "a,b\r\n1,2\r\n3,x\"y\r\n", 3, 13),
        ("cr_only.csv", "a,b\r1,2\r\"3\"x,4\r", 3, 11),
        ("semicolons.csv", "a;b\n1;2\n3;4\"\n", 3, 11),
    ];
    for (name, body, _, _) in &cases {
        s.drop_file(&format!("strict/{name}"), body.as_bytes());
        s.drop_file(&format!("lenient/{name}"), body.as_bytes());
    }
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"lenient\"\nmatch = \"lenient/**\"\nquotes = \"lenient\"\n",
    )
    .unwrap();
    s.ferry_ok(&["run"], 3);
    let files = s.files_by_path();
    for (name, _, line, offset) in &cases {
        let f = &files[&format!("strict/{name}")];
        assert_eq!(f["state"], "quarantined", "{name}");
        assert_eq!(f["error_kind"], "csv.stray_quote", "{name}");
        assert_eq!(f["error_line"], *line, "{name}");
        assert_eq!(f["error_offset"], *offset, "{name}");
        assert_eq!(
            files[&format!("lenient/{name}")]["state"],
            "ingested",
            "{name}"
        );
    }
    assert_eq!(
        s.count("SELECT count(*) FROM sqlite_master WHERE name = 'strict'"),
        0
    );
    // Lenient reads what csv-core reads, as before.
    assert!(s
        .rows("lenient")
        .iter()
        .any(|r| r.contains(&Some("bc".to_string()))));
}

#[test]
fn duplicate_json_keys_and_nul_characters_are_refused() {
    let s = Spool::new();
    s.drop_file("j/dup.json", b"[{\"a\":1},{\"a\":1,\"b\":2,\"a\":3}]");
    s.drop_file("j/dup-spaces.ndjson", b"{\"a\":1}\n{\"a\":1,\" a\":2}\n");
    s.drop_file("j/nul.ndjson", b"{\"a\":\"x\"}\n{\"a\":\"x\\u0000y\"}\n");
    s.drop_file("c/nul.csv", b"a,b\n1,2\n3,x\x00y\n");
    s.drop_file("latin/nul.csv", b"a,b\n1,\xe9\x00\n");
    s.drop_file("ok/nul.csv", b"a,b\n1,x\x00y\n");
    s.drop_file("ok/nul.ndjson", b"{\"a\":\"x\\u0000y\"}\n");
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"ok\"\nmatch = \"ok/**\"\nallow_nul = true\n\n\
         [[dataset]]\nname = \"latin\"\nmatch = \"latin/**\"\nencoding = \"latin1\"\n",
    )
    .unwrap();
    s.ferry_ok(&["run"], 3);
    let files = s.files_by_path();
    let kind = |p: &str| files[p]["error_kind"].as_str().map(String::from);
    let line = |p: &str| files[p]["error_line"].as_i64();
    assert_eq!(kind("j/dup.json").as_deref(), Some("json.duplicate_key"));
    assert_eq!(
        kind("j/dup-spaces.ndjson").as_deref(),
        Some("json.duplicate_key")
    );
    assert_eq!(line("j/dup-spaces.ndjson"), Some(2));
    assert_eq!(kind("j/nul.ndjson").as_deref(), Some("encoding.nul"));
    assert_eq!(line("j/nul.ndjson"), Some(2));
    assert_eq!(kind("c/nul.csv").as_deref(), Some("encoding.nul"));
    assert_eq!(
        (
            line("c/nul.csv"),
            files["c/nul.csv"]["error_offset"].as_i64()
        ),
        (Some(3), Some(11))
    );
    assert_eq!(kind("latin/nul.csv").as_deref(), Some("encoding.nul"));
    // Allowed: stored with the NUL, nothing cut.
    assert_eq!(files["ok/nul.csv"]["state"], "ingested");
    assert_eq!(files["ok/nul.ndjson"]["state"], "ingested");
    let lens = s.query("SELECT length(CAST(coalesce(b, a) AS BLOB)) FROM ok ORDER BY _id");
    assert_eq!(lens, [[Some("3".to_string())], [Some("3".to_string())]]);
}

#[test]
fn empty_record_keys_are_bad_records_not_duplicates() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"strict\"\nmatch = \"strict/**\"\nkey = [\"id\"]\n\n\
         [[dataset]]\nname = \"loose\"\nmatch = \"loose/**\"\nkey = [\"id\", \"part\"]\n\
         max_bad_records = 10\n\n\
         [[dataset]]\nname = \"typed\"\nmatch = \"typed/**\"\nkey = [\"id\"]\nmax_bad_records = 10\n\
         columns = [{ name = \"id\", type = \"int\" }, { name = \"v\" }]\n",
    )
    .unwrap();
    s.drop_file("strict/a.csv", b"id,v\n,a\n,b\n,c\n1,d\n");
    s.drop_file(
        "loose/a.csv",
        b"id,part,v\n1,x,a\n,x,b\n1,,c\n2,y,d\n1,x,e\n",
    );
    s.drop_file(
        "loose/b.ndjson",
        b"{\"id\":\"\",\"part\":\"x\"}\n{\"id\":\"3\",\"part\":\"z\"}\n",
    );
    s.drop_file("typed/a.csv", b"id,v\n,a\n  ,b\n5,c\n");
    s.ferry_ok(&["run"], 3);
    let files = s.files_by_path();
    assert_eq!(files["strict/a.csv"]["error_kind"], "record.empty_key");
    assert_eq!(files["strict/a.csv"]["error_line"], 2);
    let f = &files["loose/a.csv"];
    assert_eq!(
        (f["records"].as_i64(), f["rejected"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        f["duplicate_records"], 1,
        "only the real duplicate (1,x) is a duplicate"
    );
    assert_eq!(files["loose/b.ndjson"]["rejected"], 1);
    assert_eq!(files["typed/a.csv"]["records"], 1);
    assert_eq!(files["typed/a.csv"]["rejected"], 2);
    let kinds = s.query("SELECT DISTINCT kind FROM rejects");
    assert_eq!(kinds, [[Some("record.empty_key".to_string())]]);
    let mut v = column(&s, "loose", "v");
    v.sort();
    assert_eq!(v, [None, Some("a".into()), Some("d".into())]);
}

#[test]
fn the_same_bytes_sent_for_two_datasets_load_into_both() {
    let s = Spool::new();
    let body = b"id,v\n1,a\n2,b\n";
    s.drop_file("feed_a/x.csv", body);
    s.drop_file("feed_b/x.csv", body);
    s.drop_file("feed_b/y.csv", body);
    s.ferry_ok(&["run"], 0);
    let files = s.files_by_path();
    assert_eq!(files["feed_a/x.csv"]["state"], "ingested");
    assert_eq!(files["feed_a/x.csv"]["records"], 2);
    let b: Vec<&str> = ["feed_b/x.csv", "feed_b/y.csv"]
        .iter()
        .map(|p| files[*p]["state"].as_str().unwrap())
        .collect();
    assert!(b.contains(&"ingested") && b.contains(&"duplicate"), "{b:?}");
    assert_eq!(s.count("SELECT count(*) FROM feed_a"), 2);
    assert_eq!(s.count("SELECT count(*) FROM feed_b"), 2);
    let dup = files.values().find(|f| f["state"] == "duplicate").unwrap();
    let orig = files
        .values()
        .find(|f| f["id"] == dup["duplicate_of"])
        .unwrap();
    assert_eq!(
        orig["dataset"], "feed_b",
        "a duplicate points into its own dataset"
    );
    let _: &Value = orig;
}
