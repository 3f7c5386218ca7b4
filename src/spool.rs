//! The spool on disk: its folders, claims, owners and placement.
//!
//! Everything that renames an input file lives here, so the rules are in one place:
//! - a claim is an atomic rename from the incoming folder into `processing/` under a name that
//!   starts with the claiming process's owner token (`<token>.<seq>~<escaped relative path>`);
//!   a file taken back from a process that died with it carries how many times a worker started
//!   on it (`<token>.<seq>!<starts>~…`; a plain claim is one start), so a file that crashes
//!   ferry is set aside after `max_attempts` starts instead of crashing every start;
//! - every live process holds an exclusive lock on `processing/.owners/<token>`; a claim whose
//!   owner's lock can be taken belongs to a dead process and may be recovered;
//! - placement into `archive/` or `quarantine/` never replaces an existing file.
//!
//! This module does not open SQLite and does not read file contents.

use crate::fsio::{self, NAME_MAX};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

    /// Whether a spool is here already (its ledger, or its incoming or processing folder).
    pub fn exists(&self) -> bool {
        self.root.is_dir()
            && (self.db.exists() || self.incoming.is_dir() || self.processing.is_dir())
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

    /// A path under the root, as stored in the ledger (relative, `/`-separated, exact: see
    /// `RelPath::display`).
    pub fn relative(&self, p: &Path) -> String {
        let rel = p.strip_prefix(&self.root).unwrap_or(p);
        RelPath::from_relative(rel).map_or_else(|| p.display().to_string(), |r| r.display())
    }

    /// The path a ledger's `relative` path names.
    pub fn resolve(&self, stored: &str) -> PathBuf {
        match RelPath::from_display(stored) {
            Some(r) => self.root.join(r.as_path()),
            None => self.root.join(stored),
        }
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

    /// `/`-separated text that names the exact bytes (for the ledger and for humans): a byte
    /// that is not UTF-8 is written `%XX`, and a `%` that would read as such an escape is written
    /// `%25`. Names that are plain UTF-8 without `%XX` look as they are. Two different paths never
    /// display the same, and `from_display` gives the path back.
    pub fn display(&self) -> String {
        let parts: Vec<String> = self
            .0
            .components()
            .map(|c| escape_name(c.as_os_str().as_bytes()))
            .collect();
        parts.join("/")
    }

    /// The path a `display` string names.
    pub fn from_display(s: &str) -> Option<RelPath> {
        let mut out = PathBuf::new();
        for part in s.split('/') {
            out.push(OsStr::from_bytes(&unescape_name(part)));
        }
        RelPath::from_relative(&out)
    }

    /// The first folder (as `display` writes it), if the file is not at the top.
    pub fn first_dir(&self) -> Option<String> {
        let mut it = self.0.components();
        let first = it.next()?;
        it.next()?;
        Some(escape_name(first.as_os_str().as_bytes()))
    }

    pub fn file_name(&self) -> &OsStr {
        self.0.file_name().unwrap_or_default()
    }

    pub fn parent(&self) -> Option<&Path> {
        self.0.parent().filter(|p| !p.as_os_str().is_empty())
    }
}

fn is_hex(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_hexdigit)
}

/// A name's bytes as text that keeps them exact (see `RelPath::display`).
fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => (
                std::str::from_utf8(&rest[..e.valid_up_to()]).expect("checked"),
                e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
            ),
        };
        let vb = valid.as_bytes();
        for (i, c) in valid.char_indices() {
            if c == '%' && is_hex(vb.get(i + 1)) && is_hex(vb.get(i + 2)) {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        let after = &rest[vb.len()..];
        for b in &after[..bad] {
            let _ = write!(out, "%{b:02X}");
        }
        rest = &after[bad..];
    }
    out
}

