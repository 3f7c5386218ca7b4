//! A throwaway PostgreSQL server for the tests that run against the PostgreSQL store.
//!
//! Started once per test process: `initdb` into a temp folder, `postgres` on a free port on
//! 127.0.0.1 (as the `postgres` user when the tests run as root, since PostgreSQL refuses to run
//! as root), stopped when the test process ends (parent-death signal). Each test gets a
//! database of its own. If the server cannot start, the tests that need it fail, loudly: they
//! never skip.

#![allow(dead_code)]

use crate::harness::free_port;
use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The folder holding `initdb` and `postgres`: `FERRY_PG_BIN`, `pg_config --bindir`, or the
/// newest Debian install.
fn bindir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("FERRY_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").exists() {
            return Ok(d);
        }
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (/usr/lib/postgresql: {e}); run ./test, which installs it"))?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = CString::new("postgres").unwrap();
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn command(bin: &Path, who: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = who {
        c.uid(uid).gid(gid);
    }
    c
}

/// Removes data folders of earlier test processes that are gone.
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("ferry-it-pg-") {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill with signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn start() -> Result<Server, String> {
    let bin = bindir()?;
    let who = run_as();
    let parent = std::env::temp_dir();
    sweep(&parent);
    let dir = parent.join(format!("ferry-it-pg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let out = command(&bin.join("initdb"), who)
        .args([
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ])
        .arg("--locale=C.UTF-8")
        .arg("--no-sync")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let log = fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = who {
        let _ = std::os::unix::fs::chown(dir.join("log"), Some(uid), Some(gid));
    }
    let postgres = bin.join("postgres");
    let args: Vec<String> = [
        "-D",
        data.to_str().unwrap(),
        "-p",
        &port.to_string(),
        "-k",
        dir.to_str().unwrap(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=64MB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Spawned from a thread that lives as long as the process, so the parent-death signal
    // fires when the test process ends, not when the test that started it does.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let mut c = command(&postgres, who);
            c.args(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; runs in the child before exec.
            unsafe {
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                    Ok(())
                });
            }
            match c.spawn() {
                Ok(child) => {
                    let _ = tx.send(Ok(child.id()));
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("starting postgres: {e}")));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        ) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "the test PostgreSQL server did not come up: {e}\n{}",
                    fs::read_to_string(dir.join("log")).unwrap_or_default()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(Server { port, dir })
}

/// The shared test server; panics (fails the test) if it cannot start.
pub fn server() -> &'static Server {
    match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) => panic!("a PostgreSQL server is needed for this test and could not start: {e}"),
    }
}

/// A new, empty database on the test server; its URL.
pub fn new_database() -> String {
    let s = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            s.port
        ),
        postgres::NoTls,
    )
    .expect("connecting to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("creating a test database");
    format!("postgres://postgres@127.0.0.1:{}/{name}", s.port)
}
