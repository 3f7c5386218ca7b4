//! Helpers: a temp spool, running the built binary, reading the ledger and tables back.

#![allow(dead_code)]

use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry under `dir` (relative path → content hash; symlinks → `link:<target>`). While a
/// daemon runs, an entry can vanish between the listing and the read: it is left out, as if
/// listed a moment later.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = match e {
            Err(e) if e.io_error().is_some_and(gone) => continue,
            e => e.unwrap(),
        };
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if e.file_type().is_symlink() {
            match fs::read_link(e.path()) {
                Ok(target) => out.insert(rel, format!("link:{}", target.display())),
                Err(e) if gone(&e) => continue,
                Err(e) => panic!("{e}"),
            };
        } else if e.file_type().is_file() {
            match fs::read(e.path()) {
                Ok(bytes) => out.insert(rel, sha256_hex(&bytes)),
                Err(e) if gone(&e) => continue,
                Err(e) => panic!("{e}"),
            };
        }
    }
    out
}

/// A free local port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets a file's mtime into the past, so the quiet period is already over.
pub fn backdate(path: &Path) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// Copies a folder tree, keeping symlinks as symlinks, and backdates the files.
pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).min_depth(1) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else if e.file_type().is_symlink() {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(e.path(), &dest).unwrap();
            backdate(&dest);
        }
    }
}

/// A value as text, the way `sqlite3` prints it (NULL → None).
fn cell_text(r: &rusqlite::Row<'_>, i: usize) -> Option<String> {
    match r.get::<_, rusqlite::types::Value>(i).unwrap() {
        rusqlite::types::Value::Null => None,
        rusqlite::types::Value::Integer(n) => Some(n.to_string()),
        rusqlite::types::Value::Real(f) => Some(f.to_string()),
        rusqlite::types::Value::Text(t) => Some(t),
        rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
    }
}

/// Which store the spools of the running test keep their state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Sqlite) };
}

/// Runs a test body with every spool it makes on `backend` (tests run one per thread).
pub fn on(backend: Backend, body: fn()) {
    BACKEND.with(|b| b.set(backend));
    body();
}

/// Declares a test that runs twice, once per store: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_stores {
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body() $body
            $(#[$attr])*
            #[test]
            fn sqlite() {
                $crate::harness::on($crate::harness::Backend::Sqlite, body)
            }
            $(#[$attr])*
            #[test]
            fn postgres() {
                $crate::harness::on($crate::harness::Backend::Postgres, body)
            }
        }
    };
}

pub struct Spool {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The PostgreSQL database of this spool (`None`: the SQLite file in the spool).
    pub pg: Option<String>,
}

impl Spool {
    /// A new spool on the store of the running test (SQLite unless `both_stores!` says).
    pub fn new() -> Spool {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        fs::create_dir_all(root.join("incoming")).unwrap();
        let pg = (BACKEND.with(|b| b.get()) == Backend::Postgres).then(crate::pg::new_database);
        Spool {
            _dir: dir,
            root,
            pg,
        }
    }

    /// Another spool on the same store as this one (a reference run, an export's destination).
    pub fn sibling(&self) -> Spool {
        Spool::new()
    }

