//! The spool on disk: its folders, claims, owners and placement.
//!
//! Everything that renames an input file lives here, so the rules are in one place:
//! - a claim is an atomic rename from the incoming folder into `processing/` under a name that
//!   starts with the claiming process's owner token (`<token>.<seq>~<escaped relative path>`);
//! - every live process holds an exclusive lock on `processing/.owners/<token>`; a claim whose
//!   owner's lock can be taken belongs to a dead process and may be recovered;
//! - placement into `archive/` or `quarantine/` never replaces an existing file.
//!
//! This module does not open SQLite and does not read file contents.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The folders of one spool. Created on first use.
#[derive(Debug, Clone)]
pub struct Spool {
    pub root: PathBuf,
    pub incoming: PathBuf,
    pub processing: PathBuf,
    pub archive: PathBuf,
    pub quarantine: PathBuf,
    pub outgoing: PathBuf,
    pub db: PathBuf,
}

impl Spool {
    pub fn new(root: &Path, incoming: Option<&Path>) -> Spool {
        Spool {
            root: root.to_path_buf(),
            incoming: incoming
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.join("incoming")),
            processing: root.join("processing"),
            archive: root.join("archive"),
            quarantine: root.join("quarantine"),
            outgoing: root.join("outgoing"),
            db: root.join("ferry.db"),
        }
    }

    /// Creates the folders ferry writes to. The incoming folder is created too, so a fresh spool
    /// is ready to receive drops.
    pub fn ensure(&self) -> io::Result<()> {
        for d in [
            &self.root,
            &self.incoming,
            &self.processing,
            &self.archive,
            &self.quarantine,
        ] {
            fs::create_dir_all(d)?;
        }
        fs::create_dir_all(self.owners_dir())
    }

    fn owners_dir(&self) -> PathBuf {
        self.processing.join(".owners")
    }

    /// A path under the root, as stored in the ledger (relative, `/`-separated).
    pub fn relative(&self, p: &Path) -> String {
        let rel = p.strip_prefix(&self.root).unwrap_or(p);
        RelPath::from_relative(rel).map_or_else(|| p.display().to_string(), |r| r.display())
    }

    /// The folders inside the root that discovery must never walk into (when the folder being
    /// scanned contains the spool itself).
    pub fn internal_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.processing.clone(),
            self.archive.clone(),
            self.quarantine.clone(),
            self.outgoing.clone(),
        ]
    }
}

/// A path relative to the folder a file was found in. Built only from walking that folder, so it
/// never starts with `/` and never contains `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(PathBuf);

impl RelPath {
    /// Accepts only plain relative paths (no root, no `.` or `..` components).
    pub fn from_relative(p: &Path) -> Option<RelPath> {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => out.push(s),
                _ => return None,
            }
        }
        if out.as_os_str().is_empty() {
            None
        } else {
            Some(RelPath(out))
        }
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// `/`-separated, lossy for names that are not UTF-8 (for the ledger and for humans).
    pub fn display(&self) -> String {
        let parts: Vec<String> = self
            .0
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        parts.join("/")
    }

    /// The first folder, if the file is not at the top.
    pub fn first_dir(&self) -> Option<String> {
        let mut it = self.0.components();
        let first = it.next()?;
        it.next()?;
        Some(first.as_os_str().to_string_lossy().into_owned())
    }

    pub fn file_name(&self) -> &OsStr {
        self.0.file_name().unwrap_or_default()
    }

    pub fn parent(&self) -> Option<&Path> {
        self.0.parent().filter(|p| !p.as_os_str().is_empty())
    }
}

/// The longest file name most filesystems accept.
const NAME_MAX: usize = 255;

/// This process's identity for claims, held for its lifetime.
pub struct Owner {
    token: String,
    seq: AtomicU64,
    lock_path: PathBuf,
    _lock: File,
}

