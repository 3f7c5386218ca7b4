//! Archives partners send (zip, tar, tar.gz): members judged as files of the datasets their
//! paths name, the archive as one unit (or each member its own), and hostile archives refused
//! with the reason — nothing stored, nothing written outside the spool.

use crate::harness::*;
use std::fs;
use std::path::Path;
use std::process::Command;

const CONFIG: &str = r#"
[[dataset]]
name = "orders"
match = "bank/orders/*.csv"

[[dataset]]
name = "stock"
match = "bank/stock/*.csv"
"#;

/// Builds an archive with Python's zipfile/tarfile: `members` are (name, bytes); `kind` is
/// "zip", "tar" or "tar.gz".
pub fn archive(path: &Path, kind: &str, members: &[(&str, &[u8])]) {
    let list: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    let spec = scratch_json(path, &list);
    python(
        r#"
import io, json, sys, tarfile, zipfile
path, kind = sys.argv[1], sys.argv[2]
members = json.load(open(sys.argv[3]))
if kind == "zip":
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, bytes(data))
else:
    with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(bytes(data)))
"#,
        &[path.to_str().unwrap(), kind, spec.to_str().unwrap()],
    );
    fs::remove_file(spec).unwrap();
}

/// The members' list for the archive's maker, beside the archive (too big for a command line).
fn scratch_json(path: &Path, list: &[(String, Vec<u8>)]) -> std::path::PathBuf {
    let p = path.with_extension("members.json");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, serde_json::to_vec(list).unwrap()).unwrap();
    p
}

pub fn python(script: &str, args: &[&str]) {
    if let Some(p) = Path::new(args[0]).parent() {
        fs::create_dir_all(p).unwrap();
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backdated(p: &Path) {
    backdate(p);
}

const A: &[u8] = b"id,name\n1,anna\n2,bert\n";
const B: &[u8] = b"id,name\n3,carl\n";
const S: &[u8] = b"sku,qty\nx1,4\nx2,5\n";
const BAD: &[u8] = b"id,name\n4,dora\n5,eve,extra\n";

pub fn row_of<'a>(files: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    files
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no ledger row for {path}: {files:#?}"))
}

both_stores! {
    fn archive_members_load_as_files_of_the_datasets_their_paths_name() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        let zip = s.incoming().join("bank/day1.zip");
        archive(&zip, "zip", &[("orders/a.csv", A), ("stock/s.csv", S)]);
        backdated(&zip);
        // A tar.gz found by its bytes, not its name.
        let tgz = s.incoming().join("bank/day2.bin");
        archive(&tgz, "tar.gz", &[("orders/b.csv", B)]);
        backdated(&tgz);
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
        assert_eq!(s.count("SELECT count(*) FROM stock"), 2);
        let files = s.files();
        let day1 = row_of(&files, "bank/day1.zip");
        assert_eq!(day1["state"], "ingested");
        assert_eq!(day1["format"], "zip");
        assert_eq!(day1["sha256"], sha256_hex(&fs::read(s.root.join(day1["stored_at"].as_str().unwrap())).unwrap()));
        let a = row_of(&files, "bank/orders/a.csv");
        assert_eq!(a["container_id"], day1["id"]);
        assert_eq!(a["sha256"], sha256_hex(A));
        assert_eq!(a["records"], 2);
        assert_eq!(row_of(&files, "bank/stock/s.csv")["container_id"], day1["id"]);
        let day2 = row_of(&files, "bank/day2.bin");
        assert_eq!(day2["format"], "tar.gz");
        assert_eq!(row_of(&files, "bank/orders/b.csv")["container_id"], day2["id"]);
        // Records lead to their member's row, and from there to the archive.
        assert_eq!(
            s.count(&format!("SELECT count(*) FROM orders WHERE _file_id = {}", a["id"])),
            2
        );
        // Nothing is left unpacked.
        assert!(fs::read_dir(s.root.join("processing/.unpack")).map_or(true, |d| d.count() == 0));

        // The same archive again is a duplicate; a member sent alone is a duplicate of the
        // member; another archive holding it and a new file loads the new one only.
        let again = s.incoming().join("bank/day1-again.zip");
        fs::copy(s.root.join(day1["stored_at"].as_str().unwrap()), &again).unwrap();
        backdated(&again);
        s.drop_file("bank/orders/a.csv", A);
        let mixed = s.incoming().join("bank/day3.tar");
        archive(&mixed, "tar", &[("orders/a.csv", A), ("orders/c.csv", b"id,name\n9,ida\n")]);
        backdated(&mixed);
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 4);
        let files = s.files();
        assert_eq!(row_of(&files, "bank/day1-again.zip")["state"], "duplicate");
        assert_eq!(row_of(&files, "bank/day1-again.zip")["duplicate_of"], day1["id"]);
        let dups: Vec<_> = files
            .iter()
            .filter(|f| f["path"] == "bank/orders/a.csv" && f["state"] == "duplicate")
            .collect();
        assert_eq!(dups.len(), 2, "{files:#?}");
        assert!(dups.iter().all(|d| d["duplicate_of"] == a["id"]));
        assert_eq!(row_of(&files, "bank/day3.tar")["state"], "ingested");
    }
}

