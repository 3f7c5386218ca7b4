//! `ferry export --format parquet`: every value read back by pyarrow and by DuckDB equals what
//! the store holds (compared with the CSV export of the same records, which writes the stored
//! canonical text on both stores), in the declared types; values Parquet cannot hold exactly
//! refuse the batch; kill -9 during Parquet exports.

use crate::export::manifest;
use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Reads Parquet files with pyarrow and DuckDB (`parquet_read.py`): file → reader → what it saw.
pub fn read_parquet(files: &[PathBuf]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/parquet_read.py");
    let out = Command::new("python3")
        .arg(script)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Parquet readers failed (./test --deps installs pyarrow and duckdb): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The data files of a target folder ending in `ext`, by name.
fn data_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v = crate::export::batch_files(dir);
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v
}

/// Every row of every Parquet batch in `dir`, as pyarrow read it, after checking DuckDB read the
/// same, each file's SHA-256 against its manifest, and its done marker.
fn parquet_rows(dir: &Path) -> (Vec<String>, Vec<String>, Vec<Vec<Option<String>>>) {
    let files = data_files(dir, ".parquet");
    assert!(!files.is_empty(), "no Parquet batches in {}", dir.display());
    let seen = read_parquet(&files);
    let mut rows = Vec::new();
    let mut names = Vec::new();
    let mut types = Vec::new();
    for f in &files {
        let m = manifest(f);
        let bytes = fs::read(f).unwrap();
        assert_eq!(m["sha256"], sha256_hex(&bytes));
        assert_eq!(m["format"], "parquet");
        let mut done = f.as_os_str().to_owned();
        done.push(".done");
        assert!(Path::new(&done).exists());
        let r = &seen[f.to_str().unwrap()];
        assert_eq!(r["pyarrow"]["rows"], r["duckdb"]["rows"], "{}", f.display());
        assert_eq!(r["pyarrow"]["names"], r["duckdb"]["names"]);
        assert_eq!(
            m["rows"].as_u64().unwrap() as usize,
            r["pyarrow"]["rows"].as_array().unwrap().len()
        );
        let schema: Vec<String> = m["parquet_schema"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(json!(schema), r["pyarrow"]["names"]);
        if names.is_empty() {
            // The first batch's columns and types (pyarrow's | DuckDB's).
            names = serde_json::from_value(r["pyarrow"]["names"].clone()).unwrap();
            let arrow: Vec<String> = serde_json::from_value(r["pyarrow"]["types"].clone()).unwrap();
            let duck: Vec<String> = serde_json::from_value(r["duckdb"]["types"].clone()).unwrap();
            types = arrow
                .into_iter()
                .zip(duck)
                .map(|(a, d)| format!("{a} | {d}"))
                .collect();
        }
        rows.extend(
            serde_json::from_value::<Vec<Vec<Option<String>>>>(r["pyarrow"]["rows"].clone())
                .unwrap(),
        );
    }
    (names, types, rows)
}

/// A CSV batch folder's records (header dropped), in order.
fn csv_rows(dir: &Path) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for f in data_files(dir, ".csv") {
        let mut r = csv::Reader::from_path(&f).unwrap();
        all.extend(
            r.records()
                .map(|rec| rec.unwrap().iter().map(str::to_string).collect::<Vec<_>>()),
        );
    }
    all
}

const CONFIG: &str = r#"
[[dataset]]
name = "p"
match = "p/**"
on_missing_column = "ignore"
columns = [
  { name = "id", type = "int", required = true },
  { name = "amount", type = "decimal", scale = 2 },
  { name = "ratio", type = "decimal" },
  { name = "f", type = "float" },
  { name = "ok", type = "bool" },
  { name = "day", type = "date" },
  { name = "at", type = "datetime" },
  { name = "note", type = "string" },
]
"#;

