//! Containers: what partners wrap files in — zip, tar and tar.gz archives, OpenPGP encryption
//! and signatures — opened before any parsing.
//!
//! A container's members are written one at a time into the spool (`processing/.unpack/`),
//! hashed while written, and handed on as files of their own: their paths (the container's
//! folder plus the member's own folders) choose their datasets, their content is their
//! identity, and they are parsed exactly as a file dropped in `incoming/` would be. Member
//! names never become paths: each is checked (`member_path`) and spilled under a number.
//! The work is bounded by the container's settings (`Unpack`): total bytes, expansion over the
//! container's size, number of members, one level of nesting (an archive inside an OpenPGP
//! file; never an archive inside an archive). Nothing here knows the store.

mod archive;
mod pgp;

use crate::config::Unpack;
use crate::hash::{FileHash, Hasher};
use crate::reject::{Kind, Reject, Stage};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

/// Expansion below this many bytes is never a bomb, whatever the ratio.
pub const RATIO_FLOOR: u64 = 16 << 20;

/// What a file is wrapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    Zip,
    Tar,
    TarGz,
    Pgp,
}

impl Wrap {
    /// The ledger's `format` of a container row.
    pub fn id(self) -> &'static str {
        match self {
            Wrap::Zip => "zip",
            Wrap::Tar => "tar",
            Wrap::TarGz => "tar.gz",
            Wrap::Pgp => "pgp",
        }
    }

    fn is_archive(self) -> bool {
        self != Wrap::Pgp
    }
}

/// Whether a file's name says it is a container (what discovery can tell without reading it).
/// Not `.asc`: partners also send detached signatures under that name.
pub fn named(name: &OsStr) -> bool {
    let lower = name.as_bytes().to_ascii_lowercase();
    [".zip", ".tar", ".tar.gz", ".tgz", ".pgp", ".gpg"]
        .iter()
        .any(|e| lower.ends_with(e.as_bytes()))
}