    /// Another spool — another host's inbox — keeping its state in the same PostgreSQL
    /// database as this one.
    pub fn another_host(&self) -> Spool {
        let mut s = Spool::new();
        s.pg = self.pg.clone();
        s
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    fn pg_client(&self) -> postgres::Client {
        postgres::Client::connect(self.pg.as_ref().unwrap(), postgres::NoTls).unwrap()
    }

    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// A scratch folder outside the spool.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.root.parent().unwrap().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Drops a finished file into `incoming/` (its quiet period already over).
    pub fn drop_file(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.drop_fresh(rel, bytes);
        backdate(&p);
        p
    }

    /// Drops a file just now written.
    pub fn drop_fresh(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.incoming().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(FERRY);
        c.arg("--root").arg(&self.root);
        c.env_remove("FERRY_LOG")
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_ROOT")
            .env_remove("FERRY_STORE");
        // The S3 and FTP test servers' secrets (crate::seaweed, crate::vsftpd), under names of
        // the tests' own, and a wrong secret for the tests of refusals.
        c.env("FERRY_TEST_KEY", crate::seaweed::KEY)
            .env("FERRY_TEST_SECRET", crate::seaweed::SECRET)
            .env("FERRY_TEST_WRONG_SECRET", "wrongsecret")
            .env("FERRY_TEST_FTP_PASSWORD", crate::vsftpd::PASSWORD)
            .env_remove("FERRY_TEST_UNSET");
        if let Some(url) = &self.pg {
            c.env("FERRY_STORE", url);
        }
        c
    }

    pub fn ferry(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and expects an exit code; prints stderr when it differs.
    pub fn ferry_ok(&self, args: &[&str], code: i32) -> Output {
        let out = self.ferry(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "ferry {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ferry_ok(args, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The ledger, as `ferry files --json` prints it.
    pub fn files(&self) -> Vec<Value> {
        self.json(&["files", "--json"]).as_array().unwrap().clone()
    }

    /// Ledger rows by path (the latest row per path).
    pub fn files_by_path(&self) -> BTreeMap<String, Value> {
        self.files()
            .into_iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f))
            .collect()
    }

    pub fn db(&self) -> Connection {
        assert!(self.pg.is_none(), "db() is the SQLite ledger; use query()");
        Connection::open(self.root.join("ferry.db")).unwrap()
    }

    /// A query's rows as text on PostgreSQL (NULL → None).
    fn pg_query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut c = self.pg_client();
        let mut out = Vec::new();
        for m in c.simple_query(sql).unwrap() {
            if let postgres::SimpleQueryMessage::Row(r) = m {
                out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
        }
        out
    }

    /// An SQL expression for a datetime column as ferry's canonical text (whole seconds).
    pub fn datetime_text(&self, col: &str) -> String {
        if self.is_postgres() {
            format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        } else {
            col.to_string()
        }
    }

    /// Whether the store has a table of this name.
    pub fn table_exists(&self, table: &str) -> bool {
        if self.is_postgres() {
            let q = format!("SELECT count(*) FROM pg_class WHERE relname = '{table}' AND relnamespace = 'public'::regnamespace");
            return self.count(&q) > 0;
        }
        self.count(&format!(
            "SELECT count(*) FROM sqlite_master WHERE name = '{table}'"
        )) > 0
    }

    /// A table's rows as text (NULL → None), in `_id` order, without `_id` and `_file_id`.
    pub fn rows(&self, table: &str) -> Vec<Vec<Option<String>>> {
        if self.is_postgres() {
            let cols: Vec<String> = self
                .columns(table)
                .into_iter()
                .filter(|c| c != "_id" && c != "_file_id")
                .map(|c| format!("\"{c}\""))
                .collect();
            return self.pg_query(&format!(
                "SELECT {} FROM \"{table}\" ORDER BY _id",
                cols.join(", ")
            ));
        }
        let db = self.db();
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY _id"))
            .unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let keep: Vec<usize> = (0..names.len())
            .filter(|&i| names[i] != "_id" && names[i] != "_file_id")
            .collect();
        stmt.query_map([], |r| Ok(keep.iter().map(|&i| cell_text(r, i)).collect()))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Any query's rows as text (NULL → None).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        if self.is_postgres() {
            return self.pg_query(sql);
        }
        let db = self.db();
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| Ok((0..n).map(|i| cell_text(r, i)).collect()))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    pub fn columns(&self, table: &str) -> Vec<String> {
        if self.is_postgres() {
            return self
                .pg_query(&format!(
                    "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                     WHERE c.relname = '{table}' AND c.relnamespace = 'public'::regnamespace \
                     AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
                ))
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect();
        }
        let db = self.db();
        let mut stmt = db
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Like `count`, but 0 while the ledger is not created yet.
    pub fn count_or_zero(&self, sql: &str) -> i64 {
        if self.is_postgres() {
            let mut c = self.pg_client();
            return match c.simple_query(sql) {
                Ok(msgs) => msgs
                    .iter()
                    .find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => {
                            r.get(0).map(|v| v.parse().unwrap())
                        }
                        _ => None,
                    })
                    .unwrap_or(0),
                Err(_) => 0,
            };
        }
        self.db().query_row(sql, [], |r| r.get(0)).unwrap_or(0)
    }

