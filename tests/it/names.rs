//! Names that meet: partner columns named like ferry's own columns or a store's system columns,
//! in the first file of a dataset or a later one, on both stores.

use crate::harness::*;
use std::fs;

both_stores! {
    fn system_and_backend_column_names_are_renamed_in_first_and_later_files() {
        let s = Spool::new();
        // First file: ferry's names and PostgreSQL's, in other cases too.
        s.drop_file("feed/1.csv", b"_id,XMIN,ctid,name\n900,a,b,first\n");
        s.ferry_ok(&["run"], 0);
        // A later file brings every name ferry and the stores keep, with values that would
        // move record ids backwards if one were taken for ferry's.
        s.drop_file("feed/2.csv", b"_id,_file_id,_line,_key,tableoid,rowid,oid,name\n1,2,3,4,5,6,7,second\n");
        s.ferry_ok(&["run"], 0);

        let cols = s.columns("feed");
        for c in ["_id_2", "XMIN_2", "ctid_2", "_file_id_2", "_line_2", "_key_2", "tableoid_2", "rowid_2", "oid_2"] {
            assert!(cols.iter().any(|have| have == c), "{c} missing from {cols:?}");
        }
        for forbidden in ["xmin", "ctid", "tableoid", "rowid", "oid"] {
            assert!(!cols.iter().any(|c| c.eq_ignore_ascii_case(forbidden)), "{forbidden} in {cols:?}");
        }
        // Record ids, files and lines are ferry's; the partner's values are kept beside them.
        let rows = s.query("SELECT _id, _file_id, _line, \"_id_2\", \"_file_id_2\", name FROM feed ORDER BY _id");
        assert_eq!(rows.len(), 2);
        let ids: Vec<i64> = rows.iter().map(|r| r[0].as_ref().unwrap().parse().unwrap()).collect();
        assert!(ids[0] < ids[1] && ids[0] != 900 && ids[1] != 1, "{rows:?}");
        assert_eq!(rows[0][3].as_deref(), Some("900"));
        assert_eq!(rows[1][3].as_deref(), Some("1"));
        assert_eq!(rows[1][4].as_deref(), Some("2"));
        assert_eq!(rows[1][2].as_deref(), Some("2"), "_line is the file's line");
        // The renames are on the ledger rows.
        let files = s.files_by_path();
        let warnings = files["feed/2.csv"]["warnings"].to_string();
        assert!(warnings.contains("\\\"_id\\\" is stored as \\\"_id_2\\\""), "{warnings}");
        assert!(warnings.contains("\\\"rowid\\\" is stored as \\\"rowid_2\\\""), "{warnings}");

        // Export sends both records: nothing sits below a watermark by a partner's doing.
        let out = s.scratch("out");
        s.ferry_ok(&["export", "feed", "--to", out.to_str().unwrap(), "--format", "ndjson"], 0);
        let mut lines = 0;
        for e in fs::read_dir(&out).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".ndjson") {
                lines += fs::read_to_string(e.path()).unwrap().lines().count();
            }
        }
        assert_eq!(lines, 2);
    }
}

#[test]
fn a_declared_column_named_like_a_system_column_is_refused_by_the_config() {
    for name in ["xmin", "CTID", "_key", "rowid"] {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            format!("[[dataset]]\nname = \"d\"\ncolumns = [{{ name = \"{name}\" }}]\n"),
        )
        .unwrap();
        s.ferry_ok(&["config", "check"], 2);
    }
}