/// Values at the edges of each type; empty = null.
const ROWS: &str = "id,amount,ratio,f,ok,day,at,note\n\
1,12.50,0.125,0.1,true,2026-03-01,2026-03-01T10:00:00.123456Z,plain\n\
2,-0.01,12.5,-2.5e-300,false,1969-12-31,1969-12-31T23:59:59.999999Z,\"Zürich ☃, \"\"quoted\"\"\"\n\
3,123456789012345678901234567890123456.78,-7,1e300,,0001-01-01,0001-01-01T00:00:00Z,\"two\nlines\"\n\
4,,,,,,,\n\
-9223372036854775808,0.00,0.000001,-0.0,true,9999-12-31,9999-12-31T23:59:59.999Z,\" spaced \"\n\
9223372036854775807,1.00,99999999999999999999.99,4.9e-324,1,2000-02-29,2000-02-29T12:00:00Z,🦀\n";

/// The value of a store column as the CSV export has it, compared with a Parquet reader's text:
/// floats by value, unscaled decimals by value (a batch's scale pads them with zeros).
fn same(kind: &str, csv: &str, parquet: Option<&str>) -> bool {
    match (csv, parquet) {
        ("", None) => true,
        (_, None) => false,
        (c, Some(p)) => match kind {
            "float" => c.parse::<f64>().unwrap().to_bits() == p.parse::<f64>().unwrap().to_bits(),
            "ratio" => {
                let trim = |s: &str| {
                    if s.contains('.') {
                        s.trim_end_matches('0').trim_end_matches('.').to_string()
                    } else {
                        s.to_string()
                    }
                };
                trim(c) == trim(p)
            }
            _ => c == p,
        },
    }
}

fn export(s: &Spool, to: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["export", "p", "--to", to.to_str().unwrap()];
    a.extend_from_slice(args);
    s.ferry(&a)
}

both_stores! {
    fn parquet_batches_read_back_by_pyarrow_and_duckdb_equal_the_store_in_declared_types() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        s.drop_file("p/a.csv", ROWS.as_bytes());
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM p"), 6);
        let pq = s.scratch("pq");
        let out = export(&s, &pq, &["--format", "parquet", "--max-rows", "4"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let csv = s.scratch("csv");
        assert_eq!(export(&s, &csv, &["--max-rows", "4"]).status.code(), Some(0));

        let (names, types, rows) = parquet_rows(&pq);
        assert_eq!(
            names,
            ["_id", "_file_id", "_line", "id", "amount", "ratio", "f", "ok", "day", "at", "note"]
        );
        assert_eq!(
            types,
            [
                "int64 | BIGINT",
                "int64 | BIGINT",
                "int64 | BIGINT",
                "int64 | BIGINT",
                "decimal128(38, 2) | DECIMAL(38,2)",
                // Undeclared scale: the batch's greatest (this is the first batch's).
                "decimal128(38, 3) | DECIMAL(38,3)",
                "double | DOUBLE",
                "bool | BOOLEAN",
                "date32[day] | DATE",
                "timestamp[us, tz=UTC] | TIMESTAMP WITH TIME ZONE",
                "string | VARCHAR",
            ]
        );
        let want = csv_rows(&csv);
        assert_eq!(rows.len(), want.len());
        let kinds = ["id", "amount", "ratio", "float", "ok", "day", "at", "note"];
        for (p, c) in rows.iter().zip(&want) {
            for (k, kind) in kinds.iter().enumerate() {
                let pv = p[3 + k].as_deref();
                let cv = c[k].as_str();
                assert!(same(kind, cv, pv), "column {kind}: store {cv:?}, Parquet {pv:?}");
            }
        }
        // ferry's own columns are the store's.
        let ids = s.query("SELECT _id, _file_id, _line FROM p ORDER BY _id");
        let got: Vec<Vec<Option<String>>> = rows.iter().map(|r| r[..3].to_vec()).collect();
        assert_eq!(got, ids);
        // The second batch's unscaled decimals take its own greatest scale, exactly.
        let second = data_files(&pq, ".parquet")[1].clone();
        let m = manifest(&second);
        assert_eq!(m["compression"], "zstd");
        assert_eq!(m["parquet_schema"][5]["parquet_type"], "DECIMAL(38, 6)");
        assert_eq!(m["parquet_schema"][0]["nullable"], false);

        // An undeclared dataset's columns are text, kept as they came (leading zeros too).
        s.drop_file("raw/x.csv", b"code,n
007,1.50
,x
");
        s.ferry_ok(&["run"], 0);
        let raw = s.scratch("raw");
        let out = s.ferry(&["export", "raw", "--to", raw.to_str().unwrap(), "--format", "parquet"]);
        assert_eq!(out.status.code(), Some(0));
        let (names, types, rows) = parquet_rows(&raw);
        assert_eq!(names[3..], ["code", "n"]);
        assert_eq!(types[3..], ["string | VARCHAR", "string | VARCHAR"]);
        let vals: Vec<Vec<Option<String>>> = rows.iter().map(|r| r[3..].to_vec()).collect();
        assert_eq!(vals, s.query("SELECT code, n FROM raw ORDER BY _id"));
    }
}

both_stores! {
    fn a_value_parquet_cannot_hold_refuses_the_batch_and_nothing_is_published() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        // 41 digits: more than a 16-byte decimal holds.
        s.drop_file(
            "p/a.csv",
            b"id,ratio\n1,1.5\n2,12345678901234567890123456789012345678901\n",
        );
        s.ferry_ok(&["run"], 0);
        let pq = s.scratch("pq");
        let out = export(&s, &pq, &["--format", "parquet"]);
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("38 digits"), "{err}");
        assert!(tree(&pq).is_empty(), "{:?}", tree(&pq));
        // The same records go out as CSV, to another target, whole.
        let csv = s.scratch("csv");
        assert_eq!(export(&s, &csv, &[]).status.code(), Some(0));
        assert_eq!(csv_rows(&csv)[1][2], "12345678901234567890123456789012345678901");
        // Flags of the other formats are refused, not ignored.
        assert_eq!(export(&s, &pq, &["--format", "parquet", "--gzip"]).status.code(), Some(2));
        assert_eq!(export(&s, &csv, &["--compression", "snappy"]).status.code(), Some(2));
    }
}

