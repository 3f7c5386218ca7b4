//! Typed datasets: declared columns, conversions, bad-record thresholds, drift, record keys,
//! replay and retries. The sample drops are `fixtures/typed/incoming`, their contracts
//! `fixtures/typed/ferry.toml`.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;

/// A spool holding the typed fixtures in `incoming/` and their config as `<root>/ferry.toml`.
fn typed_spool() -> Spool {
    let s = Spool::new();
    copy_tree(&fixtures().join("typed/incoming"), &s.incoming());
    fs::copy(
        fixtures().join("typed/ferry.toml"),
        s.root.join("ferry.toml"),
    )
    .unwrap();
    s
}

fn by_path(s: &Spool) -> BTreeMap<String, Value> {
    s.files_by_path()
}

fn query(s: &Spool, sql: &str) -> Vec<Vec<Option<String>>> {
    s.query(sql)
}

fn one(s: &Spool, sql: &str) -> String {
    query(s, sql)[0][0].clone().unwrap_or_default()
}

both_stores! {
    fn a_typed_feed_is_stored_in_typed_columns() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        // Declared types become the store's column types.
        let types: BTreeMap<String, String> = if s.is_postgres() {
            query(
                &s,
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_name = 'vehicles' AND column_name NOT LIKE '\\_%'",
            )
        } else {
            query(
                &s,
                "SELECT name, type FROM pragma_table_info('vehicles') WHERE name NOT LIKE '\\_%' ESCAPE '\\'",
            )
        }
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
        let want: [(&str, &str, &str); 4] = [
            ("year", "INTEGER", "bigint"),
            ("in_service", "INTEGER", "boolean"),
            ("price", "TEXT", "numeric"),
            ("registered", "TEXT", "date"),
        ];
        for (col, sqlite, pg) in want {
            assert_eq!(types[col], if s.is_postgres() { pg } else { sqlite }, "{col}");
        }
        // Values are converted by the stages: typed storage, canonical text, dates from two formats.
        let (kind, flag) = if s.is_postgres() {
            ("pg_typeof(v.year)::text", "v.in_service::int")
        } else {
            ("typeof(v.year)", "v.in_service")
        };
        let src =
            fs::read_to_string(fixtures().join("typed/incoming/vehicles/vehicles-2026-11-01.csv"))
                .unwrap();
        let line2: Vec<&str> = src.lines().nth(1).unwrap().split(',').collect();
        let line3: Vec<&str> = src.lines().nth(2).unwrap().split(',').collect();
        // By key: the same records come again in a later drop, and whichever of the two files
        // is stored first keeps them (files are taken in parallel, in no promised order).
        let rows = query(
            &s,
            &format!(
                "SELECT v.vin, v.year, {kind}, v.price, v.registered, {flag} \
                 FROM vehicles v WHERE v.vin IN ('{}', '{}') ORDER BY v.vin",
                line2[0], line3[0]
            ),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0].as_deref(), Some(line2[0]));
        assert_eq!(rows[0][1].as_deref(), Some(line2[3]));
        assert_eq!(
            rows[0][2].as_deref(),
            Some(if s.is_postgres() { "bigint" } else { "integer" })
        );
        assert_eq!(rows[0][3].as_deref(), Some(line2[4]));
        // Line 2 has an ISO date, line 3 day.month.year: both stored as ISO 8601.
        assert_eq!(rows[0][4].as_deref(), Some(line2[5]));
        let (d, m, y) = {
            let p: Vec<&str> = line3[5].split('.').collect();
            (p[0], p[1], p[2])
        };
        assert_eq!(rows[1][4], Some(format!("{y}-{m}-{d}")));
        assert_eq!(rows[0][5].as_deref(), Some("1"));
        // Every stored price is canonical with two decimals.
        let not_canonical = if s.is_postgres() {
            "SELECT count(*) FROM vehicles WHERE price::text !~ '[0-9]\\.[0-9][0-9]$'"
        } else {
            "SELECT count(*) FROM vehicles WHERE price NOT GLOB '*[0-9].[0-9][0-9]'"
        };
        assert_eq!(one(&s, not_canonical), "0");
        // The gzip drop went through the same contract.
        let files = by_path(&s);
        let gz = &files["vehicles/vehicles-2026-11-02.csv.gz"];
        assert_eq!(gz["state"], "ingested");
        assert_eq!(gz["records"], 20);
    }
}