/// Whether a file is a container, by its name or its first bytes. Workbooks (which are zip
/// files) and gzip files that do not hold a tar archive are not.
pub fn detect(name: &OsStr, file: &File) -> io::Result<Option<Wrap>> {
    let lower = name.as_bytes().to_ascii_lowercase();
    let ends = |s: &str| lower.ends_with(s.as_bytes());
    if ends(".zip") {
        return Ok(Some(Wrap::Zip));
    }
    if ends(".tar") {
        return Ok(Some(Wrap::Tar));
    }
    if ends(".tar.gz") || ends(".tgz") {
        return Ok(Some(Wrap::TarGz));
    }
    if ends(".pgp") || ends(".gpg") {
        return Ok(Some(Wrap::Pgp));
    }
    let mut head = [0u8; 512];
    let n = read_at_most(file, &mut head, 0)?;
    let head = &head[..n];
    if ends(".asc") && head.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        return Ok(Some(Wrap::Pgp));
    }
    if [".xlsx", ".xlsm", ".ods", ".xls"].iter().any(|e| ends(e)) {
        return Ok(None);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        // A workbook without its extension is still a workbook (format detection's), not an
        // archive: its first part is `[Content_Types].xml` (OOXML) or `mimetype` (ODF).
        return Ok((!is_workbook(head)).then_some(Wrap::Zip));
    }
    if is_tar_header(head) {
        return Ok(Some(Wrap::Tar));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        // A gzip file: a tar archive inside, or a compressed data file (the text layer's).
        let mut inner = [0u8; 512];
        let mut gz = flate2::read::GzDecoder::new(io::Cursor::new(head_of(file, 64 << 10)?));
        let mut got = 0;
        while got < inner.len() {
            match gz.read(&mut inner[got..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        if is_tar_header(&inner[..got]) {
            return Ok(Some(Wrap::TarGz));
        }
        return Ok(None);
    }
    if head.starts_with(b"-----BEGIN PGP MESSAGE-----") || pgp::looks_binary(head) {
        return Ok(Some(Wrap::Pgp));
    }
    Ok(None)
}

fn is_workbook(head: &[u8]) -> bool {
    let Some(len) = head
        .get(26..28)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    else {
        return false;
    };
    let name = head.get(30..30 + len).unwrap_or_default();
    name == b"[Content_Types].xml" || name == b"mimetype"
}

fn is_tar_header(b: &[u8]) -> bool {
    b.len() >= 263 && &b[257..262] == b"ustar"
}

fn head_of(file: &File, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    let got = read_at_most(file, &mut v, 0)?;
    v.truncate(got);
    Ok(v)
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One member, written out and hashed: where it is judged (`path`, relative to the container's
/// folder) and its spilled bytes.
pub struct Member {
    pub path: PathBuf,
    pub spill: PathBuf,
    pub hash: FileHash,
    pub len: u64,
}

/// What the caller says after a member: go on, or stop (the writer no longer wants them).
pub enum Flow {
    Next,
    Stop,
}

/// What opening a container learned beside its members.
#[derive(Debug, Default)]
pub struct Facts {
    /// The fingerprint of the key whose signature verified (OpenPGP).
    pub signer: Option<String>,
    /// Members passed over (folders are not counted), as warnings for the container's row.
    pub notes: Vec<String>,
}

/// Opens an archive (`wrap`: zip, tar or tar.gz) and hands each member to `each`, spilled into
/// `dir` (created; the caller removes it). A member the callback is given is complete and
/// within bounds; an error names the member and what is wrong. OpenPGP files are opened by
/// `decrypt_following` (their plaintext is read as it is written).
pub fn unpack(
    wrap: Wrap,
    file: &File,
    u: &Unpack,
    dir: &Path,
    each: &mut dyn FnMut(Member) -> Flow,
) -> Result<Facts, Reject> {
    std::fs::create_dir_all(dir).map_err(|e| io_reject("cannot create its unpacking folder", e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut spill = Spiller::new(u, size, dir);
    let mut facts = Facts::default();
    archive::members(wrap, file, u, &mut spill, each, &mut facts)?;
    Ok(facts)
}

/// Opens an archive that came out of an OpenPGP file (`plain`, already written out in `dir`):
/// its members are handed to `each` as `unpack` does, within the same bounds.
pub fn unpack_inner(
    wrap: Wrap,
    plain: &File,
    outer_size: u64,
    u: &Unpack,
    dir: &Path,
    each: &mut dyn FnMut(Member) -> Flow,
    facts: &mut Facts,
) -> Result<(), Reject> {
    if !wrap.is_archive() {
        return Err(nested("an OpenPGP message inside an OpenPGP file"));
    }
    let inner = dir.join("inner");
    std::fs::create_dir_all(&inner)
        .map_err(|e| io_reject("cannot create its unpacking folder", e))?;
    let mut spill = Spiller::new(u, outer_size, &inner);
    archive::members(wrap, plain, u, &mut spill, each, facts)
}

/// Decrypts an OpenPGP file into `dir/1` while `growing` tells a reader how far it is. The
/// plaintext may be read as it is written (`Follow`), but it counts only once `growing` ended
/// well: the whole message read, its integrity check and its signature passed.
pub fn decrypt_following(
    file: &File,
    u: &Unpack,
    dir: &Path,
    growing: &Growing,
) -> Result<Facts, Reject> {
    let r = (|| -> Result<(Facts, Member), Reject> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_reject("cannot create its unpacking folder", e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut spill = Spiller::new(u, size, dir);
        let mut facts = Facts::default();
        let m = pgp::decrypt(file, u, &mut spill, &mut facts, &|n| growing.wrote(n))?;
        Ok((facts, m))
    })();
    match r {
        Ok((facts, m)) => {
            growing.finish(Ok((m.hash, m.len)));
            Ok(facts)
        }
        Err(r) => {
            growing.finish(Err(r.clone()));
            Err(r)
        }
    }
}

/// A member being written out while it is read: how much is written, and at the end its
/// identity (hash, length) or why it failed.
#[derive(Default)]
pub struct Growing {
    state: std::sync::Mutex<Grow>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Grow {
    written: u64,
    end: Option<Result<(FileHash, u64), Reject>>,
    abandoned: bool,
}

impl Growing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Grow> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `n` more bytes are written; false once nobody wants them.
    fn wrote(&self, n: u64) -> bool {
        let mut g = self.lock();
        g.written += n;
        self.changed.notify_all();
        !g.abandoned
    }

    fn finish(&self, end: Result<(FileHash, u64), Reject>) {
        self.lock().end = Some(end);
        self.changed.notify_all();
    }

    /// Stops the writing at its next write (its end is then an error nobody reads).
    pub fn abandon(&self) {
        self.lock().abandoned = true;
    }

    /// Waits until at least `n` bytes are written or the writing ended.
    pub fn wait_for(&self, n: u64) {
        let mut g = self.lock();
        while g.written < n && g.end.is_none() {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits for the end: the identity, or why the file failed.
    pub fn end(&self) -> Result<(FileHash, u64), Reject> {
        let mut g = self.lock();
        loop {
            if let Some(e) = &g.end {
                return e.clone();
            }
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the writing failed already.
    pub fn failed(&self) -> Option<Reject> {
        match &self.lock().end {
            Some(Err(r)) => Some(r.clone()),
            _ => None,
        }
    }
}

/// Reads a growing member as it is written: waits for more, ends where the writing ended well,
/// and fails where it failed.
pub struct Follow {
    pub file: File,
    pub pos: u64,
    pub growing: std::sync::Arc<Growing>,
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let g = &self.growing;
        let mut state = g.lock();
        loop {
            if self.pos < state.written {
                let want = (state.written - self.pos).min(buf.len() as u64) as usize;
                drop(state);
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            match &state.end {
                Some(Ok(_)) => return Ok(0),
                Some(Err(r)) => return Err(io::Error::other(r.message.clone())),
                None => state = g.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

/// Whether a container setting's OpenPGP keys can be used (`config check`).
pub fn check_keys(u: &Unpack) -> Result<(), Reject> {
    pgp::check_keys(u)
}

/// The name an OpenPGP file's content is judged under: its own without `.pgp`, `.gpg` or
/// `.asc` (`orders.csv.pgp` → `orders.csv`).
pub fn plain_name(name: &OsStr) -> std::ffi::OsString {
    let b = name.as_bytes();
    let lower = b.to_ascii_lowercase();
    for ext in [".pgp", ".gpg", ".asc"] {
        if lower.ends_with(ext.as_bytes()) && b.len() > ext.len() {
            return OsStr::from_bytes(&b[..b.len() - ext.len()]).to_os_string();
        }
    }
    name.to_os_string()
}

/// A member's name as a relative path, or why it can never be one: absolute, `..` or `.`,
/// a backslash or drive letter (a path on another system), a NUL, or empty.
pub fn member_path(name: &[u8]) -> Result<PathBuf, String> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() || name.contains(&0) {
        return Err(format!("member {shown:?} has an empty name or a NUL byte"));
    }
    if name.contains(&b'\\') || (name.len() >= 2 && name[1] == b':') {
        return Err(format!(
            "member {shown:?} names a path of another system (a backslash or a drive)"
        ));
    }
    let p = Path::new(OsStr::from_bytes(name));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "member {shown:?} would leave the archive's folder (absolute, or `..`)"
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("member {shown:?} names no file"));
    }
    // A name no filesystem holds could never be placed (a report, a quarantined copy).
    if out.components().any(|c| c.as_os_str().len() > 255) || name.len() > 4096 {
        return Err(format!(
            "member {shown:?} has a name longer than a filesystem holds (255 bytes a part, \
             4096 in all)"
        ));
    }
    Ok(out)
}

/// Writes members out within the container's bounds, hashing as it goes.
pub struct Spiller<'a> {
    u: &'a Unpack,
    /// The container's own size (the ratio's base).
    size: u64,
    dir: &'a Path,
    /// Bytes written for every member so far.
    total: u64,
    seq: usize,
}

impl<'a> Spiller<'a> {
    fn new(u: &'a Unpack, size: u64, dir: &'a Path) -> Spiller<'a> {
        Spiller {
            u,
            size,
            dir,
            total: 0,
            seq: 0,
        }
    }

    /// The most bytes all members together may hold.
    fn budget(&self) -> u64 {
        let by_ratio = self.size.saturating_mul(self.u.max_ratio).max(RATIO_FLOOR);
        by_ratio.min(self.u.max_bytes)
    }

    /// Whether `more` bytes (announced by a header) would break the bounds.
    fn check_announced(&self, what: &str, more: u64) -> Result<(), Reject> {
        if self.total.saturating_add(more) > self.budget() {
            return Err(self.too_big(what));
        }
        Ok(())
    }

    fn too_big(&self, what: &str) -> Reject {
        Reject::new(
            Kind::ArchiveTooBig,
            Stage::Decode,
            format!(
                "{what} takes the unpacked bytes past {} (max_archive_bytes {}, or \
                 max_archive_ratio {} times the container's {} bytes); nothing of it is loaded",
                self.budget(),
                self.u.max_bytes,
                self.u.max_ratio,
                self.size
            ),
        )
    }

    /// Copies one member out; `Err(Ok(reject))` for the bounds, `Err(Err(io))` for a read
    /// failure the caller names.
    fn spill(&mut self, what: &str, r: impl Read) -> Result<Member, SpillError> {
        self.spill_telling(what, r, &|_| true)
    }

    /// `spill`, telling `progress` of every write; it says false to stop (nobody waits for the
    /// member any more).
    fn spill_telling(
        &mut self,
        what: &str,
        mut r: impl Read,
        progress: &dyn Fn(u64) -> bool,
    ) -> Result<Member, SpillError> {
        self.seq += 1;
        let path = self.dir.join(self.seq.to_string());
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(SpillError::Write)?;
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 256 << 10];
        let budget = self.budget();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SpillError::Read(e)),
            };
            self.total += n as u64;
            if self.total > budget {
                return Err(SpillError::Bounds(self.too_big(what)));
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(SpillError::Write)?;
            if !progress(n as u64) {
                return Err(SpillError::Read(io::Error::other("no longer wanted")));
            }
        }
        let (hash, len) = h.finish();
        Ok(Member {
            path: PathBuf::new(),
            spill: path,
            hash,
            len,
        })
    }
}

enum SpillError {
    Bounds(Reject),
    Read(io::Error),
    Write(io::Error),
}

/// A failure of the machine (the spool's disk), not the content: tried again.
fn io_reject(what: &str, e: io::Error) -> Reject {
    Reject::new(Kind::IoRead, Stage::Read, format!("{what}: {e}"))
}

fn nested(what: &str) -> Reject {
    Reject::new(
        Kind::ArchiveNested,
        Stage::Decode,
        format!("{what}: ferry opens one level (an archive inside an OpenPGP file), no deeper"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_never_leave_the_folder() {
        assert_eq!(member_path(b"a/b.csv").unwrap(), PathBuf::from("a/b.csv"));
        assert_eq!(member_path(b"./a.csv").unwrap(), PathBuf::from("a.csv"));
        for bad in [
            &b"../x.csv"[..],
            b"a/../../x.csv",
            b"/etc/passwd",
            b"..",
            b"a\\..\\x.csv",
            b"C:/x.csv",
            b"",
            b"a\0b",
            b"./",
        ] {
            assert!(
                member_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("{}/a.csv", "x".repeat(256));
        let deep = "d/".repeat(2100) + "a.csv";
        for bad in [long.as_bytes(), deep.as_bytes()] {
            assert!(
                member_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn plain_names_drop_the_openpgp_extension() {
        assert_eq!(plain_name(OsStr::new("orders.csv.pgp")), "orders.csv");
        assert_eq!(plain_name(OsStr::new("day.zip.GPG")), "day.zip");
        assert_eq!(plain_name(OsStr::new("x.asc")), "x");
        assert_eq!(plain_name(OsStr::new(".pgp")), ".pgp");
        assert_eq!(plain_name(OsStr::new("blob")), "blob");
    }
}