/// SQLite keeps nanoseconds (PostgreSQL refuses them when loading).
#[test]
fn a_datetime_with_nanoseconds_is_written_in_nanoseconds_not_rounded() {
    {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        s.drop_file(
            "p/a.csv",
            b"id,at\n1,2026-01-01T00:00:00.123456789Z\n2,2026-01-01T00:00:00.5Z\n3,\n",
        );
        s.ferry_ok(&["run"], 0);
        let pq = s.scratch("pq");
        let out = export(&s, &pq, &["--format", "parquet", "--compression", "snappy"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = data_files(&pq, ".parquet");
        let seen = read_parquet(&f);
        let r = &seen[f[0].to_str().unwrap()]["pyarrow"];
        assert_eq!(r["types"][9], "timestamp[ns, tz=UTC]");
        let at: Vec<Value> = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[9].clone())
            .collect();
        assert_eq!(
            at,
            [
                json!("2026-01-01T00:00:00.123456789Z"),
                json!("2026-01-01T00:00:00.500Z"),
                Value::Null
            ]
        );
        assert_eq!(manifest(&f[0])["compression"], "snappy");
        assert_eq!(
            manifest(&f[0])["parquet_schema"][9]["parquet_type"],
            "TIMESTAMP(NANOS, UTC)"
        );
    }
}

both_stores! {
    fn kill_9_during_parquet_exports_then_every_record_is_in_exactly_one_batch() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        for f in 0..6 {
            let mut body = String::from("id,amount,at,note\n");
            for i in 0..400 {
                let n = f * 400 + i;
                body.push_str(&format!("{n},{n}.25,2026-01-01T00:00:{:02}Z,row {n}\n", i % 60));
            }
            s.drop_file(&format!("p/f{f}.csv"), body.as_bytes());
        }
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let out_s = out.to_str().unwrap().to_string();
        let args = ["export", "p", "--to", &out_s, "--format", "parquet", "--max-rows", "97"];
        crate::export::kill_exports_then_finish(&s, &args, &out, 30, 80);
        let (_, _, rows) = parquet_rows(&out);
        let got: Vec<Option<String>> = rows.iter().map(|r| r[0].clone()).collect();
        let want: Vec<Option<String>> =
            s.query("SELECT _id FROM p ORDER BY _id").into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(got.len(), 2400);
        assert_eq!(got, want, "every record once, in id order");
        let notes: Vec<String> = rows.iter().map(|r| r[10].clone().unwrap()).collect();
        let want_notes: Vec<String> = s
            .query("SELECT note FROM p ORDER BY _id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert_eq!(notes, want_notes);
    }
}
