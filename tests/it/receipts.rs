//! Receipts (`receipts = "<folder or URL>"`) and webhooks (`[notify]`): one receipt per
//! finished file — accepted, accepted with errors, duplicate, rejected — even when killed
//! between writing and recording it; back to the partner's own SFTP server; a place that is
//! down never holds up loading; webhook calls signed, retried until a flaky receiver took them.

use crate::harness::*;
use crate::sshd::Sshd;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORDERS: &str = "[[dataset]]\nname = \"orders\"\nmatch = \"orders/**\"\n\
max_bad_records = \"50%\"\nreceipts = \"acks\"\nreceipt_rejects = \"csv\"\n\
columns = [\n  { name = \"id\", type = \"int\", required = true },\n  \
{ name = \"amount\", type = \"decimal\", scale = 2 },\n]\n";

/// The receipts in a folder, by name.
fn receipts(dir: &Path) -> BTreeMap<String, Value> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".receipt.json").then(|| {
                (
                    n,
                    serde_json::from_slice(&fs::read(e.path()).unwrap()).unwrap(),
                )
            })
        })
        .collect()
}

/// The receipt of the file named `file` (exactly one).
fn receipt_of<'a>(all: &'a BTreeMap<String, Value>, file: &str) -> &'a Value {
    let found: Vec<&Value> = all.values().filter(|r| r["file"] == file).collect();
    assert_eq!(found.len(), 1, "{file}: {all:#?}");
    found[0]
}

/// A run killed (as by kill -9) right after it wrote its first receipt, before recording it.
fn run_killed_after_the_first_receipt(s: &Spool) {
    let died = s
        .cmd()
        .arg("run")
        .env("FERRY_FAULT_NOTICE_DIE", "1")
        .output()
        .unwrap();
    assert_eq!(died.status.code(), Some(137));
}

fn drop_orders(s: &Spool) {
    s.drop_file("orders/good.csv", b"id,amount\n1,10.00\n2,20.50\n");
    s.drop_file(
        "orders/some-bad.csv",
        b"id,amount\n3,1.00\nx,2.00\n5,abc\n6,3.00\n7,4.00\n",
    );
    // The same content as good.csv under another name: a duplicate.
    s.drop_file("orders/good-again.csv", b"id,amount\n1,10.00\n2,20.50\n");
    // More than half bad: the file is rejected (quarantined).
    s.drop_file("orders/all-bad.csv", b"id,amount\nq,1\nr,2\ns,3\n");
}