both_stores! {
    fn bad_records_within_the_threshold_are_set_aside_and_above_it_the_file_is_quarantined() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        let files = by_path(&s);
        // 3 bad of 100 under max_bad_records = "5%": 97 stored, 3 rejected, reported.
        let within = &files["vehicles/vehicles-2026-11-03.csv"];
        assert_eq!(within["state"], "ingested");
        assert_eq!(within["records"], 97);
        assert_eq!(within["rejected"], 3);
        let report = s.root.join(within["rejects_at"].as_str().unwrap());
        assert_eq!(
            report,
            s.root
                .join("quarantine/vehicles/vehicles-2026-11-03.csv.rejects.ndjson")
        );
        let lines: Vec<Value> = fs::read_to_string(&report)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(u64, &str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["line"].as_u64().unwrap(),
                    l["field"].as_str().unwrap(),
                    l["value"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (11, "year", "20x012"),
                (51, "price", "12.345"),
                (91, "registered", "31.02.2026")
            ]
        );
        assert!(lines
            .iter()
            .all(|l| l["reason"].as_str().unwrap().len() > 10));
        // None of the rejected lines is stored; every other line is.
        let id = within["id"].as_i64().unwrap();
        assert_eq!(
            s.count(&format!(
                "SELECT count(*) FROM vehicles WHERE _file_id = {id} AND _line IN (11, 51, 91)"
            )),
            0
        );
        // 6 bad of 100: the whole file is quarantined, nothing of it stored, and the reason file
        // lists the first rejects.
        let above = &files["vehicles/vehicles-2026-11-04.csv"];
        assert_eq!(above["state"], "quarantined");
        assert_eq!(above["error_kind"], "too_many_bad_records");
        assert_eq!(above["error_line"], 7);
        assert_eq!(above["error_field"], "year");
        let id = above["id"].as_i64().unwrap();
        assert_eq!(
            s.count(&format!(
                "SELECT count(*) FROM vehicles WHERE _file_id = {id}"
            )),
            0
        );
        let reason: Value = serde_json::from_slice(
            &fs::read(
                s.root
                    .join("quarantine/vehicles/vehicles-2026-11-04.csv.reason.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let lines: Vec<u64> = reason["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [7, 22, 37, 52, 67, 82]);
    }
}

both_stores! {
    fn record_keys_skip_records_already_stored() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        // 20 + 20 + 97 + 5 new of the resend: the resend's other 5 share keys with 11-01.
        assert_eq!(s.count("SELECT count(*) FROM vehicles"), 142);
        assert_eq!(
            s.count("SELECT count(*) FROM (SELECT vin FROM vehicles GROUP BY vin HAVING count(*) > 1) AS d"),
            0
        );
        assert_eq!(
            s.count("SELECT sum(duplicate_records) FROM files WHERE dataset = 'vehicles'"),
            5
        );
        // A later file repeating keys (within itself too) stores each new key once.
        let head = "vin,make,model,year,price,registered,in_service\n";
        let old = one(&s, "SELECT vin FROM vehicles ORDER BY _id LIMIT 1");
        let body = format!(
            "{head}{old},Kia,Niro,2020,1.00,2026-01-01,yes\n\
             WVW99999999999999,Kia,Niro,2020,1.00,2026-01-01,yes\n\
             wvw99999999999999 ,Kia,Niro,2020,1.00,2026-01-01,yes\n"
        );
        s.drop_file("vehicles/late.csv", body.as_bytes());
        s.ferry_ok(&["run"], 0);
        let late = &by_path(&s)["vehicles/late.csv"];
        assert_eq!(late["records"], 1);
        assert_eq!(late["duplicate_records"], 2);
        assert_eq!(s.count("SELECT count(*) FROM vehicles"), 143);
    }
}