both_stores! {
    fn an_archive_is_one_unit_a_failing_member_sets_it_aside_whole() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), CONFIG).unwrap();
        let zip = s.incoming().join("bank/day.zip");
        archive(&zip, "zip", &[("orders/a.csv", A), ("stock/s.csv", S), ("orders/bad.csv", BAD)]);
        backdated(&zip);
        let dry = s.ferry_ok(&["run", "--dry-run", "--json"], 3);
        let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
        let verdicts = dry["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
        assert_eq!(verdicts[0]["outcome"], "quarantine");
        assert_eq!(verdicts[0]["error_kind"], "archive.member_failed");

        s.ferry_ok(&["run"], 3);
        assert_eq!(s.count_or_zero("SELECT count(*) FROM orders"), 0);
        assert_eq!(s.count_or_zero("SELECT count(*) FROM stock"), 0);
        let files = s.files();
        assert_eq!(files.len(), 1, "only the archive is recorded: {files:#?}");
        let f = &files[0];
        assert_eq!(f["state"], "quarantined");
        assert_eq!(f["error_kind"], "archive.member_failed");
        let msg = f["error_message"].as_str().unwrap();
        assert!(msg.contains("bank/orders/bad.csv") && msg.contains("csv.ragged_row"), "{msg}");
        assert_eq!(fs::read(s.root.join("quarantine/bank/day.zip")).unwrap(), fs::read(s.root.join("quarantine/bank/day.zip")).unwrap());
        assert!(s.root.join("quarantine/bank/day.zip.reason.json").exists());
        assert!(fs::read_dir(s.root.join("processing/.unpack")).map_or(true, |d| d.count() == 0));
    }
}

both_stores! {
    fn each_member_its_own_unit_sets_aside_only_the_failing_member() {
        let s = Spool::new();
        let config = format!("{CONFIG}\n[unpack]\narchive_members = \"each\"\n");
        fs::write(s.root.join("ferry.toml"), config).unwrap();
        let zip = s.incoming().join("bank/day.zip");
        archive(&zip, "zip", &[("orders/a.csv", A), ("orders/bad.csv", BAD), ("stock/s.csv", S)]);
        backdated(&zip);
        s.ferry_ok(&["run"], 3);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
        assert_eq!(s.count("SELECT count(*) FROM stock"), 2);
        let files = s.files();
        let day = row_of(&files, "bank/day.zip");
        assert_eq!(day["state"], "ingested");
        assert!(s.root.join(day["stored_at"].as_str().unwrap()).exists());
        let bad = row_of(&files, "bank/orders/bad.csv");
        assert_eq!(bad["state"], "quarantined");
        assert_eq!(bad["error_kind"], "csv.ragged_row");
        assert_eq!(bad["container_id"], day["id"]);
        // The member itself is set aside, as the partner sent it.
        assert_eq!(fs::read(s.root.join(bad["stored_at"].as_str().unwrap())).unwrap(), BAD);
    }
}

/// A hostile input: its name, the reject kind it must get, and how to make it.
pub type Case<'a> = (&'a str, &'a str, Box<dyn Fn(&Path) + 'a>);