both_stores! {
    fn every_finished_file_gets_exactly_one_receipt_saying_what_became_of_it() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
        drop_orders(&s);
        assert_eq!(s.ferry(&["run"]).status.code(), Some(3));
        let acks = s.root.join("acks");
        let all = receipts(&acks);
        assert_eq!(all.len(), 4, "{all:#?}");

        // good.csv and good-again.csv hold the same content: whichever finished first was
        // loaded, the other is its duplicate.
        let (a, b) = (receipt_of(&all, "good.csv"), receipt_of(&all, "good-again.csv"));
        let (good, dup) = if a["status"] == "accepted" { (a, b) } else { (b, a) };
        assert_eq!(good["status"], "accepted");
        assert_eq!(good["records"]["stored"], 2);
        let sha = sha256_hex(b"id,amount\n1,10.00\n2,20.50\n");
        assert_eq!(good["sha256"], sha);
        assert_eq!(good["size"], 26);
        let good_name = format!("{}.{}.receipt.json", good["file"].as_str().unwrap(), &sha[..12]);
        assert!(all.contains_key(&good_name));

        let some = receipt_of(&all, "some-bad.csv");
        assert_eq!(some["status"], "accepted_with_errors");
        assert_eq!(some["records"]["stored"], 3);
        assert_eq!(some["records"]["rejected"], 2);
        let errors = some["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0]["line"], 3);
        assert_eq!(errors[0]["column"], "id");
        assert_eq!(errors[0]["value"], "x");
        assert_eq!(errors[1]["line"], 4);
        assert_eq!(errors[1]["column"], "amount");
        // The rejected records beside it, as the file had them, with why.
        let csv_name = some["rejects_file"].as_str().unwrap();
        let mut r = csv::Reader::from_path(acks.join(csv_name)).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
        assert_eq!(header, ["_line", "id", "amount", "_errors"]);
        let rows: Vec<Vec<String>> = r
            .records()
            .map(|x| x.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][..3], ["3", "x", "2.00"]);
        assert_eq!(rows[1][..3], ["4", "5", "abc"]);
        assert!(rows[1][3].starts_with("amount: "), "{rows:?}");

        assert_eq!(dup["status"], "duplicate");
        assert_eq!(dup["duplicate_of"], good["ledger_id"]);
        // The same content, so the same SHA-256 prefix: named apart by their file names.
        let bad = receipt_of(&all, "all-bad.csv");
        assert_eq!(bad["status"], "rejected");
        assert_eq!(bad["records"]["stored"], 0);
        assert!(bad["reason"]["kind"].as_str().is_some());

        // Nothing owed: another run writes nothing again.
        let before = tree(&acks);
        s.ferry_ok(&["run"], 0);
        assert_eq!(tree(&acks), before);
        let st = s.json(&["status", "--json"]);
        assert_eq!(st["deliveries"][0]["delivered"], 4);
        assert_eq!(st["deliveries"][0]["owed"], 0);

        // The loaded file sent again under its own name: a receipt of its own, not over the
        // first.
        let again = format!("orders/{}", good["file"].as_str().unwrap());
        s.drop_file(&again, b"id,amount\n1,10.00\n2,20.50\n");
        s.ferry_ok(&["run"], 0);
        let all = receipts(&acks);
        assert_eq!(all.len(), 5);
        assert_eq!(all[&good_name]["status"], "accepted", "the first receipt is never overwritten");
    }
}

#[test]
fn a_run_killed_after_writing_a_receipt_leaves_exactly_one_receipt_per_file() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    drop_orders(&s);
    // Killed after the first receipt was written, before it was recorded.
    run_killed_after_the_first_receipt(&s);
    assert_eq!(receipts(&s.root.join("acks")).len(), 1);
    assert_eq!(
        s.count("SELECT count(*) FROM orders"),
        5,
        "the files were loaded"
    );
    assert_eq!(s.ferry(&["run"]).status.code(), Some(0));
    let all = receipts(&s.root.join("acks"));
    assert_eq!(all.len(), 4, "{:?}", all.keys().collect::<Vec<_>>());
    for file in ["good.csv", "some-bad.csv", "good-again.csv", "all-bad.csv"] {
        receipt_of(&all, file);
    }
}

#[test]
fn receipts_go_back_to_the_partners_own_sftp_server() {
    let sshd = Sshd::start();
    let s = Spool::new();
    let acks = format!(
        "sftp://{}@127.0.0.1:{}{}/acks",
        sshd.user,
        sshd.port,
        sshd.remote.display()
    );
    let source = sshd.source(
        "acme",
        &format!("match = \"*.csv\"\ninto = \"orders\"\nreceipts = \"{acks}\"\n"),
    );
    fs::write(s.root.join("ferry.toml"), format!("{ORDERS}{source}")).unwrap();
    sshd.put("a.csv", b"id,amount\n1,1.00\n");
    sshd.put("b.csv", b"id,amount\n2,2.00\nz,1\n3,3.00\n");
    s.ferry_ok(&["run"], 0);
    let back = receipts(&sshd.remote.join("acks"));
    assert_eq!(back.len(), 2, "{back:#?}");
    let b = receipt_of(&back, "b.csv");
    assert_eq!(b["status"], "accepted_with_errors");
    assert_eq!(b["remote"]["source"], "acme");
    assert_eq!(b["remote"]["path"], "b.csv");
    // No temp names left on the partner's server.
    assert!(tree(&sshd.remote.join("acks"))
        .keys()
        .all(|k| !k.starts_with('.')));
}