both_stores! {
    fn declared_encodings_and_byte_order_marks() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        // Latin-1, declared: transcoded, not rejected.
        assert_eq!(
            query(
                &s,
                "SELECT consignee, city, weight_kg FROM acme_shipments ORDER BY shipment_id"
            ),
            [
                [
                    Some("Müller & Söhne".into()),
                    Some("Århus".into()),
                    Some("12.5".into())
                ],
                [
                    Some("Café Noël".into()),
                    Some("Québec".into()),
                    Some("3.25".into())
                ],
                [
                    Some("José Peña".into()),
                    Some("Málaga".into()),
                    Some("100".into())
                ],
            ]
        );
        // Semicolons sniffed, the BOM stripped (the first column is `sku`, found by name),
        // decimal commas read exactly.
        assert_eq!(
            query(
                &s,
                "SELECT sku, description, price, valid_from FROM nordic_prices ORDER BY sku"
            ),
            [
                [
                    Some("A-100".into()),
                    Some("Kaffe; mørkbrent".into()),
                    Some("49.90".into()),
                    Some("2026-11-01".into())
                ],
                [
                    Some("A-200".into()),
                    Some("Knekkebrød".into()),
                    Some("32.50".into()),
                    Some("2026-11-01".into())
                ],
                [
                    Some("A-300".into()),
                    Some("Brunost".into()),
                    Some("89.00".into()),
                    Some("2026-11-15".into())
                ],
            ]
        );
    }
}

both_stores! {
    fn drift_is_handled_per_policy() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        let files = by_path(&s);
        // fail: both drifts quarantine the file, naming the column.
        let extra = &files["drift-fail/extra-column.csv"];
        assert_eq!(extra["error_kind"], "schema.new_column");
        assert_eq!(extra["error_field"], "colour");
        let missing = &files["drift-fail/missing-column.csv"];
        assert_eq!(missing["error_kind"], "schema.missing_column");
        assert_eq!(missing["error_field"], "name");
        assert_eq!(files["drift-fail/base.csv"]["state"], "ingested");
        // add: the new column joins the table; the missing one is stored as NULL.
        assert!(s.columns("drift_add").contains(&"colour".to_string()));
        assert_eq!(
            query(&s, "SELECT id, name, colour FROM drift_add ORDER BY id"),
            [
                [Some("1".into()), Some("add-alpha".into()), None],
                [Some("2".into()), Some("add-beta".into()), None],
                [
                    Some("3".into()),
                    Some("add-gamma".into()),
                    Some("red".into())
                ],
                [
                    Some("4".into()),
                    Some("add-delta".into()),
                    Some("blue".into())
                ],
                [Some("8".into()), None, None],
                [Some("9".into()), None, None],
            ]
        );
        // ignore: the new column's values are dropped, the table keeps its declared columns.
        assert!(!s.columns("drift_ignore").contains(&"colour".to_string()));
        assert_eq!(s.count("SELECT count(*) FROM drift_ignore"), 6);
        for f in ["base.csv", "extra-column.csv", "missing-column.csv"] {
            assert_eq!(files[&format!("drift-ignore/{f}")]["state"], "ingested");
        }
    }
}

both_stores! {
    fn untyped_datasets_follow_their_drift_policy_against_the_table() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"strict\"\non_new_column = \"fail\"\non_missing_column = \"fail\"\n\n\
             [[dataset]]\nname = \"loose\"\non_new_column = \"ignore\"\n",
        )
        .unwrap();
        s.drop_file("strict/a.csv", b"id,name\n1,a\n");
        s.drop_file("loose/a.csv", b"id,name\n1,loose-a\n");
        s.ferry_ok(&["run"], 0);
        s.drop_file("strict/b.csv", b"id,name,extra\n2,b,x\n");
        s.drop_file("strict/c.csv", b"id\n3\n");
        s.drop_file("loose/b.csv", b"id,name,extra\n2,loose-b,x\n");
        s.ferry_ok(&["run"], 3);
        let files = by_path(&s);
        assert_eq!(files["strict/b.csv"]["error_kind"], "schema.new_column");
        assert_eq!(files["strict/b.csv"]["error_field"], "extra");
        assert_eq!(files["strict/c.csv"]["error_kind"], "schema.missing_column");
        assert_eq!(files["strict/c.csv"]["error_field"], "name");
        assert_eq!(files["loose/b.csv"]["state"], "ingested");
        assert_eq!(
            s.columns("loose"),
            ["_id", "_file_id", "_line", "id", "name"]
        );
        assert_eq!(
            s.rows("loose"),
            [
                [Some("2".into()), Some("1".into()), Some("loose-a".into())],
                [Some("2".into()), Some("2".into()), Some("loose-b".into())]
            ]
        );
    }
}

