//! Fault points: where tests make ferry meet the world's failures on purpose — a flaky disk, a
//! denied open, a full disk, a file rewritten under its reader, a crash at a chosen moment.
//!
//! Compiled only with the `fault-injection` cargo feature. `cargo test` turns it on (the crate
//! has itself as a dev-dependency with that feature), so the integration tests' binary has the
//! points; a release build has none of them, not even their names. Each point reads its setting
//! from the environment once per process.
//!
//! | variable | what it does |
//! |---|---|
//! | `FERRY_FAULT_FAIL_READS=<text>:<n>` | the first `n` reads of files whose path has `<text>` fail (EIO) |
//! | `FERRY_FAULT_DENY_OPEN=<flag>:<text>` | opening files whose path has `<text>` fails (EACCES) while `<flag>` exists |
//! | `FERRY_FAULT_DISK_FULL=<flag>` | while `<flag>` exists the ledger may not grow (SQLite's real "disk full") |
//! | `FERRY_FAULT_FAIL_PLACE=<flag>` | while `<flag>` exists moving files to their place fails (ENOSPC) |
//! | `FERRY_FAULT_CHANGE_BEFORE_CLAIM=<text>` | a file whose path has `<text>` grows by a line just before its claim |
//! | `FERRY_FAULT_REWRITE_BETWEEN_PASSES=<text>` | a big file whose path has `<text>` is rewritten in place (same size and mtime) after it was hashed |
//! | `FERRY_FAULT_ABORT_ON=<text>` | the process aborts while parsing a file whose path has `<text>` |
//! | `FERRY_FAULT_ABORT_STORING=<text>:<n>` | the process aborts once the writer stored `n` chunks of a file whose path has `<text>` (its transaction open) |
//! | `FERRY_FAULT_SLOW_MS=<ms>` | every worker sleeps this long per file (to catch a run mid-way) |
//! | `FERRY_FAULT_EXPORT_PAUSE_MS=<ms>` | `ferry export` sleeps after each committed batch |
//! | `FERRY_FAULT_EXPORT_DIE=<point>` | `ferry export` ends abruptly at `planned`, `data` or `written` |

#[cfg(feature = "fault-injection")]
mod points {
    use crate::spool::RelPath;
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    fn var(name: &'static str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
        cell.get_or_init(|| std::env::var(name).ok()).as_deref()
    }

    macro_rules! setting {
        ($name:literal) => {{
            static CELL: OnceLock<Option<String>> = OnceLock::new();
            var($name, &CELL)
        }};
    }

    pub fn read(rel: &RelPath) -> Option<io::Error> {
        static FAILED: AtomicU32 = AtomicU32::new(0);
        let (pat, n) = setting!("FERRY_FAULT_FAIL_READS")?.rsplit_once(':')?;
        let n: u32 = n.parse().ok()?;
        if !rel.display().contains(pat) || FAILED.fetch_add(1, Ordering::SeqCst) >= n {
            return None;
        }
        Some(io::Error::from_raw_os_error(libc::EIO))
    }

    pub fn open(rel: &RelPath) -> Option<io::Error> {
        let (flag, pat) = setting!("FERRY_FAULT_DENY_OPEN")?.rsplit_once(':')?;
        (rel.display().contains(pat) && Path::new(flag).exists())
            .then(|| io::Error::from_raw_os_error(libc::EACCES))
    }

    pub fn disk_full() -> Option<bool> {
        setting!("FERRY_FAULT_DISK_FULL").map(|flag| Path::new(flag).exists())
    }

    pub fn place() -> Option<io::Error> {
        let flag = setting!("FERRY_FAULT_FAIL_PLACE")?;
        Path::new(flag)
            .exists()
            .then(|| io::Error::from_raw_os_error(libc::ENOSPC))
    }

    pub fn before_claim(path: &Path, rel: &RelPath) {
        if setting!("FERRY_FAULT_CHANGE_BEFORE_CLAIM").is_some_and(|p| rel.display().contains(p)) {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
                let _ = f.write_all(b"\n");
            }
        }
    }

    pub fn between_passes(path: &Path, rel: &RelPath) {
        if !setting!("FERRY_FAULT_REWRITE_BETWEEN_PASSES")
            .is_some_and(|p| rel.display().contains(p))
        {
            return;
        }
        // Swap two digits in place, keep the size, put the mtime back: invisible to a stat.
        use std::io::{Read, Seek, SeekFrom, Write};
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        else {
            return;
        };
        let Ok(mtime) = f.metadata().and_then(|m| m.modified()) else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let Ok(n) = f.read(&mut buf) else { return };
        if let Some(i) = buf[..n].iter().position(u8::is_ascii_digit) {
            let b = if buf[i] == b'9' { b'8' } else { buf[i] + 1 };
            let _ = f
                .seek(SeekFrom::Start(i as u64))
                .and_then(|_| f.write_all(&[b]));
        }
        let _ = f.sync_all();
        let _ = f.set_modified(mtime);
    }

    pub fn crash_on(rel: &RelPath) {
        if setting!("FERRY_FAULT_ABORT_ON").is_some_and(|p| rel.display().contains(p)) {
            std::process::abort();
        }
    }

    pub fn stored_chunk(rel: &RelPath, chunks: u64) {
        let Some((pat, n)) = setting!("FERRY_FAULT_ABORT_STORING").and_then(|s| s.rsplit_once(':'))
        else {
            return;
        };
        if rel.display().contains(pat) && n.parse::<u64>().is_ok_and(|n| chunks >= n) {
            std::process::abort();
        }
    }

    pub fn slow() {
        if let Some(ms) = setting!("FERRY_FAULT_SLOW_MS").and_then(|v| v.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    pub fn export_pause() {
        if let Some(ms) = setting!("FERRY_FAULT_EXPORT_PAUSE_MS").and_then(|v| v.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    pub fn export_die(point: &str) {
        if setting!("FERRY_FAULT_EXPORT_DIE") == Some(point) {
            // SAFETY: `_exit` ends the process without running anything else, like a kill.
            unsafe { libc::_exit(137) };
        }
    }

    /// Dies after a receipt was written and before it was recorded as delivered.
    pub fn notice_die() {
        if setting!("FERRY_FAULT_NOTICE_DIE").is_some() {
            // SAFETY: as above.
            unsafe { libc::_exit(137) };
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod points {
    use crate::spool::RelPath;
    use std::io;
    use std::path::Path;

    #[inline(always)]
    pub fn read(_: &RelPath) -> Option<io::Error> {
        None
    }
    #[inline(always)]
    pub fn open(_: &RelPath) -> Option<io::Error> {
        None
    }
    #[inline(always)]
    pub fn disk_full() -> Option<bool> {
        None
    }
    #[inline(always)]
    pub fn place() -> Option<io::Error> {
        None
    }
    #[inline(always)]
    pub fn before_claim(_: &Path, _: &RelPath) {}
    #[inline(always)]
    pub fn between_passes(_: &Path, _: &RelPath) {}
    #[inline(always)]
    pub fn crash_on(_: &RelPath) {}
    #[inline(always)]
    pub fn stored_chunk(_: &RelPath, _: u64) {}
    #[inline(always)]
    pub fn slow() {}
    #[inline(always)]
    pub fn export_pause() {}
    #[inline(always)]
    pub fn export_die(_: &str) {}
    #[inline(always)]
    pub fn notice_die() {}
}

pub use points::*;
