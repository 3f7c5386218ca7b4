//! Claims and owners: who works on which file.
//!
//! - a claim is an atomic rename from the incoming folder into `processing/` under a name that
//!   starts with the claiming process's owner token (`<token>.<seq>~<escaped relative path>`);
//!   a file taken back from a process that died with it carries how many times a worker started
//!   on it (`<token>.<seq>!<starts>~…`; a plain claim is one start), so a file that crashes
//!   ferry is set aside after `max_attempts` starts instead of crashing every start;
//! - every live process proves it is alive (`Liveness`): on one host by an exclusive lock on
//!   `processing/.owners/<token>` (`FileLocks`); with a store shared by several hosts, by a lease
//!   in the store. A claim whose owner is dead may be recovered, by one process at a time.

use super::{RelPath, Spool};
use crate::fsio::beneath::Dir;
use crate::fsio::{self, NAME_MAX};
use crate::hash::FileHash;
use crate::store::RemoteKey;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How owners of claims prove they are alive, and how a dead one is recognized.
pub trait Liveness: Send + Sync {
    /// Registers a new owner, alive until the guard is dropped.
    fn register(&self, token: &str) -> anyhow::Result<Box<dyn Alive>>;
    /// Takes over a dead owner for `me` (`Some`: the guard keeps other processes from
    /// recovering the same claims until dropped); `None` while it is alive, or while another
    /// process recovers it.
    fn take_if_dead(&self, token: &str, me: &str) -> anyhow::Result<Option<Box<dyn Send>>>;
    /// Whether any of these owners is dead (a look, taking nothing over).
    fn any_dead(&self, tokens: &[String]) -> anyhow::Result<bool>;
    /// Removes the bookkeeping of dead owners other than `me` that left no claims (a crash
    /// between claims, a daemon crash-looping); returns how many. Owners that left claims are
    /// removed when their claims are recovered.
    fn sweep(&self, me: &str, claimed: &[String]) -> anyhow::Result<usize>;
}

/// An owner lock file younger than this is never swept: between its creation and its lock, a
/// starting process's file is free.
const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A registered owner's hold on being alive.
pub trait Alive: Send + Sync {
    /// False once other processes may judge this owner dead (a lease that lapsed): it must
    /// stop claiming, and commits on its behalf are refused.
    fn alive(&self) -> bool {
        true
    }
}

/// Liveness on one host: every live process holds an exclusive lock on
/// `processing/.owners/<token>`; the lock of a dead process is free.
pub struct FileLocks {
    dir: PathBuf,
}

impl FileLocks {
    pub fn new(spool: &Spool) -> FileLocks {
        FileLocks {
            dir: spool.owners_dir(),
        }
    }
}

/// A held owner lock; the file goes with it.
struct OwnerLock {
    path: PathBuf,
    _lock: File,
}

impl Alive for OwnerLock {}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Still holding the lock: nobody can be judging us dead while the file goes.
        let _ = fs::remove_file(&self.path);
    }
}