/// A hostile archive: refused with `kind`, nothing stored, nothing written outside the spool.
fn refused(s: &Spool, name: &str, kind: &str) {
    eprintln!("hostile archive: {name}");
    let before = s.files().len();
    s.ferry_ok(&["run"], 3);
    let files = s.files();
    assert_eq!(files.len(), before + 1, "{files:#?}");
    let f = row_of(&files, &format!("bank/{name}"));
    assert_eq!(f["state"], "quarantined", "{f:#}");
    assert_eq!(f["error_kind"], kind, "{f:#}");
    assert_eq!(s.count_or_zero("SELECT count(*) FROM orders"), 0);
    let outside = s.root.parent().unwrap();
    assert!(!outside.join("evil.csv").exists() && !s.root.join("evil.csv").exists());
}

#[test]
fn hostile_archives_are_refused_with_the_reason_and_nothing_escapes() {
    let s = Spool::new();
    let config = format!("{CONFIG}\n[unpack]\nmax_archive_members = 50\nmax_archive_ratio = 100\n");
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    let place = |name: &str| s.incoming().join("bank").join(name);
    let hostile: Vec<Case> = vec![
        (
            "slip.zip",
            "archive.unsafe_member",
            Box::new(|p| archive(p, "zip", &[("orders/a.csv", A), ("../../evil.csv", A)])),
        ),
        (
            "slip.tar",
            "archive.unsafe_member",
            Box::new(|p| archive(p, "tar", &[("orders/../../../evil.csv", A)])),
        ),
        (
            "absolute.tar.gz",
            "archive.unsafe_member",
            Box::new(|p| archive(p, "tar.gz", &[("/tmp/evil.csv", A)])),
        ),
        (
            "windows.zip",
            "archive.unsafe_member",
            Box::new(|p| archive(p, "zip", &[("..\\..\\evil.csv", A)])),
        ),
        (
            "folder-bytes.zip",
            "archive.unsafe_member",
            Box::new(|p| {
                archive(
                    p,
                    "zip",
                    &[("orders/", b"id,name\n1,hidden\n"), ("orders/a.csv", A)],
                )
            }),
        ),
        (
            "appended.tar",
            "archive.corrupt",
            Box::new(|p| {
                let second = p.with_extension("second");
                archive(&second, "tar", &[("orders/hidden.csv", B)]);
                archive(p, "tar", &[("orders/a.csv", A)]);
                let mut bytes = fs::read(p).unwrap();
                bytes.extend(fs::read(&second).unwrap());
                fs::remove_file(&second).unwrap();
                fs::write(p, bytes).unwrap();
            }),
        ),
        (
            "twice.zip",
            "archive.unsafe_member",
            Box::new(|p| archive(p, "zip", &[("orders/a.csv", A), ("orders/a.csv", B)])),
        ),
        (
            "nested.zip",
            "archive.nested",
            Box::new(|p| {
                let inner = p.with_extension("inner");
                archive(&inner, "zip", &[("orders/a.csv", A)]);
                let bytes = fs::read(&inner).unwrap();
                fs::remove_file(&inner).unwrap();
                archive(p, "zip", &[("orders/inner.zip", &bytes)]);
            }),
        ),
        (
            "nested-magic.tar",
            "archive.nested",
            Box::new(|p| {
                let inner = p.with_extension("inner");
                archive(&inner, "tar", &[("orders/a.csv", A)]);
                let bytes = fs::read(&inner).unwrap();
                fs::remove_file(&inner).unwrap();
                archive(p, "tar", &[("orders/data.csv", &bytes)]);
            }),
        ),
        (
            "links.tar",
            "archive.unsafe_member",
            Box::new(|p| {
                python(
                    r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    i = tarfile.TarInfo("orders/a.csv"); i.type = tarfile.SYMTYPE; i.linkname = "/etc/passwd"
    t.addfile(i)
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "hardlink.tar",
            "archive.unsafe_member",
            Box::new(|p| {
                python(
                    r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    i = tarfile.TarInfo("orders/a.csv"); i.type = tarfile.LNKTYPE; i.linkname = "../../evil.csv"
    t.addfile(i)
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "device.tar",
            "archive.unsafe_member",
            Box::new(|p| {
                python(
                    r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    i = tarfile.TarInfo("orders/a.csv"); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3
    t.addfile(i)
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "symlink.zip",
            "archive.unsafe_member",
            Box::new(|p| {
                python(
                    r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    i = zipfile.ZipInfo("orders/a.csv"); i.external_attr = (0o120777 << 16); i.create_system = 3
    z.writestr(i, "/etc/passwd")
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "bomb.zip",
            "archive.too_big",
            Box::new(|p| {
                python(
                    r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("orders/a.csv", b"id,name\n" + b"0" * (40 << 20))
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "bomb.tar.gz",
            "archive.too_big",
            Box::new(|p| {
                python(
                    r#"
import io, sys, tarfile
data = b"id,name\n" + b"0" * (40 << 20)
with tarfile.open(sys.argv[1], "w:gz") as t:
    i = tarfile.TarInfo("orders/a.csv"); i.size = len(data)
    t.addfile(i, io.BytesIO(data))
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "many.zip",
            "archive.too_big",
            Box::new(|p| {
                python(
                    r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for i in range(60):
        z.writestr(f"orders/f{i}.csv", f"id,name\n{i},x\n")
"#,
                    &[p.to_str().unwrap()],
                )
            }),
        ),
        (
            "cut.tar.gz",
            "archive.corrupt",
            Box::new(|p| {
                let rows: String = (0..20000).map(|i| format!("{i},name{i}\n")).collect();
                let body = format!("id,name\n{rows}");
                archive(p, "tar.gz", &[("orders/a.csv", body.as_bytes())]);
                let bytes = fs::read(p).unwrap();
                fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
        (
            "encrypted.zip",
            "archive.encrypted",
            Box::new(|p| {
                let dir = p.with_extension("d");
                fs::create_dir_all(dir.join("orders")).unwrap();
                fs::write(dir.join("orders/a.csv"), A).unwrap();
                let out = Command::new("zip")
                    .current_dir(&dir)
                    .args(["-q", "-r", "-P", "secret"])
                    .arg(p)
                    .arg("orders")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                fs::remove_dir_all(&dir).unwrap();
            }),
        ),
    ];
    for (name, kind, make) in hostile {
        let p = place(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        make(&p);
        backdated(&p);
        refused(&s, name, kind);
    }
    // The quarantined archives are the partner's bytes, untouched; nothing is left unpacked.
    assert!(fs::read_dir(s.root.join("processing/.unpack")).map_or(true, |d| d.count() == 0));
}

/// Archives of several members, one of them big enough to be streamed (over 4 MiB).
fn drop_archives(s: &Spool) -> usize {
    let mut n = 0;
    for i in 0..4 {
        let small: Vec<(String, Vec<u8>)> = (0..5)
            .map(|m| {
                let rows: String = (0..200).map(|r| format!("{i}-{m}-{r},n{r}\n")).collect();
                (
                    format!("orders/a{i}-{m}.csv"),
                    format!("id,name\n{rows}").into_bytes(),
                )
            })
            .collect();
        let big: String = (0..160_000)
            .map(|r| format!("{i}-big-{r},name {r} of archive {i}\n"))
            .collect();
        let mut members: Vec<(&str, &[u8])> = small
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let big = format!("id,name\n{big}");
        members.push(("orders/big.csv", big.as_bytes()));
        let kind = if i % 2 == 0 { "zip" } else { "tar.gz" };
        let p = s.incoming().join(format!("bank/day{i}.{kind}"));
        archive(&p, kind, &members);
        backdated(&p);
        n += members.len();
    }
    n
}

both_stores! {
    fn kill_9_while_archives_load_never_loses_or_doubles_a_member() {
        let mut rng = Rng::from_time();
        for each in [false, true] {
            let s = Spool::new();
            let config = format!("{CONFIG}\n[unpack]\narchive_members = \"{}\"\n", if each { "each" } else { "unit" });
            fs::write(s.root.join("ferry.toml"), config).unwrap();
            let members = drop_archives(&s);
            let mut kills = 0;
            for _ in 0..4 {
                let mut child = s.cmd().arg("run").arg("--no-progress").spawn().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50 + rng.below(1500)));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    kills += 1;
                }
                child.wait().unwrap();
            }
            s.ferry_ok(&["run"], 0);
            eprintln!("each = {each}: {kills} kills");
            // Every record once: 4 archives of 5 × 200 small and 160,000 big rows.
            assert_eq!(s.count("SELECT count(*) FROM orders"), 4 * (5 * 200 + 160_000));
            assert_eq!(s.count("SELECT count(DISTINCT id) FROM orders"), 4 * (5 * 200 + 160_000));
            // Each member ingested once; each archive once. In unit mode every ingested member
            // names its archive; with each member its own unit, a member committed before a
            // kill is found again as a duplicate, and that row names the archive.
            assert_eq!(
                s.count("SELECT count(*) FROM files WHERE state = 'ingested' AND path LIKE 'bank/orders/%'"),
                members as i64
            );
            let linked = if each {
                "SELECT count(DISTINCT coalesce(duplicate_of, id)) FROM files \
                 WHERE container_id IS NOT NULL AND state <> 'quarantined'"
            } else {
                "SELECT count(*) FROM files WHERE state = 'ingested' AND container_id IS NOT NULL"
            };
            assert_eq!(s.count(linked), members as i64);
            assert_eq!(
                s.count("SELECT count(*) FROM files WHERE state = 'ingested' AND format IN ('zip', 'tar.gz')"),
                4
            );
            assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
            assert!(fs::read_dir(s.root.join("processing/.unpack")).map_or(true, |d| d.count() == 0));
        }
    }
}

#[test]
fn each_member_its_own_unit_keeps_the_members_before_a_cut_and_they_name_the_archive() {
    let s = Spool::new();
    let config = format!("{CONFIG}\n[unpack]\narchive_members = \"each\"\n");
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    let p = s.incoming().join("bank/cut.tar");
    let rows: String = (0..50_000).map(|i| format!("{i},name{i}\n")).collect();
    let big = format!("id,name\n{rows}");
    archive(
        &p,
        "tar",
        &[("orders/a.csv", A), ("orders/big.csv", big.as_bytes())],
    );
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    backdated(&p);
    s.ferry_ok(&["run"], 3);
    let files = s.files();
    let cut = row_of(&files, "bank/cut.tar");
    assert_eq!(cut["state"], "quarantined");
    assert_eq!(cut["error_kind"], "archive.corrupt");
    let a = row_of(&files, "bank/orders/a.csv");
    assert_eq!(a["state"], "ingested");
    assert_eq!(a["container_id"], cut["id"]);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
}

#[test]
fn with_strict_datasets_an_archive_is_taken_for_its_members_and_retried_once_they_have_one() {
    let s = Spool::new();
    let only_orders =
        "strict_datasets = true\n[[dataset]]\nname = \"orders\"\nmatch = \"bank/orders/*.csv\"\n";
    fs::write(s.root.join("ferry.toml"), only_orders).unwrap();
    let zip = s.incoming().join("bank/day.zip");
    archive(&zip, "zip", &[("orders/a.csv", A), ("stock/s.csv", S)]);
    backdated(&zip);
    // No dataset matches the archive's own path, yet it is taken: its members are what count,
    // and one of them has no dataset.
    s.ferry_ok(&["run"], 3);
    let day = row_of(&s.files(), "bank/day.zip").clone();
    assert_eq!(day["error_kind"], "archive.member_failed");
    assert!(day["error_message"]
        .as_str()
        .unwrap()
        .contains("config.no_dataset"));
    assert_eq!(s.count_or_zero("SELECT count(*) FROM orders"), 0);
    let both = format!("strict_datasets = true\n{CONFIG}");
    fs::write(s.root.join("ferry.toml"), both).unwrap();
    s.ferry_ok(&["quarantine", "retry", "--all"], 0);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    assert_eq!(s.count("SELECT count(*) FROM stock"), 2);
}

#[test]
fn a_name_listed_twice_in_a_zip64_directory_is_refused_too() {
    let s = Spool::new();
    let config = format!("{CONFIG}\n[unpack]\nmax_archive_members = 100000\n");
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    let p = s.incoming().join("bank/many.zip");
    // Over 65,535 entries: the count is in the zip64 record only.
    python(
        r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for i in range(65536):
        z.writestr(f"orders/f{i}.csv", b"")
    z.writestr("orders/f7.csv", b"id,name\n1,x\n")
"#,
        &[p.to_str().unwrap()],
    );
    backdated(&p);
    refused(&s, "many.zip", "archive.unsafe_member");
}