impl Owner {
    /// Creates and locks `processing/.owners/<token>`. Fails only on IO errors.
    pub fn register(spool: &Spool) -> io::Result<Owner> {
        fs::create_dir_all(spool.owners_dir())?;
        let token = new_token();
        let lock_path = spool.owners_dir().join(&token);
        let lock = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&lock_path)?;
        flock(&lock, libc::LOCK_EX)?;
        let mut l = &lock;
        let _ = writeln!(l, "pid {}", std::process::id());
        Ok(Owner {
            token,
            seq: AtomicU64::new(1),
            lock_path,
            _lock: lock,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn next_id(&self) -> String {
        format!(
            "{}.{}",
            self.token,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Claims `src` (found at `rel` in its folder) by renaming it into `processing/`.
    /// `Ok(None)` means another process took it first: not an error.
    pub fn claim(&self, spool: &Spool, src: &Path, rel: &RelPath) -> io::Result<Option<Claim>> {
        let id = self.next_id();
        let path = claim_path(spool, &id, rel)?;
        match fs::rename(src, &path) {
            Ok(()) => Ok(Some(Claim {
                id,
                path,
                rel: rel.clone(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !src_parent_missing(src) => Ok(None),
            Err(e) => {
                tidy_claim(spool, &id);
                Err(e)
            }
        }
    }

    /// Moves a leftover claim of a dead owner under this owner, so it is processed as ours.
    pub fn reclaim(&self, spool: &Spool, left: &Leftover) -> io::Result<Option<Claim>> {
        let claim = self.claim(spool, &left.path, &left.rel)?;
        if claim.is_some() {
            tidy_claim(spool, &left.claim_id);
        }
        Ok(claim)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Still holding the lock: nobody can be judging us dead while the file goes.
        let _ = fs::remove_file(&self.lock_path);
    }
}

fn src_parent_missing(src: &Path) -> bool {
    src.parent().is_some_and(|p| !p.exists())
}

/// A unique, filename-safe token: host, pid and start time.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let host = hostname_hash();
    format!(
        "{:06x}-{}-{}",
        host & 0xff_ffff,
        std::process::id(),
        base36(nanos as u64)
    )
}

fn hostname_hash() -> u64 {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf[..end].to_vec()
    } else {
        Vec::new()
    };
    // FNV-1a: stable across runs, which the std hasher is not.
    name.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// A file this process has claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `<owner token>.<seq>`: unique, recorded in the ledger.
    pub id: String,
    /// Where the file is now, under `processing/`.
    pub path: PathBuf,
    /// Where it was dropped, relative to the incoming folder.
    pub rel: RelPath,
}

/// Escapes a relative path into one file name: `%` → `%25`, `/` → `%2F`.
fn escape_rel(rel: &RelPath) -> OsString {
    let mut out = Vec::new();
    for (i, c) in rel.as_path().components().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"%2F");
        }
        for &b in c.as_os_str().as_bytes() {
            if b == b'%' {
                out.extend_from_slice(b"%25");
            } else {
                out.push(b);
            }
        }
    }
    OsString::from_vec(out)
}

fn unescape_rel(name: &[u8]) -> Option<RelPath> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            match name.get(i + 1..i + 3) {
                Some(b"25") => out.push(b'%'),
                Some(b"2F") => out.push(b'/'),
                _ => return None,
            }
            i += 3;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    RelPath::from_relative(Path::new(OsStr::from_bytes(&out)))
}

/// Where a claim goes: a flat name when it fits, else a folder named after the claim id holding
/// the relative path (only for very long paths).
fn claim_path(spool: &Spool, id: &str, rel: &RelPath) -> io::Result<PathBuf> {
    let mut flat = OsString::from(id);
    flat.push("~");
    flat.push(escape_rel(rel));
    if flat.len() <= NAME_MAX {
        return Ok(spool.processing.join(flat));
    }
    let path = spool.processing.join(id).join(rel.as_path());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(path)
}

/// Removes the folder of a nested claim (very long paths) once its file has left.
pub fn tidy_claim(spool: &Spool, id: &str) {
    let dir = spool.processing.join(id);
    if dir.is_dir() {
        // Only empty folders go; a file left inside keeps its folder.
        for e in walkdir::WalkDir::new(&dir)
            .contents_first(true)
            .into_iter()
            .flatten()
        {
            if e.file_type().is_dir() {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

/// A claim found in `processing/` whose owner is no longer alive.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub claim_id: String,
    pub path: PathBuf,
    pub rel: RelPath,
}

/// The lock of a dead owner, held while its leftovers are recovered; removed on drop.
pub struct DeadOwner {
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for DeadOwner {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Leftover claims of dead owners, with those owners' locks held until the caller is done.
pub struct Leftovers {
    pub files: Vec<Leftover>,
    pub owners: Vec<DeadOwner>,
}

/// Finds claims in `processing/` whose owner is dead. Claims of live processes (including this
/// one) are left alone.
pub fn leftovers(spool: &Spool, me: &Owner) -> io::Result<Leftovers> {
    let mut found: Vec<(String, Leftover)> = Vec::new();
    let entries = match fs::read_dir(&spool.processing) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Leftovers {
                files: vec![],
                owners: vec![],
            })
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            // A nested claim: the folder is the claim id, the file is at its relative path.
            let id = name.to_string_lossy().into_owned();
            let Some(token) = owner_of(&id) else { continue };
            for e in walkdir::WalkDir::new(entry.path()).min_depth(1) {
                let e = e.map_err(io::Error::other)?;
                if e.file_type().is_dir() {
                    continue;
                }
                let rel = e
                    .path()
                    .strip_prefix(entry.path())
                    .ok()
                    .and_then(RelPath::from_relative);
                if let Some(rel) = rel {
                    found.push((
                        token.to_string(),
                        Leftover {
                            claim_id: id.clone(),
                            path: e.path().to_path_buf(),
                            rel,
                        },
                    ));
                }
            }
        } else if let Some(tilde) = bytes.iter().position(|&b| b == b'~') {
            let id = String::from_utf8_lossy(&bytes[..tilde]).into_owned();
            let (Some(token), Some(rel)) = (owner_of(&id), unescape_rel(&bytes[tilde + 1..]))
            else {
                continue;
            };
            found.push((
                token.to_string(),
                Leftover {
                    claim_id: id.clone(),
                    path: entry.path(),
                    rel,
                },
            ));
        }
    }

    let mut tokens: Vec<String> = found.iter().map(|(t, _)| t.clone()).collect();
    tokens.sort();
    tokens.dedup();
    let mut owners = Vec::new();
    let mut dead = std::collections::HashSet::new();
    for token in tokens {
        if token == me.token {
            continue;
        }
        if let Some(guard) = take_if_dead(spool, &token)? {
            owners.push(guard);
            dead.insert(token);
        }
    }
    let mut files: Vec<Leftover> = found
        .into_iter()
        .filter(|(t, _)| dead.contains(t))
        .map(|(_, l)| l)
        .collect();
    files.sort_by(|a, b| a.claim_id.cmp(&b.claim_id));
    Ok(Leftovers { files, owners })
}

fn owner_of(claim_id: &str) -> Option<&str> {
    let (token, seq) = claim_id.rsplit_once('.')?;
    seq.parse::<u64>().ok()?;
    Some(token)
}

fn take_if_dead(spool: &Spool, token: &str) -> io::Result<Option<DeadOwner>> {
    let lock_path = spool.owners_dir().join(token);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(DeadOwner {
            lock_path,
            _lock: f,
        })),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
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

/// Moves `from` to `to`, creating `to`'s folder, and never replacing an existing file.
pub fn place(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    rename_noreplace(from, to)
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let f = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let t = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: check, then rename.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            rename_checked(from, to)
        }
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rename_checked(from, to)
}

fn rename_checked(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        ));
    }
    fs::rename(from, to)
}