impl Liveness for FileLocks {
    fn register(&self, token: &str) -> anyhow::Result<Box<dyn Alive>> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(token);
        let lock = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        fsio::flock(&lock, libc::LOCK_EX)?;
        let mut l = &lock;
        let _ = writeln!(l, "pid {}", std::process::id());
        Ok(Box::new(OwnerLock { path, _lock: lock }))
    }

    fn take_if_dead(&self, token: &str, _me: &str) -> anyhow::Result<Option<Box<dyn Send>>> {
        let path = self.dir.join(token);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match fsio::flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Box::new(OwnerLock { path, _lock: f }))),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn sweep(&self, me: &str, claimed: &[String]) -> anyhow::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut swept = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == me || claimed.contains(&name) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= SWEEP_AFTER));
            if !old {
                continue;
            }
            let Ok(f) = OpenOptions::new().write(true).open(entry.path()) else {
                continue;
            };
            // Holding its lock: its owner is dead, and nobody else judges it meanwhile.
            if fsio::flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
                && fs::remove_file(entry.path()).is_ok()
            {
                swept += 1;
            }
        }
        Ok(swept)
    }

    fn any_dead(&self, tokens: &[String]) -> anyhow::Result<bool> {
        for t in tokens {
            let Ok(f) = File::open(self.dir.join(t)) else {
                // No lock file at all: its owner is gone.
                return Ok(true);
            };
            match fsio::flock(&f, libc::LOCK_SH | libc::LOCK_NB) {
                Ok(()) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }
}

/// This process's identity for claims, held for its lifetime.
pub struct Owner {
    token: String,
    seq: AtomicU64,
    alive: Box<dyn Alive>,
}

impl Owner {
    /// Registers a new owner with `liveness`.
    pub fn register(liveness: &dyn Liveness) -> anyhow::Result<Owner> {
        let token = new_token();
        let alive = liveness.register(&token)?;
        Ok(Owner {
            token,
            seq: AtomicU64::new(1),
            alive,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this owner still counts as alive (see `Alive::alive`).
    pub fn alive(&self) -> bool {
        self.alive.alive()
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
        let taken = || !src_parent_missing(src);
        self.claim_with(spool, rel, 0, |to| fs::rename(src, to), taken)
    }

    /// Claims the file `name` of a folder inside the spool held open (`fsio::beneath`), so a
    /// folder replaced by a link meanwhile never makes the claim take a file from elsewhere.
    pub fn claim_in(
        &self,
        spool: &Spool,
        dir: &Dir,
        name: &OsStr,
        rel: &RelPath,
    ) -> io::Result<Option<Claim>> {
        self.claim_with(spool, rel, 0, |to| dir.move_out(name, to), || true)
    }

    /// Moves a file into `processing/` under a new claim name with `move_to`; a file that
    /// is not there (`NotFound`, when `taken_meanwhile` says another process took it) is
    /// `Ok(None)`.
    fn claim_with(
        &self,
        spool: &Spool,
        rel: &RelPath,
        starts: u32,
        move_to: impl FnOnce(&Path) -> io::Result<()>,
        taken_meanwhile: impl FnOnce() -> bool,
    ) -> io::Result<Option<Claim>> {
        let id = self.next_id();
        let path = claim_path(spool, &id, starts, rel)?;
        let claim = Claim {
            id,
            path,
            rel: rel.clone(),
            starts,
            origin: None,
            fetched: None,
        };
        match move_to(&claim.path) {
            Ok(()) => Ok(Some(claim)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && taken_meanwhile() => {
                claim.tidy(spool);
                Ok(None)
            }
            Err(e) => {
                claim.tidy(spool);
                Err(e)
            }
        }
    }

    /// Claims a file downloaded from a remote source (`download`, a temp file inside the
    /// spool) as if it had been dropped at `rel`: renamed into `processing/` under a new claim
    /// name, carrying the remote file it came from.
    pub fn claim_fetched(
        &self,
        spool: &Spool,
        download: &Path,
        rel: &RelPath,
        (origin, hashed): (Arc<RemoteKey>, (FileHash, u64)),
    ) -> io::Result<Claim> {
        let claim = self.claim_with(spool, rel, 0, |to| fs::rename(download, to), || false)?;
        let mut claim = claim.ok_or_else(|| io::Error::other("the download is gone"))?;
        claim.origin = Some(origin);
        claim.fetched = Some(hashed);
        Ok(claim)
    }

    /// Moves a leftover claim of a dead owner under this owner, so it is processed as ours. It
    /// keeps its count of starts (`Claim::started` adds to it when a worker starts on it).
    pub fn reclaim(&self, spool: &Spool, left: &Leftover) -> io::Result<Option<Claim>> {
        let src = &left.path;
        let claim = self.claim_with(
            spool,
            &left.rel,
            left.starts,
            |to| fs::rename(src, to),
            || !src_parent_missing(src),
        )?;
        if claim.is_some() {
            tidy_nested(spool, &left.path);
        }
        Ok(claim)
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
    /// The remote file it was downloaded from (`None`: dropped locally, or a leftover taken
    /// back — its remote claim is reconciled through the store, see `remote::pull`).
    pub origin: Option<Arc<RemoteKey>>,
    /// For a download: the SHA-256 and length of the bytes written, computed as they were.
    pub fetched: Option<(FileHash, u64)>,
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

/// Leftover claims of dead owners, with those owners taken over until the caller is done.
pub struct Leftovers {
    pub files: Vec<Leftover>,
    /// Held, not read: while these are held no other process recovers the same leftovers.
    _owners: Vec<Box<dyn Send>>,
}

/// The owners of the claims in `processing/`, other than `me` (a cheap look: no liveness).
pub fn claim_owners(spool: &Spool, me: &Owner) -> io::Result<Vec<String>> {
    let mut tokens: Vec<String> = claims_in(spool)?
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t != me.token)
        .collect();
    tokens.sort();
    tokens.dedup();
    Ok(tokens)
}

/// Finds claims in `processing/` whose owner is dead. Claims of live processes (including this
/// one) are left alone. Dead owners that left no claims are swept away on the way.
pub fn leftovers(spool: &Spool, me: &Owner, liveness: &dyn Liveness) -> anyhow::Result<Leftovers> {
    let found = claims_in(spool)?;
    let mut tokens: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    tokens.sort();
    tokens.dedup();
    let claimed: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    match liveness.sweep(&me.token, &claimed) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(owners = n, "removed the bookkeeping of dead processes"),
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot sweep dead owners"),
    }
    let mut owners = Vec::new();
    let mut dead = std::collections::HashSet::new();
    for token in tokens {
        if token == me.token {
            continue;
        }
        if let Some(guard) = liveness.take_if_dead(token, &me.token)? {
            owners.push(guard);
            dead.insert(token.to_string());
        }
    }
    let mut files: Vec<Leftover> = found
        .into_iter()
        .filter(|(t, _)| dead.contains(t))
        .map(|(_, l)| l)
        .collect();
    files.sort_by(|a, b| a.claim_id.cmp(&b.claim_id));
    Ok(Leftovers {
        files,
        _owners: owners,
    })
}

/// Every claim in `processing/`, with its owner's token.
fn claims_in(spool: &Spool) -> io::Result<Vec<(String, Leftover)>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(&spool.processing) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            nested_claims(&entry.path(), &name.to_string_lossy(), &mut found)?;
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
    Ok(found)
}

/// A nested claim (very long paths): the folder is the claim, the file is at its relative path.
fn nested_claims(dir: &Path, prefix: &str, found: &mut Vec<(String, Leftover)>) -> io::Result<()> {
    let (id, starts) = split_prefix(prefix);
    let Some(token) = owner_of(id) else {
        return Ok(());
    };
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.map_err(io::Error::other)?;
        if e.file_type().is_dir() {
            continue;
        }
        if let Some(rel) = e
            .path()
            .strip_prefix(dir)
            .ok()
            .and_then(RelPath::from_relative)
        {
            found.push((
                token.to_string(),
                Leftover {
                    claim_id: id.to_string(),
                    path: e.path().to_path_buf(),
                    rel,
                    starts,
                },
            ));
        }
    }
    Ok(())
}

fn owner_of(claim_id: &str) -> Option<&str> {
    let (token, seq) = claim_id.rsplit_once('.')?;
    seq.parse::<u64>().ok()?;
    Some(token)
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
    fn owners_are_alive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), None);
        spool.ensure().unwrap();
        let locks = FileLocks::new(&spool);
        let a = Owner::register(&locks).unwrap();
        let b = Owner::register(&locks).unwrap();
        fs::write(spool.incoming.join("x.csv"), "a\n1\n").unwrap();
        let rel = RelPath::from_relative(Path::new("x.csv")).unwrap();
        let c = a
            .claim(&spool, &spool.incoming.join("x.csv"), &rel)
            .unwrap()
            .unwrap();
        assert!(c.path.exists());
        // `a` is alive: `b` sees nothing to recover.
        assert!(leftovers(&spool, &b, &locks).unwrap().files.is_empty());
        // A second claim of the same source loses the race quietly.
        assert!(a
            .claim(&spool, &spool.incoming.join("x.csv"), &rel)
            .unwrap()
            .is_none());
        // A claim left by an owner whose lock nobody holds is recoverable, and its lock goes
        // once the recoverer is done with it.
        fs::write(spool.processing.join("dead-1-x.3~sales%2Fy.csv"), "a\n").unwrap();
        fs::write(spool.processing.join("dead-1-x.4!2~z.csv"), "a\n").unwrap();
        let left = leftovers(&spool, &b, &locks).unwrap();
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