both_stores! {
    fn ids_in_an_adopted_table_came_below_its_rows_when_another_file_took_ids_first() {
        // One worker and names that sort first: files of a table ferry makes are stored (and
        // take record ids) before, and in the same group as, the file that adopts `sales`.
        let s = Spool::new();
        s.ferry_ok(&["run", "--init"], 0);
        let (id, int) = if s.is_postgres() {
            ("bigint NOT NULL", "bigint NOT NULL")
        } else {
            ("INTEGER PRIMARY KEY", "INTEGER")
        };
        s.query(&format!(
            "CREATE TABLE sales (_id {id}, _file_id {int}, _line {int}, amount text)"
        ));
        s.query("INSERT INTO sales (_id, _file_id, _line, amount) VALUES (70000, 0, 2, '9.5')");
        fs::write(
            s.root.join("ferry.toml"),
            "workers = 1\n[[dataset]]\nname = \"feed\"\ntable = \"sales\"\n",
        )
        .unwrap();
        for i in 0..5 {
            s.drop_file(&format!("a_made/{i}.csv"), format!("n\n{i}\n").as_bytes());
        }
        s.drop_file("feed/a.csv", b"amount\n1.5\n2.5\n");
        s.ferry_ok(&["run"], 0);
        let ids = s.query("SELECT _id FROM sales WHERE _file_id <> 0 ORDER BY _id");
        assert_eq!(ids.len(), 2, "{ids:?}");
        for row in &ids {
            let id: i64 = row[0].as_deref().unwrap().parse().unwrap();
            assert!(id > 70000, "ferry's ids come after the rows the table had: {ids:?}");
        }
    }
}

both_stores! {
    fn a_dataset_adopts_the_table_it_names_when_it_fits_and_says_why_when_not() {
        let s = Spool::new();
        s.ferry_ok(&["run", "--init"], 0);
        let (int, dec) = if s.is_postgres() {
            ("bigint NOT NULL", "numeric")
        } else {
            ("INTEGER", "TEXT")
        };
        let id = if s.is_postgres() { "bigint NOT NULL" } else { "INTEGER PRIMARY KEY" };
        s.query(&format!(
            "CREATE TABLE sales (_id {id}, _file_id {int}, _line {int}, amount {dec}, note text)"
        ));
        s.query("INSERT INTO sales (_id, _file_id, _line, amount, note) VALUES (70000, 0, 2, 9.5, 'before ferry')");
        s.query("CREATE TABLE legacy (id text, amount text)");
        s.query("CREATE TABLE inventory (sku text)");
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"feed\"\ntable = \"sales\"\n\
             columns = [{ name = \"amount\", type = \"decimal\" }]\n\
             [[dataset]]\nname = \"old\"\ntable = \"legacy\"\n\
             columns = [{ name = \"amount\", type = \"decimal\" }]\n",
        )
        .unwrap();
        let check = s.ferry(&["config", "check", "--json"]);
        assert_eq!(check.status.code(), Some(2), "a named table that cannot take its dataset");
        let view: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        let feed = &view["datasets"][0];
        assert_eq!(feed["table"], "sales");
        assert!(feed["table_state"].as_str().unwrap().starts_with("adopted"), "{feed}");
        assert!(view["datasets"][1]["table_note"].as_str().unwrap().contains("no _id"), "{view}");

        s.drop_file("feed/a.csv", b"amount\n0.1234567890123456789\n");
        s.drop_file("old/b.csv", b"amount\n1.5\n");
        s.drop_file("inventory/c.csv", b"sku\nX-1\n");
        s.ferry_ok(&["run"], 3);
        let files = s.files_by_path();
        assert_eq!(files["feed/a.csv"]["state"], "ingested");
        let rows = s.query("SELECT CAST(amount AS TEXT), note FROM sales ORDER BY _file_id");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][1].as_deref(), Some("before ferry"), "their row stays");
        assert_eq!(rows[1][0].as_deref(), Some("0.1234567890123456789"));
        let ids = s.query("SELECT _id FROM sales ORDER BY _file_id");
        let id = |i: usize| ids[i][0].as_deref().unwrap().parse::<i64>().unwrap();
        assert!(id(1) > id(0), "ferry's ids come after the rows the table had: {ids:?}");
        let old = &files["old/b.csv"];
        assert_eq!(old["error_kind"], "schema.table");
        assert!(old["error_message"].as_str().unwrap().contains("no _id column"), "{old}");
        assert_eq!(s.count("SELECT count(*) FROM legacy"), 0, "a table that does not fit is left alone");
        // A dataset named like a table ferry did not make stores beside it, and says so.
        let inv = &files["inventory/c.csv"];
        assert_eq!(inv["state"], "ingested");
        assert!(inv["warnings"].to_string().contains("stores into table"), "{inv}");
        assert_eq!(s.count("SELECT count(*) FROM inventory"), 0);
    }
}