both_stores! {
    fn a_file_rejected_by_its_contract_loads_after_the_config_is_fixed() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        let list = s.json(&["quarantine", "list", "--json"]);
        let bad = list
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "partners/nordic/prices-2026-12-01.csv")
            .unwrap()
            .clone();
        assert_eq!(bad["error_kind"], "record.invalid");
        assert_eq!(bad["error_field"], "valid_from");
        let id = bad["id"].as_i64().unwrap();
        let shown = s.json(&["quarantine", "show", &id.to_string(), "--json"]);
        assert_eq!(shown["rejects"].as_array().unwrap().len(), 2);
        assert_eq!(shown["rejects"][0]["value"], "2026-12-01");

        // Retrying under the same config fails the same way, as a new attempt.
        s.ferry_ok(&["quarantine", "retry", &id.to_string()], 3);
        let again = s.files().into_iter().last().unwrap();
        assert_eq!(again["retry_of"], id);
        assert_eq!(again["attempt"], 2);
        assert_eq!(again["error_kind"], "record.invalid");

        // The partner's new date format is accepted: the retry loads it.
        let cfg = fs::read_to_string(s.root.join("ferry.toml")).unwrap();
        let fixed = cfg.replace(
            "formats = [\"%d.%m.%Y\"]",
            "formats = [\"%d.%m.%Y\", \"%Y-%m-%d\"]",
        );
        assert_ne!(cfg, fixed);
        fs::write(s.root.join("ferry.toml"), fixed).unwrap();
        let again_id = again["id"].as_i64().unwrap();
        // The first attempt was retried already: only the latest can be retried.
        s.ferry_ok(&["quarantine", "retry", &id.to_string()], 2);
        s.ferry_ok(&["quarantine", "retry", &again_id.to_string()], 0);
        let last = s.files().into_iter().last().unwrap();
        assert_eq!(last["state"], "ingested");
        assert_eq!(last["retry_of"], again_id);
        assert_eq!(last["attempt"], 3);
        assert_eq!(last["records"], 2);
        // The ledger keeps the whole history; the file itself is archived, byte-identical.
        let history: Vec<i64> = s
            .files()
            .iter()
            .filter(|f| f["path"] == "partners/nordic/prices-2026-12-01.csv")
            .map(|f| f["attempt"].as_i64().unwrap())
            .collect();
        assert_eq!(history, [1, 2, 3]);
        let archived = s.root.join(last["stored_at"].as_str().unwrap());
        assert_eq!(
            sha256_hex(&fs::read(archived).unwrap()),
            last["sha256"].as_str().unwrap()
        );
        assert!(!s.root.join("quarantine/prices/prices-2026-12-01.csv").exists());
        assert_eq!(
            one(
                &s,
                "SELECT valid_from FROM nordic_prices WHERE sku = 'A-400'"
            ),
            "2026-12-01"
        );
        // Nothing left to retry for this file.
        let list = s.json(&["quarantine", "list", "--json"]);
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["path"] != "partners/nordic/prices-2026-12-01.csv"));
    }
}