/// Writes `bytes` to `path` so that `path` is never seen half-written: temp name, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Copies `from` to `to` (never replacing), via a temp name and fsync.
pub fn copy_into(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(to.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        // Copy the link itself, never its target.
        let target = fs::read_link(from)?;
        std::os::unix::fs::symlink(target, &tmp)?;
    } else {
        fs::copy(from, &tmp)?;
        File::open(&tmp)?.sync_all()?;
    }
    let r = rename_noreplace(&tmp, to);
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Fsyncs a folder, making renames into it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Adds `suffix` to a file name before its extension(s): `orders.csv.gz` + `~7` →
/// `orders~7.csv.gz`.
pub fn name_with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let bytes = name.as_bytes();
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
    // A leading dot is not an extension separator.
    let cut = cut.filter(|&c| c > 0).unwrap_or(bytes.len());
    let mut out = bytes[..cut].to_vec();
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(&bytes[cut..]);
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_round_trip() {
        for p in ["a.csv", "sales/2026/a%b.csv", "x/%2F/y.json"] {
            let rel = RelPath::from_relative(Path::new(p)).unwrap();
            let esc = escape_rel(&rel);
            assert!(!esc.as_bytes().contains(&b'/'));
            assert_eq!(unescape_rel(esc.as_bytes()).unwrap(), rel);
        }
    }

    #[test]
    fn relpaths_refuse_escapes() {
        assert!(RelPath::from_relative(Path::new("../x")).is_none());
        assert!(RelPath::from_relative(Path::new("/etc/passwd")).is_none());
        let r = RelPath::from_relative(Path::new("sales/q1/a.csv")).unwrap();
        assert_eq!(r.first_dir().as_deref(), Some("sales"));
        assert_eq!(
            RelPath::from_relative(Path::new("a.csv"))
                .unwrap()
                .first_dir(),
            None
        );
    }

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
    fn owners_are_alive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), None);
        spool.ensure().unwrap();
        let a = Owner::register(&spool).unwrap();
        let b = Owner::register(&spool).unwrap();
        fs::write(spool.incoming.join("x.csv"), "a\n1\n").unwrap();
        let rel = RelPath::from_relative(Path::new("x.csv")).unwrap();
        let c = a
            .claim(&spool, &spool.incoming.join("x.csv"), &rel)
            .unwrap()
            .unwrap();
        assert!(c.path.exists());
        // `a` is alive: `b` sees nothing to recover.
        assert!(leftovers(&spool, &b).unwrap().files.is_empty());
        // A second claim of the same source loses the race quietly.
        assert!(a
            .claim(&spool, &spool.incoming.join("x.csv"), &rel)
            .unwrap()
            .is_none());
        // A claim left by an owner whose lock nobody holds is recoverable, and its lock goes
        // once the recoverer is done with it.
        fs::write(spool.processing.join("dead-1-x.3~sales%2Fy.csv"), "a\n").unwrap();
        let left = leftovers(&spool, &b).unwrap();
        assert_eq!(left.files.len(), 1);
        assert_eq!(left.files[0].claim_id, "dead-1-x.3");
        assert_eq!(left.files[0].rel.display(), "sales/y.csv");
        drop(left);
        assert!(!spool.owners_dir().join("dead-1-x").exists());
        let a_lock = spool.owners_dir().join(a.token());
        drop(a);
        assert!(!a_lock.exists());
        assert!(spool.owners_dir().join(b.token()).exists());
    }
}