/// The bytes `escape_name` wrote as text.
fn unescape_name(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && is_hex(b.get(i + 1)) && is_hex(b.get(i + 2)) {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

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
        fsio::flock(&lock, libc::LOCK_EX)?;
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
        self.claim_with(spool, src, rel, 0)
    }

    fn claim_with(
        &self,
        spool: &Spool,
        src: &Path,
        rel: &RelPath,
        starts: u32,
    ) -> io::Result<Option<Claim>> {
        let id = self.next_id();
        let path = claim_path(spool, &id, starts, rel)?;
        let claim = Claim {
            id,
            path,
            rel: rel.clone(),
            starts,
        };
        match fs::rename(src, &claim.path) {
            Ok(()) => Ok(Some(claim)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !src_parent_missing(src) => {
                claim.tidy(spool);
                Ok(None)
            }
            Err(e) => {
                claim.tidy(spool);
                Err(e)
            }
        }
    }

    /// Moves a leftover claim of a dead owner under this owner, so it is processed as ours. It
    /// keeps its count of starts (`Claim::started` adds to it when a worker starts on it).
    pub fn reclaim(&self, spool: &Spool, left: &Leftover) -> io::Result<Option<Claim>> {
        let claim = self.claim_with(spool, &left.path, &left.rel, left.starts)?;
        if claim.is_some() {
            tidy_nested(spool, &left.path);
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
    /// For a file taken back from a process that died: how many times a worker started on it
    /// (each start ended with a dead process). 0 for a plain claim (started once, now).
    pub starts: u32,
}

impl Claim {
    /// A worker starts on a file taken back from a dead process: one more start, recorded in
    /// the claim's name, so that if this process dies too the next start knows. A plain claim
    /// needs nothing (a leftover without a count was started once).
    pub fn started(&mut self, spool: &Spool) -> io::Result<()> {
        if self.starts == 0 {
            return Ok(());
        }
        let to = claim_path(spool, &self.id, self.starts + 1, &self.rel)?;
        fs::rename(&self.path, &to)?;
        tidy_nested(spool, &self.path);
        self.path = to;
        self.starts += 1;
        Ok(())
    }

    /// Removes the claim's own folder (very long paths only) once its file has left.
    pub fn tidy(&self, spool: &Spool) {
        tidy_nested(spool, &self.path);
    }
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

/// The name prefix of a claim: its id, and `!<starts>` for a file taken back from a dead
/// process.
fn claim_prefix(id: &str, starts: u32) -> String {
    if starts == 0 {
        id.to_string()
    } else {
        format!("{id}!{starts}")
    }
}

/// A leftover's claim prefix back into its id and how many times it was started (a plain claim
/// was started once).
fn split_prefix(prefix: &str) -> (&str, u32) {
    match prefix.split_once('!') {
        Some((id, n)) => (id, n.parse().unwrap_or(1).max(1)),
        None => (prefix, 1),
    }
}

/// Where a claim goes: a flat name when it fits, else a folder named after the claim holding
/// the relative path (only for very long paths).
fn claim_path(spool: &Spool, id: &str, starts: u32, rel: &RelPath) -> io::Result<PathBuf> {
    let prefix = claim_prefix(id, starts);
    let mut flat = OsString::from(&prefix);
    flat.push("~");
    flat.push(escape_rel(rel));
    if flat.len() <= NAME_MAX {
        return Ok(spool.processing.join(flat));
    }
    let path = spool.processing.join(prefix).join(rel.as_path());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(path)
}

/// Removes the folder of a nested claim (very long paths) once its file has left; nothing for a
/// flat claim.
fn tidy_nested(spool: &Spool, claim_path: &Path) {
    let Ok(rel) = claim_path.strip_prefix(&spool.processing) else {
        return;
    };
    let mut parts = rel.components();
    let (Some(first), Some(_)) = (parts.next(), parts.next()) else {
        return;
    };
    let dir = spool.processing.join(first);
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
    /// How many times a worker started on it (each start ended with a dead process).
    pub starts: u32,
}

impl Leftover {
    /// Removes the leftover's claim folder (very long paths only) once its file has left.
    pub fn tidy(&self, spool: &Spool) {
        tidy_nested(spool, &self.path);
    }
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
            // A nested claim: the folder is the claim, the file is at its relative path.
            let prefix = name.to_string_lossy().into_owned();
            let (id, starts) = split_prefix(&prefix);
            let id = id.to_string();
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
                            starts,
                        },
                    ));
                }
            }
        } else if let Some(tilde) = bytes.iter().position(|&b| b == b'~') {
            let prefix = String::from_utf8_lossy(&bytes[..tilde]).into_owned();
            let (id, starts) = split_prefix(&prefix);
            let (Some(token), Some(rel)) = (owner_of(id), unescape_rel(&bytes[tilde + 1..])) else {
                continue;
            };
            found.push((
                token.to_string(),
                Leftover {
                    claim_id: id.to_string(),
                    path: entry.path(),
                    rel,
                    starts,
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
    match fsio::flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(DeadOwner {
            lock_path,
            _lock: f,
        })),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
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
    fn displayed_paths_keep_the_exact_bytes() {
        let cases: [&[u8]; 8] = [
            b"sales/a.csv",
            b"caf\xe9/a.csv",
            b"caf\xc3\xa9/a.csv",
            b"caf%E9/a.csv",
            b"100%/x%2.csv",
            b"%25/%%41\xff",
            b"a\xff\xfe%/b",
            b"\xe2\x82/x",
        ];
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            let rel = RelPath::from_relative(Path::new(OsStr::from_bytes(c))).unwrap();
            let shown = rel.display();
            assert!(seen.insert(shown.clone()), "{shown} twice");
            assert_eq!(RelPath::from_display(&shown), Some(rel), "{shown}");
        }
        let plain = RelPath::from_relative(Path::new("100%/café.csv")).unwrap();
        assert_eq!(plain.display(), "100%/café.csv");
        let raw = RelPath::from_relative(Path::new(OsStr::from_bytes(b"caf\xe9/a"))).unwrap();
        assert_eq!(raw.first_dir().as_deref(), Some("caf%E9"));
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
        fs::write(spool.processing.join("dead-1-x.4!2~z.csv"), "a\n").unwrap();
        let left = leftovers(&spool, &b).unwrap();
        assert_eq!(left.files.len(), 2);
        assert_eq!(left.files[0].claim_id, "dead-1-x.3");
        assert_eq!(left.files[0].rel.display(), "sales/y.csv");
        assert_eq!(left.files[0].starts, 1, "a plain claim was started once");
        assert_eq!(
            (left.files[1].claim_id.as_str(), left.files[1].starts),
            ("dead-1-x.4", 2)
        );
        // Taking it back keeps the count; starting on it adds one, in the claim's name.
        let mut c = b.reclaim(&spool, &left.files[1]).unwrap().unwrap();
        assert_eq!(c.starts, 2);
        assert!(c
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("!2~z.csv"));
        c.started(&spool).unwrap();
        assert_eq!(c.starts, 3);
        assert!(c
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("!3~z.csv"));
        assert_eq!(fs::read(&c.path).unwrap(), b"a\n");
        drop(left);
        assert!(!spool.owners_dir().join("dead-1-x").exists());
        let a_lock = spool.owners_dir().join(a.token());
        drop(a);
        assert!(!a_lock.exists());
        assert!(spool.owners_dir().join(b.token()).exists());
    }
}