both_stores! {
    fn retry_all_sends_every_quarantined_file_back() {
        let s = typed_spool();
        s.ferry_ok(&["run"], 3);
        let before = s
            .json(&["quarantine", "list", "--json"])
            .as_array()
            .unwrap()
            .len();
        assert_eq!(before, 4);
        // Same config: the same four come back to quarantine, each as attempt 2.
        s.ferry_ok(&["quarantine", "retry", "--all"], 3);
        let list = s.json(&["quarantine", "list", "--json"]);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 4);
        assert!(list
            .iter()
            .all(|f| f["attempt"] == 2 && f["retry_of"].is_i64()));
    }
}

#[test]
fn the_example_config_documents_and_loads() {
    let s = Spool::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ferry.toml");
    let out = s.json(&[
        "--config",
        example.to_str().unwrap(),
        "config",
        "check",
        "--json",
    ]);
    let datasets = out["datasets"].as_array().unwrap();
    assert!(!datasets.is_empty());
    // Every column type appears in the example, and every option of a column.
    let types: std::collections::BTreeSet<&str> = datasets
        .iter()
        .flat_map(|d| d["columns"].as_array().unwrap())
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["bool", "date", "datetime", "decimal", "float", "int", "string"]
    );
    let text = fs::read_to_string(&example).unwrap();
    for key in [
        "root",
        "incoming",
        "workers",
        "max_attempts",
        "strict_datasets",
        "settle",
        "ignore",
        "done_marker",
        "rescan",
        "poll",
        "metrics",
        "name",
        "match",
        "format",
        "delimiter",
        "quote",
        "header",
        "names",
        "json_pointer",
        "records",
        "encoding",
        "quotes",
        "max_line_bytes",
        "allow_nul",
        "key",
        "max_bad_records",
        "on_new_column",
        "on_missing_column",
        "type",
        "from",
        "required",
        "allowed",
        "trim",
        "case",
        "formats",
        "timezone",
        "scale",
        "decimal_separator",
        "thousands_separator",
        "url",
        "into",
        "after",
        "connections",
        "depth",
        "timeout",
        "identity_file",
        "identity_passphrase_env",
        "password_env",
        "known_hosts",
        "host_key",
    ] {
        assert!(
            text.lines().any(|l| l
                .trim_start()
                .trim_start_matches("# ")
                .starts_with(&format!("{key} ="))),
            "config/ferry.toml does not show `{key}`"
        );
    }
    // So is the typed fixtures' config.
    let cfg = fixtures().join("typed/ferry.toml");
    s.json(&[
        "--config",
        cfg.to_str().unwrap(),
        "config",
        "check",
        "--json",
    ]);
}

#[test]
fn invalid_configs_are_refused_with_line_and_key() {
    let s = Spool::new();
    let cases = [
        (
            "[[dataset]]\nname = \"a\"\n\n[[dataset.columns]]\nname = \"n\"\ntype = \"integer\"\n",
            "line 6",
            "unknown type",
        ),
        (
            "[[dataset]]\nname = \"a\"\nkey = [\"id\"]\ncolumns = [{ name = \"x\" }]\n",
            "line 1",
            "key",
        ),
        (
            "[[dataset]]\nname = \"a\"\nmax_bad_records = \"lots\"\n",
            "line 3",
            "max_bad_records",
        ),
        (
            "[[dataset]]\nname = \"a\"\n\n[[dataset.columns]]\nname = \"d\"\ntype = \"int\"\nformats = [\"%Y\"]\n",
            "line 4",
            "formats apply to date",
        ),
        (
            "[[dataset]]\nname = \"a\"\non_missing_column = \"add\"\n",
            "line 1",
            "on_missing_column",
        ),
    ];
    for (toml, line, what) in cases {
        let cfg = s.scratch("cfg").join("bad.toml");
        fs::write(&cfg, toml).unwrap();
        let out = s.ferry_ok(&["--config", cfg.to_str().unwrap(), "config", "check"], 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains(line), "{toml}\n→ {err}");
        assert!(err.contains(what), "{toml}\n→ {err}");
        // `run` refuses it the same way, before touching anything.
        s.ferry_ok(&["--config", cfg.to_str().unwrap(), "run"], 2);
    }
}

