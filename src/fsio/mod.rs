//! Filesystem primitives every part of ferry shares, so each rule lives in one place:
//! - input files are opened without following links and without blocking (`open_nofollow`), and
//!   only regular files are ever read (`open_regular`): a FIFO or device in a drop folder could
//!   block a reader forever;
//! - a file appears under its final name only complete (`write_atomic`: temp name, fsync, rename;
//!   the temp file is removed if anything fails);
//! - a move never replaces an existing file (`rename_noreplace`);
//! - names ferry makes fit the filesystem's 255-byte limit with room for sidecars (`fit_name`);
//! - inside the spool, a path is walked from the root folder by folder without following links
//!   (`beneath`), so a folder replaced by a symlink never leads a write or a removal elsewhere.
//!
//! Nothing here knows about the spool's layout or the ledger.

pub mod beneath;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The longest file name most filesystems accept.
pub const NAME_MAX: usize = 255;

/// Suffix of ferry's temp files (hidden: their names start with a dot).
pub const TEMP_SUFFIX: &str = ".ferry-tmp";

/// Opens a file for reading without following a symlink (`ELOOP`) and without blocking on a
/// FIFO. The caller checks the file type with `metadata()` on the handle.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a regular file for reading; anything else (a link, a FIFO, a device) is an error that
/// names the path, and is never read.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = open_nofollow(path).map_err(|e| with_path(e, "cannot open", path))?;
    let meta = f
        .metadata()
        .map_err(|e| with_path(e, "cannot look at", path))?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (a FIFO, socket, device or folder)",
                path.display()
            ),
        ));
    }
    Ok(f)
}

/// Adds what was being done and to which path to an IO error: "cannot open /x: Permission
/// denied (os error 13)".
pub fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// `<dir>/.<name>.<pid>.ferry-tmp`: where `name` is written before it is renamed into place
/// (a long name is cut to fit, keeping its beginning).
pub fn temp_path(dir: &Path, name: &OsStr) -> PathBuf {
    let tail = format!(".{}{TEMP_SUFFIX}", std::process::id());
    let mut t = OsString::from(".");
    t.push(fit_name(name, 1 + tail.len()));
    t.push(tail);
    dir.join(t)
}

/// Writes `bytes` to `path` so that `path` is never seen half-written: temp name, fsync, rename.
/// The temp file is removed if any step fails. The folder is not fsynced (callers that need the
/// rename durable call `sync_dir`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, path.file_name().unwrap_or_default());
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(|e| with_path(e, "cannot write", path))
}

/// Moves `from` to `to`, creating `to`'s folder, and never replacing an existing file.
pub fn place(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    rename_noreplace(from, to)
}

/// Renames `from` to `to`, never replacing what is at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cstr =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    beneath::renameat_noreplace(libc::AT_FDCWD, &cstr(from)?, libc::AT_FDCWD, &cstr(to)?)
}

/// Fsyncs a folder, making renames into it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a valid, open file descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// An exclusive, non-blocking lock on a file: `Ok(None)` when someone else holds it.
pub fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where a file name's extension(s) start (`.csv`, `.csv.gz`), or its length if it has none.
fn extension_start(bytes: &[u8]) -> usize {
    let lower = bytes.to_ascii_lowercase();
    let compound = [".gz", ".bz2", ".zst", ".xz"]
        .iter()
        .any(|c| lower.ends_with(c.as_bytes()));
    let mut cut = bytes.iter().rposition(|&b| b == b'.');
    if compound {
        if let Some(c) = cut {
            cut = bytes[..c].iter().rposition(|&b| b == b'.').or(Some(c));
        }
    }
    // A leading dot is not an extension separator; a very long "extension" is not one either.
    cut.filter(|&c| c > 0 && bytes.len() - c <= 16)
        .unwrap_or(bytes.len())
}

/// Adds `suffix` to a file name before its extension(s): `orders.csv.gz` + `~7` →
/// `orders~7.csv.gz`.
pub fn name_with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let bytes = name.as_bytes();
    let cut = extension_start(bytes);
    let mut out = bytes[..cut].to_vec();
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(&bytes[cut..]);
    OsString::from_vec(out)
}

/// A file name that fits `NAME_MAX` with `reserve` bytes to spare (for a sidecar suffix such
/// as `.reason.json`): unchanged when it fits, else its stem is cut (keeping the extension) and
/// a hash of the whole name is added, so two long names that share a beginning stay apart.
pub fn fit_name(name: &OsStr, reserve: usize) -> OsString {
    let bytes = name.as_bytes();
    if bytes.len() + reserve <= NAME_MAX {
        return name.to_os_string();
    }
    use sha2::{Digest, Sha256};
    let tag: String = Sha256::digest(bytes)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tag = format!("~{tag}");
    let ext = &bytes[extension_start(bytes)..];
    let mut keep = NAME_MAX
        .saturating_sub(reserve + ext.len() + tag.len())
        .min(bytes.len());
    // Do not cut a UTF-8 character in half.
    while keep > 0 && keep < bytes.len() && (bytes[keep] & 0xC0) == 0x80 {
        keep -= 1;
    }
    let mut out = bytes[..keep].to_vec();
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(ext);
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_go_before_extensions() {
        let f = |n: &str| name_with_suffix(OsStr::new(n), "~7").into_string().unwrap();
        assert_eq!(f("orders.csv"), "orders~7.csv");
        assert_eq!(f("orders.csv.gz"), "orders~7.csv.gz");
        assert_eq!(f("README"), "README~7");
        assert_eq!(f(".hidden"), ".hidden~7");
        assert_eq!(f("a.b.json"), "a.b~7.json");
    }

    #[test]
    fn long_names_are_cut_to_fit_with_their_sidecars() {
        let long = format!("{}.csv.gz", "é".repeat(150));
        let fit = fit_name(OsStr::new(&long), ".rejects.ndjson".len());
        assert!(fit.len() + 15 <= NAME_MAX, "{}", fit.len());
        let s = fit.to_str().expect("still UTF-8");
        assert!(s.ends_with(".csv.gz") && s.starts_with("éé"), "{s}");
        let other = fit_name(OsStr::new(&format!("{}x.csv.gz", "é".repeat(150))), 15);
        assert_ne!(fit, other);
        assert_eq!(fit_name(OsStr::new("short.csv"), 15), "short.csv");
        let full = OsString::from("x".repeat(255));
        let tmp = temp_path(Path::new("/d"), &full);
        assert!(tmp.file_name().unwrap().len() <= NAME_MAX);
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".xxx"));
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path for mkfifo.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let copy = dir.path().join("copy");
        let (d, name) = beneath::parent(dir.path(), &copy, false).unwrap();
        assert!(d.copy_in(&fifo, name).is_err());
        assert!(!dir.path().join("copy").exists());
    }
}