    pub fn count(&self, sql: &str) -> i64 {
        if self.is_postgres() {
            return self.pg_query(sql)[0][0]
                .as_deref()
                .map_or(0, |v| v.parse().unwrap());
        }
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Every stored record of a dataset with the path of the file it came from, sorted: the
    /// content of a load, independent of ids and order.
    pub fn records_with_paths(&self, table: &str) -> Vec<String> {
        let cols: Vec<String> = self
            .columns(table)
            .into_iter()
            .filter(|c| c != "_id" && c != "_file_id")
            .collect();
        if self.is_postgres() {
            let select: Vec<String> = cols
                .iter()
                .map(|c| format!("coalesce(quote_literal(t.\"{c}\"::text), 'NULL')"))
                .collect();
            let mut v: Vec<String> = self
                .pg_query(&format!(
                    "SELECT f.path || '|' || {} FROM \"{table}\" t JOIN files f ON f.id = t._file_id",
                    select.join(" || '|' || ")
                ))
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect();
            v.sort();
            return v;
        }
        let db = self.db();
        let select: Vec<String> = cols.iter().map(|c| format!("quote(t.\"{c}\")")).collect();
        let sql = format!(
            "SELECT f.path || '|' || {} FROM \"{table}\" t JOIN files f ON f.id = t._file_id",
            select.join(" || '|' || ")
        );
        let mut stmt = db.prepare(&sql).unwrap();
        let mut v: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        v.sort();
        v
    }

    /// Files currently in `incoming/` and `processing/` (excluding ferry's own lock folder).
    pub fn leftover_inputs(&self) -> Vec<String> {
        let mut v: Vec<String> = tree(&self.incoming()).into_keys().collect();
        v.extend(
            tree(&self.root.join("processing"))
                .into_keys()
                .filter(|k| !k.starts_with(".owners")),
        );
        v
    }
}

/// A small deterministic random number generator (xorshift64*), so failures can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn from_time() -> Rng {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("rng seed {seed}");
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// The daemon, as a real process.

/// Starts `ferry watch` with its output discarded.
pub fn start_watch(s: &Spool, args: &[&str]) -> Child {
    start_watch_with(s, args, &[])
}

pub fn start_watch_with(s: &Spool, args: &[&str], env: &[(&str, &str)]) -> Child {
    s.cmd()
        .arg("watch")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

pub fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Whether the process has its SIGTERM handler installed (`SigCgt` in /proc/PID/status).
pub fn handles_sigterm(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

pub fn sigterm(child: &mut Child) -> Option<i32> {
    // A signal that arrives before the daemon installed its handler would just kill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handles_sigterm(child.id()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited early"
        );
        assert!(
            Instant::now() < deadline,
            "the daemon never got ready for signals"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the ledger has `n` rows (the daemon commits asynchronously).
pub fn wait_for_files(s: &Spool, n: i64) {
    wait_for_files_within(s, n, Duration::from_secs(20))
}

pub fn wait_for_files_within(s: &Spool, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ledger = s.is_postgres() || s.root.join("ferry.db").exists();
        if ledger && s.count_or_zero("SELECT count(*) FROM files") >= n {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} files");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs ferry with `--json` output and any exit code: (code, parsed stdout).
pub fn json_any(s: &Spool, args: &[&str]) -> (Option<i32>, Value) {
    let out = s.ferry(args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ferry {args:?}: {e}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Waits for a child with a deadline (a hang is a failure, not a stuck test run).
pub fn wait_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP/1.0 GET on 127.0.0.1: the whole response (status line, headers, body).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `/healthz` or `/readyz`: the status code and the daemon's state.
pub fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    let text = http_get(port, path)?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some((code, v["daemon"]["state"].as_str()?.to_string()))
}

/// Polls a probe until it answers `want`, for at most `within`.
pub fn wait_probe(port: u16, path: &str, want: (u16, &str), within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = probe(port, path);
        if got.as_ref().is_some_and(|(c, s)| (*c, s.as_str()) == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got:?}, waiting for {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `waiting` list of a run summary or status report, as (path, rule).
pub fn waiting_rules(report: &Value) -> Vec<(String, String)> {
    report["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().into(),
                w["rule"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Whether these tests run as root (which file modes do not stop).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to its end; its exit code and peak resident memory in MiB.
///
/// The command is started by a small Python process, not by this test binary: Linux records the
/// resident size of the address space a process replaces at `exec` in its peak, so a child
/// spawned from this (large, multi-threaded) binary would report the test binary's memory.
/// Python's own ~10 MiB is the floor of the figure.
pub fn run_measuring_rss(cmd: Command) -> (Option<i32>, f64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
        print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(MEASURE)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        py.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => py.env(k, v),
            None => py.env_remove(k),
        };
    }
    let out = py.stderr(Stdio::inherit()).output().expect("python3 runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let code: i32 = it.next().expect("exit code").parse().unwrap();
    let kib: f64 = it.next().expect("peak RSS").parse().unwrap();
    ((code >= 0).then_some(code), kib / 1024.0)
}