both_stores! {
    fn headerless_csv_takes_its_column_names_from_the_config() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"meter\"\nheader = false\ndelimiter = \"|\"\n\
             columns = [{ name = \"meter_id\", type = \"int\" }, { name = \"read_at\", type = \"datetime\", \
             formats = [\"%d/%m/%Y %H:%M\"], timezone = \"+02:00\" }, { name = \"kwh\", type = \"float\" }]\n",
        )
        .unwrap();
        s.drop_file(
            "meter/r.txt",
            b"7|22/11/2026 10:15|1.5\n8|22/11/2026 23:30|2\n",
        );
        s.ferry_ok(&["run"], 0);
        let read_at = s.datetime_text("read_at");
        assert_eq!(
            query(
                &s,
                &format!("SELECT meter_id, {read_at}, kwh FROM meter ORDER BY _id")
            ),
            [
                [
                    Some("7".into()),
                    Some("2026-11-22T08:15:00Z".into()),
                    Some("1.5".into())
                ],
                [
                    Some("8".into()),
                    Some("2026-11-22T21:30:00Z".into()),
                    Some("2".into())
                ],
            ]
        );
    }
}

both_stores! {
    fn read_failures_are_retried_with_back_off_then_quarantined() {
        // A flaky read (standing in for a network share): two failures, then it works.
        let s = Spool::new();
        s.drop_file("sales/flaky.csv", b"a,b\n1,2\n");
        let out = s
            .cmd()
            .env("FERRY_FAULT_FAIL_READS", "flaky:2")
            .args(["run"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = &by_path(&s)["sales/flaky.csv"];
        assert_eq!(f["state"], "ingested");
        assert_eq!(f["attempt"], 3);
        assert_eq!(f["records"], 1);

        // It keeps failing: quarantined as io.read after max_attempts, nothing lost.
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), "max_attempts = 3\n").unwrap();
        s.drop_file("sales/broken.csv", b"a,b\n1,2\n");
        s.drop_file("sales/fine.csv", b"a,b\n3,4\n");
        let out = s
            .cmd()
            .env("FERRY_FAULT_FAIL_READS", "broken:100")
            .args(["run"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let files = by_path(&s);
        assert_eq!(files["sales/broken.csv"]["error_kind"], "io.read");
        assert_eq!(files["sales/broken.csv"]["attempt"], 3);
        assert_eq!(files["sales/fine.csv"]["state"], "ingested");
        assert_eq!(
            fs::read(s.root.join("quarantine/sales/broken.csv")).unwrap(),
            b"a,b\n1,2\n"
        );
    }
}

use std::path::Path;

#[test]
fn numbers_written_the_european_way_load_exactly_and_bad_grouping_is_rejected() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"eu\"\nmax_bad_records = 5\ndelimiter = \";\"\n\
         columns = [\n\
           { name = \"n\", type = \"int\", thousands_separator = \".\" },\n\
           { name = \"amount\", type = \"decimal\", scale = 2, decimal_separator = \",\", thousands_separator = \".\" },\n\
           { name = \"w\", type = \"float\", decimal_separator = \",\", thousands_separator = \" \" },\n\
         ]\n",
    )
    .unwrap();
    s.drop_file(
        "eu/a.csv",
        "n;amount;w\n1.234;1.234,50;1 000,5\n7;0,5;2\n12.34;1.23,4;3\n".as_bytes(),
    );
    s.ferry_ok(&["run"], 0);
    assert_eq!(
        s.rows("eu"),
        vec![
            vec![
                Some("2".into()),
                Some("1234".into()),
                Some("1234.50".into()),
                Some("1000.5".into())
            ],
            vec![
                Some("3".into()),
                Some("7".into()),
                Some("0.50".into()),
                Some("2".into())
            ],
        ]
    );
    let f = &s.files()[0];
    assert_eq!(
        f["rejected"], 1,
        "the row with bad grouping is set aside: {f}"
    );
    // A separator that is the decimal separator too is a config error, not a guess.
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"eu\"\ncolumns = [{ name = \"a\", type = \"decimal\", thousands_separator = \".\" }]\n",
    )
    .unwrap();
    s.ferry_ok(&["config", "check"], 2);
}