#[test]
fn a_receipt_place_that_is_down_never_holds_up_loading_and_shows_in_status() {
    let s = Spool::new();
    let port = free_port();
    // Nothing listens on that port.
    let down = ORDERS.replace(
        "receipts = \"acks\"\nreceipt_rejects = \"csv\"\n",
        &format!("receipts = \"ftp://127.0.0.1:{port}/acks\"\n"),
    );
    fs::write(s.root.join("ferry.toml"), &down).unwrap();
    drop_orders(&s);
    let started = Instant::now();
    assert_eq!(s.ferry(&["run"]).status.code(), Some(3));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(s.count("SELECT count(*) FROM orders"), 5);
    let st = s.json(&["status", "--json"]);
    let ch = &st["deliveries"][0];
    assert_eq!(ch["owed"], 4);
    assert_eq!(ch["delivered"], 0);
    assert!(ch["failing"].as_u64().unwrap() >= 1);
    assert!(ch["last_error"].as_str().is_some());
    // The place comes back (here: a folder instead): what was owed is delivered.
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    std::thread::sleep(Duration::from_millis(5_500));
    s.ferry_ok(&["run"], 0);
    assert_eq!(receipts(&s.root.join("acks")).len(), 4);
}

/// A webhook receiver on loopback that answers 500 to the first call of every idempotency key,
/// checks each signature, and logs every call as a JSON line.
struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &Path, secret: &str) -> Receiver {
        let script = r#"
import hashlib, hmac, http.server, json, sys
port, secret, log = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
seen = set()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        key = self.headers.get("idempotency-key")
        content = self.headers.get("x-ferry-content-key")
        fail = key not in seen
        seen.add(key)
        with open(log, "a") as f:
            f.write(json.dumps({"key": key, "content": content,
                                "signed": self.headers.get("x-ferry-signature") == want,
                                "failed": fail, "body": json.loads(body)}) + "\n")
        self.send_response(500 if fail else 204)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;
        let port = free_port();
        let log = dir.join("calls.ndjson");
        let child = Command::new("python3")
            .args([
                "-c",
                script,
                &port.to_string(),
                secret,
                log.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver { child, port, log }
    }

    fn calls(&self) -> Vec<Value> {
        let Ok(f) = fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

both_stores! {
    fn webhook_calls_are_signed_and_retried_until_the_receiver_took_each_file() {
        let s = Spool::new();
        let rx = Receiver::start(&s.scratch("hook"), "s3cret-key");
        let config = format!(
            "{ORDERS}[notify]\nurl = \"http://127.0.0.1:{}/ferry\"\nsecret_env = \"FERRY_TEST_HOOK\"\n",
            rx.port
        );
        fs::write(s.root.join("ferry.toml"), config).unwrap();
        drop_orders(&s);
        let run = || {
            s.cmd()
                .arg("run")
                .env("FERRY_TEST_HOOK", "s3cret-key")
                .output()
                .unwrap()
        };
        assert_eq!(run().status.code(), Some(3));
        // Every first call fails: after three failures in a row the channel waits for its next
        // pass, every file still owed.
        assert_eq!(rx.calls().len(), 3);
        let st = s.json(&["status", "--json"]);
        let hook = st["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "webhook")
            .unwrap()
            .clone();
        assert_eq!(hook["owed"], 4);
        // Once each back-off is over: the three go through, the fourth fails its first call;
        // after its own back-off it goes through too.
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(5_500));
            assert_eq!(run().status.code(), Some(0));
        }
        let calls = rx.calls();
        assert_eq!(calls.len(), 8, "{calls:#?}");
        assert!(calls.iter().all(|c| c["signed"] == true), "{calls:#?}");
        let took: Vec<&Value> = calls.iter().filter(|c| c["failed"] == false).collect();
        let mut keys: Vec<String> = took.iter().map(|c| c["key"].as_str().unwrap().into()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 4, "each file once");
        let mut statuses: Vec<String> =
            took.iter().map(|c| c["body"]["status"].as_str().unwrap().into()).collect();
        statuses.sort();
        assert_eq!(statuses, ["accepted", "accepted_with_errors", "duplicate", "rejected"]);
        // The content key is the dataset and the SHA-256 the body names.
        for c in &calls {
            let want = format!(
                "{}:{}",
                c["body"]["dataset"].as_str().unwrap(),
                c["body"]["sha256"].as_str().unwrap()
            );
            assert_eq!(c["content"], want);
        }
        // A retry carries the same key and the same body.
        for c in &took {
            let first = calls.iter().find(|f| f["key"] == c["key"]).unwrap();
            assert_eq!(first["body"], c["body"]);
        }
        // Delivered: nothing more is sent.
        assert_eq!(run().status.code(), Some(0));
        assert_eq!(rx.calls().len(), 8);
    }
}

#[test]
fn the_daemon_delivers_receipts_beside_loading() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    let port = free_port();
    let mut d = start_watch(&s, &["--metrics", &format!("127.0.0.1:{port}")]);
    s.drop_file("orders/a.csv", b"id,amount\n1,1.00\n");
    wait_for_files(&s, 1);
    let acks = s.root.join("acks");
    let deadline = Instant::now() + Duration::from_secs(15);
    while receipts(&acks).is_empty() {
        assert!(Instant::now() < deadline, "no receipt from the daemon");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The deliverer's counts, as /metrics serves them.
    let want = "ferry_notices_delivered{channel=\"receipts:dataset:orders\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(port, "/metrics").is_some_and(|m| m.contains(want)) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            http_get(port, "/metrics")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(http_get(port, "/metrics")
        .unwrap()
        .contains("ferry_notices_owed{channel=\"receipts:dataset:orders\"} 0"));
    assert_eq!(sigterm(&mut d), Some(0));
    let all = receipts(&acks);
    assert_eq!(receipt_of(&all, "a.csv")["status"], "accepted");
}

#[test]
fn kill_9_at_random_moments_then_every_finished_file_has_exactly_one_receipt() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    for i in 0..30 {
        let bad = if i % 3 == 0 { "\nzz,1.00" } else { "" };
        s.drop_file(
            &format!("orders/f{i:02}.csv"),
            format!("id,amount\n{i},{i}.00{bad}\n").as_bytes(),
        );
    }
    let mut rng = Rng::from_time();
    for _ in 0..20 {
        let mut child = s
            .cmd()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        let _ = child.kill();
        let _ = child.wait();
    }
    s.ferry(&["run"]);
    s.ferry_ok(&["run"], 0);
    let all = receipts(&s.root.join("acks"));
    // One receipt per finished file: by ledger id, and no file named twice.
    let finished = s.count("SELECT count(*) FROM files");
    assert_eq!(
        all.len() as i64,
        finished,
        "{:?}",
        all.keys().collect::<Vec<_>>()
    );
    let mut ids: Vec<i64> = all
        .values()
        .map(|r| r["ledger_id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    for i in 0..30 {
        let r = receipt_of(&all, &format!("f{i:02}.csv"));
        let want = if i % 3 == 0 {
            "accepted_with_errors"
        } else {
            "accepted"
        };
        assert_eq!(r["status"], want, "f{i:02}.csv");
    }
    assert!(tree(&s.root.join("acks"))
        .keys()
        .all(|k| !k.starts_with('.')));
}

#[test]
fn a_file_name_with_a_line_break_never_reaches_an_ftp_command_as_one() {
    let ftp = crate::vsftpd::Vsftpd::start();
    let s = Spool::new();
    let target = ftp
        .source("acks", "acks", "")
        .replace("[[source]]", "[[target]]")
        .replace("settle = \"0s\"\n", "");
    let url = target
        .lines()
        .find_map(|l| l.strip_prefix("url = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let config = ORDERS.replace(
        "receipts = \"acks\"\nreceipt_rejects = \"csv\"\n",
        &format!("receipts = \"{url}\"\n"),
    );
    fs::write(s.root.join("ferry.toml"), format!("{config}{target}")).unwrap();
    s.drop_file("orders/odd\nDELE x.csv", b"id,amount\n1,1.00\n");
    s.ferry_ok(&["run"], 0);
    let all = receipts(&ftp.root.join("acks"));
    assert_eq!(all.len(), 1, "{:?}", tree(&ftp.root.join("acks")));
    let (name, r) = all.iter().next().unwrap();
    assert!(name.starts_with("odd_DELE x.csv."), "{name}");
    assert_eq!(r["file"], "odd\nDELE x.csv");
}

#[test]
fn receipts_of_objects_pulled_from_a_bucket_go_back_into_it() {
    let s3 = crate::seaweed::Seaweed::start();
    let s = Spool::new();
    crate::remote::configure(
        &s,
        &s3.source("acme", "in", "receipts = \"s3://inbox/acks/\"\n"),
    );
    s3.put("in/a.csv", b"id,status\n1,new\n");
    s3.put("in/b.csv", b"id,status\n2,paid\n");
    s.ferry_ok(&["run"], 0);
    let acks = s3.objects("acks/");
    assert_eq!(acks.len(), 2, "{acks:?}");
    let sha = sha256_hex(b"id,status\n1,new\n");
    let key = format!("acks/a.csv.{}.receipt.json", &sha[..12]);
    let r: Value = serde_json::from_slice(&s3.get(&key).unwrap()).unwrap();
    assert_eq!(r["status"], "accepted");
    assert_eq!(r["remote"]["source"], "acme");
    assert_eq!(r["sha256"], sha);
}

#[test]
fn a_channel_reads_from_its_oldest_owed_file_on_and_never_skips_one() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    s.drop_file("orders/old.csv", b"id,amount\n1,1.00\n");
    s.drop_file("orders/new.csv", b"id,amount\n2,2.00\n");
    s.ferry_ok(&["run"], 0);
    let acks = s.root.join("acks");
    assert_eq!(receipts(&acks).len(), 2);
    // As if old.csv had finished long ago and its receipt were still owed.
    let db = s.db();
    db.execute_batch(
        "UPDATE files SET finished_at = '2020-01-01T00:00:00.000Z' WHERE path = 'orders/old.csv';
         DELETE FROM ferry_deliveries WHERE file_id =
           (SELECT id FROM files WHERE path = 'orders/old.csv');
         UPDATE ferry_channels SET since = '2019-06-01T00:00:00.000Z';",
    )
    .unwrap();
    for (name, _) in receipts(&acks) {
        if name.starts_with("old.csv.") {
            fs::remove_file(acks.join(name)).unwrap();
        }
    }
    s.ferry_ok(&["run"], 0);
    // The owed file held the channel's start back, and was delivered.
    assert_eq!(
        receipt_of(&receipts(&acks), "old.csv")["status"],
        "accepted"
    );
    let since = |s: &Spool| {
        s.query("SELECT since FROM ferry_channels")[0][0]
            .clone()
            .unwrap()
    };
    assert_eq!(since(&s), "2020-01-01T00:00:00.000Z");
    // Nothing owed any more: the start moves up to an hour ago, never past it.
    s.ferry_ok(&["run"], 0);
    let moved = since(&s);
    assert!(moved.as_str() > "2026-01-01", "{moved}");
    let hour_ago = (chrono::Utc::now() - chrono::Duration::minutes(59))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(moved < hour_ago, "{moved} {hour_ago}");
    // Files still arrive and get their receipts.
    s.drop_file("orders/later.csv", b"id,amount\n3,3.00\n");
    s.ferry_ok(&["run"], 0);
    assert_eq!(receipts(&acks).len(), 3);
}

#[test]
fn a_rejects_file_is_never_partial_when_the_archived_file_changed() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), ORDERS).unwrap();
    // Delivered only on the second run: the archived copy is cut short in between.
    s.drop_file(
        "orders/some-bad.csv",
        b"id,amount\n3,1.00\nx,2.00\n5,abc\n6,3.00\n7,4.00\n",
    );
    run_killed_after_the_first_receipt(&s);
    let stored = s.query("SELECT stored_at FROM files")[0][0]
        .clone()
        .unwrap();
    fs::write(s.root.join(stored), b"id,amount\n3,1.00\nx,2.00\n").unwrap();
    s.ferry_ok(&["run"], 0);
    let acks = s.root.join("acks");
    let r = receipt_of(&receipts(&acks), "some-bad.csv").clone();
    let mut csv = csv::Reader::from_path(acks.join(r["rejects_file"].as_str().unwrap())).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_string).collect();
    // Line 4 is gone from the file: the located errors, both of them, instead.
    assert_eq!(header, ["line", "column", "value", "reason"]);
    assert_eq!(csv.records().count(), 2);
}
