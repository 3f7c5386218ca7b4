//! The spool on disk: its folders, and paths within it as text that keeps their exact bytes
//! (`RelPath::display`). Claims and owners — who works on which file — are `claims`.
//!
//! This module does not open the store and does not read file contents.

mod claims;

pub use claims::{claim_owners, leftovers, Alive, Claim, FileLocks, Liveness, Owner};

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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
    /// is ready to receive drops. Returns the folders it created (see `undo_ensure`).
    pub fn ensure(&self) -> io::Result<Vec<PathBuf>> {
        let mut created = Vec::new();
        for d in [
            &self.root,
            &self.incoming,
            &self.processing,
            &self.archive,
            &self.quarantine,
            &self.owners_dir(),
        ] {
            // Every missing folder on the way, outermost first.
            let mut missing: Vec<PathBuf> = d
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
                .map(Path::to_path_buf)
                .collect();
            fs::create_dir_all(d)?;
            missing.reverse();
            created.extend(missing);
        }
        Ok(created)
    }

    /// Takes back what `ensure` created, for a spool whose store could not be set up: the
    /// folders (if still empty), and a SQLite ledger made in the attempt.
    pub fn undo_ensure(&self, created: &[PathBuf]) {
        if created.contains(&self.root) {
            for f in [
                "ferry.db",
                "ferry.db-wal",
                "ferry.db-shm",
                "ferry.db-journal",
            ] {
                let _ = fs::remove_file(self.root.join(f));
            }
        }
        for d in created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }

    pub(crate) fn owners_dir(&self) -> PathBuf {
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

/// Suffixes of the files ferry writes beside a file it placed in `archive/` or `quarantine/`
/// (`<name>.reason.json`, `<name>.rejects.ndjson`). A new sidecar adds its suffix here.
pub const SIDECARS: [&str; 2] = [".reason.json", ".rejects.ndjson"];

/// Whether a name belongs to ferry in `archive/` and `quarantine/`: a sidecar's name (any case,
/// for filesystems that ignore it) or one of ferry's temp names. A partner's file or folder is
/// never placed under such a name (`placed_name`), so ferry's files and partners' never meet.
pub fn ferry_owns(name: &OsStr) -> bool {
    let lower = name.as_bytes().to_ascii_lowercase();
    SIDECARS.iter().any(|s| lower.ends_with(s.as_bytes()))
        || (lower.starts_with(b".") && lower.ends_with(crate::fsio::TEMP_SUFFIX.as_bytes()))
}

/// The name a partner's folder gets in `archive/` or `quarantine/`: its own, unless ferry owns
/// it (then `~` goes before its extension, `x.reason.json` → `x.reason~.json`, which no sidecar
/// ends with).
fn placed_folder(name: &OsStr) -> std::ffi::OsString {
    if ferry_owns(name) {
        crate::fsio::name_with_suffix(name, "~")
    } else {
        name.to_os_string()
    }
}

/// The folder under `area` where a file found at `rel` is placed: the folders it was found in,
/// kept (`acme/eu/report.csv` and `acme/us/report.csv` stay apart), each under a name no
/// sidecar of ferry's can have.
pub fn placed_dir(area: &Path, rel: &RelPath) -> PathBuf {
    let mut dir = area.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(placed_folder(c.as_os_str()));
    }
    dir
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn partner_names_never_take_a_sidecar_name() {
        for n in [
            "a.csv.reason.json",
            "A.CSV.Reason.JSON",
            "x.rejects.ndjson",
            ".a.1.ferry-tmp",
        ] {
            assert!(ferry_owns(OsStr::new(n)), "{n}");
        }
        for n in [
            "a.csv",
            "reason.json.csv",
            "a.reason~3.json",
            "a.rejects.ndjson.gz",
        ] {
            assert!(!ferry_owns(OsStr::new(n)), "{n}");
        }
        let rel = RelPath::from_relative(Path::new("acme/x.csv.reason.json/eu/r.csv")).unwrap();
        let dir = placed_dir(Path::new("/q"), &rel);
        assert_eq!(dir, Path::new("/q/acme/x.csv.reason~.json/eu"));
        assert!(dir.components().all(|c| !ferry_owns(c.as_os_str())));
        let top = RelPath::from_relative(Path::new("r.csv")).unwrap();
        assert_eq!(placed_dir(Path::new("/q"), &top), Path::new("/q"));
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
}