both_stores! {
    /// A keyed file set aside after some of its records were stored (too many bad records at
    /// its end) takes its keys back with it: the next file in the same run stores them.
    fn keys_of_a_file_undone_halfway_are_free_for_the_next_file() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "workers = 1\n\n[[dataset]]\nname = \"cars\"\nmatch = \"cars/**\"\nkey = [\"vin\"]\n\
             max_bad_records = 10\n\n[[dataset.columns]]\nname = \"vin\"\nrequired = true\n\n\
             [[dataset.columns]]\nname = \"year\"\ntype = \"int\"\n",
        )
        .unwrap();
        let rows = |bad: usize, year: u32| {
            let mut body = String::from("vin,year\n");
            for i in 0..9000 {
                body.push_str(&format!("V{i:05},{year}\n"));
            }
            for i in 0..bad {
                body.push_str(&format!("X{i:05},twenty\n"));
            }
            body
        };
        // Sorted by name with one worker: the bad file reaches the writer first.
        s.drop_file("cars/a-bad.csv", rows(50, 2020).as_bytes());
        s.drop_file("cars/b-good.csv", rows(0, 2020).as_bytes());
        s.ferry_ok(&["run"], 3);
        let files = by_path(&s);
        assert_eq!(files["cars/a-bad.csv"]["state"], "quarantined");
        assert_eq!(files["cars/b-good.csv"]["state"], "ingested");
        assert_eq!(files["cars/b-good.csv"]["records"], 9000);
        assert_eq!(files["cars/b-good.csv"]["duplicate_records"], 0);
        assert_eq!(s.count("SELECT count(*) FROM cars"), 9000);
        assert_eq!(s.count("SELECT count(DISTINCT vin) FROM cars"), 9000);
        // The same keys again (other values), in a later run: all duplicates, checked against
        // the stored records.
        s.drop_file("cars/c-again.csv", rows(0, 2021).as_bytes());
        s.ferry_ok(&["run"], 0);
        let again = &by_path(&s)["cars/c-again.csv"];
        assert_eq!(again["records"], 0);
        assert_eq!(again["duplicate_records"], 9000);
        assert_eq!(s.count("SELECT count(*) FROM cars"), 9000);
    }
}

both_stores! {
    fn a_file_over_its_bad_record_limit_keeps_its_counts_and_says_how_many_were_read() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"count\"\nmax_bad_records = 2\ncolumns = [{ name = \"n\", type = \"int\" }]\n\
             [[dataset]]\nname = \"share\"\nmax_bad_records = \"5%\"\ncolumns = [{ name = \"n\", type = \"float\" }]\n",
        )
        .unwrap();
        // 40 records, every fourth one bad: 10 bad.
        let body = |bad: &str| {
            let mut b = String::from("n\n");
            for i in 1..=40 {
                b.push_str(&if i % 4 == 0 { bad.to_string() } else { i.to_string() });
                b.push('\n');
            }
            b
        };
        s.drop_file("count/a.csv", body("x").as_bytes());
        s.drop_file("share/b.csv", body("NaN").as_bytes());
        s.ferry_ok(&["run"], 3);
        let files = s.files_by_path();
        let (a, b) = (&files["count/a.csv"], &files["share/b.csv"]);
        assert_eq!(a["state"], "quarantined");
        assert_eq!(a["rejected"], 10, "{a}");
        assert!(a["error_message"].as_str().unwrap().starts_with("10 of the 40 records read are bad"), "{a}");
        assert_eq!(b["rejected"], 10, "{b}");
        assert!(b["error_message"].as_str().unwrap().starts_with("10 of 40 records are bad"), "{b}");
        let id = b["id"].as_i64().unwrap().to_string();
        let shown = s.json(&["quarantine", "show", &id, "--json"]);
        assert!(shown["rejects"][0]["reason"].as_str().unwrap().contains("not a number"), "{shown}");
    }
}
