//! Remote sources (`[[source]]`, R-remote): places partners' files live that ferry pulls from.
//!
//! One seam for "a place files live" (`Place`: list, stat, read, rename, remove; put and
//! replace for export targets), implemented by SFTP (`sftp`), FTP(S) (`ftp`) and S3 (`s3`). `pull` is the fetch protocol on top of it: list, judge readiness, claim
//! each remote file and version in the store (one claim across hosts), download into the spool,
//! verify, hand the file to the pipeline as a claim of this process, and once its file
//! committed do what `after` says.

pub mod after;
mod ftp;
pub mod poll;
pub mod pull;
mod s3;
mod sftp;
mod tls;

use crate::config::{Scheme, SourceSpec};
use crate::spool::RelPath;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;

/// A remote file as listed: its path below the source's folder (`/`-separated), size,
/// modification time (seconds) and version (what changes when its content may have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    pub mtime: i64,
    pub version: String,
    /// How coarse `mtime` is, in seconds, when the version is made of it (0: it is not — an
    /// ETag). A file is only taken once its time's window is over: a rewrite within the same
    /// window would keep its version, and so be mistaken for the file already loaded.
    pub granularity: i64,
}

/// A place files live, reached through one connection.
pub trait Place: Send {
    /// Every regular file below the source's folder (walked at most `depth` folders down);
    /// what cannot be listed or is not a regular file goes to `problems` with the reason.
    fn list(
        &mut self,
        out: &mut Vec<RemoteFile>,
        problems: &mut Vec<(String, String)>,
    ) -> Result<()>;
    /// The file at `path` now (`None`: gone, or not a regular file).
    fn stat(&mut self, path: &str) -> Result<Option<RemoteFile>>;
    /// Streams the file into `into`; returns the bytes it had. Stops once more than `limit`
    /// came (the file is growing).
    fn read(&mut self, path: &str, into: &mut dyn Write, limit: u64) -> Result<u64>;
    /// Moves a file (folders of `to` are made as needed); `to` relative to the source's
    /// folder, or absolute.
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn remove(&mut self, path: &str) -> Result<()>;
    /// Writes the local file `from` as the file at `path` (its folders made as needed),
    /// replacing one there. Seen whole or not at all only where `puts_whole` says so; elsewhere
    /// callers put a temp name and `replace` the final one with it.
    fn put(&mut self, path: &str, from: &std::path::Path) -> Result<()>;
    /// Moves `from` to `to`, replacing a file there.
    fn replace(&mut self, from: &str, to: &str) -> Result<()>;
    /// Reaches the place the way a listing does: a refused login, key or bucket is `Refused`
    /// (SFTP and FTP log in when they connect).
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Makes the folder files are put in, if it is missing (S3 has no folders).
    fn make_folder(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether a `put` is seen whole or not at all under its name (S3: an object appears when
    /// its upload completes).
    fn puts_whole(&self) -> bool {
        false
    }
}

/// One entry of a remote folder, as a walk sees it (named by its last part).
pub(crate) enum Entry {
    Folder(String),
    /// A regular file; its `path` is its name.
    File(RemoteFile),
    /// Not read, and why: a link, a special file, a name or listing line ferry cannot read.
    Problem(String, String),
}

/// A place whose files are found by walking folders (SFTP, FTP).
pub(crate) trait Folders {
    /// The entries of the folder at `rel` (below the source's folder; empty: that folder).
    fn entries(&mut self, rel: &str) -> Result<Vec<Entry>>;
}

/// Every regular file below the source's folder, at most `depth` folders down. A folder below
/// the top that cannot be listed, one deeper than `depth` and every entry that is not read go
/// to `problems` with the reason; the top folder failing fails the listing.
pub(crate) fn walk(
    place: &mut dyn Folders,
    depth: usize,
    rel: &str,
    level: usize,
    out: &mut Vec<RemoteFile>,
    problems: &mut Vec<(String, String)>,
) -> Result<()> {
    let entries = match place.entries(rel) {
        Ok(e) => e,
        Err(e) if level > 0 => {
            problems.push((rel.to_string(), format!("cannot list this folder: {e:#}")));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let child = |name: &str| {
        if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        }
    };
    for entry in entries {
        match entry {
            Entry::Folder(name) if name == "." || name == ".." || name.is_empty() => {}
            Entry::Folder(name) if level + 1 > depth => {
                problems.push((child(&name), format!("deeper than depth = {depth}")));
            }
            Entry::Folder(name) => walk(place, depth, &child(&name), level + 1, out, problems)?,
            Entry::File(f) if f.path == "." || f.path == ".." || f.path.is_empty() => {}
            Entry::File(mut f) => {
                f.path = child(&f.path);
                out.push(f);
            }
            Entry::Problem(name, why) => problems.push((child(&name), why)),
        }
    }
    Ok(())
}

/// Copies `from` into `into` with a buffer of `buf` bytes; returns the bytes it had. Stops once
/// more than `limit` came (the file grew, or was replaced by a longer one, since it was
/// listed): the caller sees more than it expected and discards the download.
fn copy_upto(
    from: &mut dyn Read,
    into: &mut dyn Write,
    limit: u64,
    buf: usize,
    path: &str,
) -> Result<u64> {
    let mut buf = vec![0u8; buf];
    let mut n = 0u64;
    loop {
        let got = from
            .read(&mut buf)
            .with_context(|| format!("reading {path}"))?;
        if got == 0 {
            return Ok(n);
        }
        n += got as u64;
        if n > limit {
            return Ok(n);
        }
        into.write_all(&buf[..got])?;
    }
}

/// A refusal to go on with a source that retrying cannot fix: a host key unknown or changed, a
/// login refused, a secret missing. `run` exits 2.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The TLS settings of an HTTPS client trusting only `ca_file`'s certificates.
pub fn tls_roots(ca_file: &std::path::Path) -> Result<ureq::tls::TlsConfig> {
    tls::ureq_roots(ca_file)
}

/// Opens a connection to a source.
pub fn connect(spec: &SourceSpec) -> Result<Box<dyn Place>> {
    match spec.scheme {
        Scheme::Sftp => Ok(Box::new(sftp::SftpPlace::connect(spec)?)),
        Scheme::S3 => Ok(Box::new(s3::S3Place::connect(spec)?)),
        Scheme::Ftp | Scheme::Ftps => Ok(Box::new(ftp::FtpPlace::connect(spec)?)),
    }
}

/// The longest name a local folder holds.
const NAME_MAX: usize = 255;

/// Where a remote file lands under `incoming/`: the source's `into` folder, then the remote
/// path's own folders. A name that cannot be a safe local name (`..`, `.`, empty parts, a
/// backslash, NUL, a control character, over 255 bytes) is refused with the reason: remote
/// names never build a path outside the spool.
pub fn local_rel(spec: &SourceSpec, path: &str) -> Result<RelPath, String> {
    let mut out = PathBuf::from(&spec.into);
    for part in path.split('/') {
        let why = if part.is_empty() {
            Some("an empty part (a '//' or a leading or trailing '/')")
        } else if part == "." || part == ".." {
            Some("a '.' or '..' part")
        } else if part.contains('\\') {
            Some("a backslash (a folder separator elsewhere)")
        } else if part.chars().any(char::is_control) {
            Some("a control character")
        } else if part.len() > NAME_MAX {
            Some("a part longer than 255 bytes")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("the remote name has {why}; it is not fetched"));
        }
        out.push(part);
    }
    RelPath::from_relative(&out).ok_or_else(|| "not a relative name".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_never_leave_the_source_folder() {
        let spec = crate::config::tests_support::sftp_source("acme");
        assert_eq!(
            local_rel(&spec, "2026/orders.csv").unwrap().display(),
            "acme/2026/orders.csv"
        );
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/abs",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(local_rel(&spec, bad).is_err(), "{bad:?}");
        }
    }
}
