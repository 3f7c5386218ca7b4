//! Formats, data-driven: every folder under `tests/data/formats/` is one case, dropped as its own
//! dataset. `expected.json` gives the columns and rows (`_line` first) that must be stored, or
//! the `error_kind` (and `line`/`offset`) a bad file must be quarantined with.

use crate::harness::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

#[test]
fn every_format_case_is_stored_as_expected() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats");
    let s = Spool::new();
    let mut cases = Vec::new();
    for e in fs::read_dir(&cases_dir).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected: Value =
            serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
        for f in fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let fname = f.file_name().unwrap().to_string_lossy().into_owned();
            if fname.starts_with("input") {
                s.drop_file(&format!("{name}/{fname}"), &fs::read(&f).unwrap());
            }
        }
        cases.push((name, expected));
    }
    assert!(cases.len() >= 15);
    s.ferry(&["run"]);
    let files = s.files();
    for (name, exp) in cases {
        let rows: Vec<&Value> = files
            .iter()
            .filter(|f| f["dataset"] == name.as_str())
            .collect();
        assert_eq!(rows.len(), 1, "{name}: one ledger row");
        let f = rows[0];
        if let Some(kind) = exp.get("error_kind") {
            assert_eq!(f["state"], "quarantined", "{name}");
            assert_eq!(f["error_kind"], *kind, "{name}: {}", f["error_message"]);
            if let Some(l) = exp.get("line") {
                assert_eq!(f["error_line"], *l, "{name}");
            }
            if let Some(o) = exp.get("offset") {
                assert_eq!(f["error_offset"], *o, "{name}");
            }
            let tables = s.count(&format!(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{name}'"
            ));
            assert_eq!(tables, 0, "{name}: nothing of a bad file is stored");
            continue;
        }
        assert_eq!(f["state"], "ingested", "{name}: {}", f["error_message"]);
        let want_cols: Vec<String> = exp["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut all = vec!["_id".to_string(), "_file_id".into(), "_line".into()];
        all.extend(want_cols.iter().cloned());
        assert_eq!(s.columns(&name), all, "{name}: columns");
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
        assert_eq!(s.rows(&name), want_rows, "{name}: rows");
        assert_eq!(
            f["records"],
            want_rows.len(),
            "{name}: records in the ledger"
        );
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
