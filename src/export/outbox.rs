//! Where a target's batches go: a local folder, or a remote place (SFTP, FTP(S), S3) reached
//! through the remote seam (`remote::Place`). The protocol is the same for both: a file is only
//! ever seen whole under its final name — data file, then manifest, then done marker.
//!
//! - **Folder**: written under a hidden temp name in the folder itself, fsynced, renamed, the
//!   folder fsynced.
//! - **Remote**: written into the spool first (`.staging/`, a folder per target), then uploaded:
//!   on SFTP and FTP under a hidden temp name beside the final one and renamed over it; on S3
//!   put whole under the final key (a single or multipart upload appears only when complete).
//!   The staged copy is removed once uploaded.
//!
//! A batch found with its done marker and a data file matching its manifest's SHA-256 is
//! `published`: downstream may have read it, so it is recorded, never written again.

use super::batch::{Hashing, Written};
use crate::fsio;
use crate::remote::Place;
use crate::store::BatchPlan;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The longest manifest read back when checking a batch (a manifest is a few KiB).
const MANIFEST_LIMIT: u64 = 1 << 20;

pub enum Outbox {
    Folder(PathBuf),
    Remote {
        place: Box<dyn Place>,
        /// The URL, for messages.
        url: String,
        /// The spool folder batches are written into before they are uploaded.
        staging: PathBuf,
    },
}

impl Outbox {
    /// Where the data file of batch `name` is written before it is published.
    pub fn stage(&self, name: &str) -> PathBuf {
        match self {
            Outbox::Folder(dir) => fsio::temp_path(dir, name.as_ref()),
            Outbox::Remote { staging, .. } => staging.join(name),
        }
    }

    /// Whether a staged file stays where it is written (a folder's temp name, renamed: it is
    /// fsynced first) rather than being a copy for an upload (which a crash writes again).
    pub fn stages_in_place(&self) -> bool {
        matches!(self, Outbox::Folder(_))
    }

    /// Makes the staged file visible as `name`, whole.
    pub fn publish(&mut self, staged: &Path, name: &str) -> Result<()> {
        match self {
            Outbox::Folder(dir) => {
                fs::rename(staged, dir.join(name))?;
                fsio::sync_dir(dir)?;
            }
            Outbox::Remote { place, url, .. } => {
                let sent = if place.puts_whole() {
                    place.put(name, staged)
                } else {
                    let tmp = temp_name(name);
                    place
                        .put(&tmp, staged)
                        .and_then(|()| place.replace(&tmp, name))
                };
                sent.with_context(|| format!("publishing {name} at {url}"))?;
                fs::remove_file(staged)?;
            }
        }
        Ok(())
    }

    /// Writes a small file (manifest, done marker) as `name`, whole.
    pub fn publish_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Outbox::Folder(dir) => Ok(fsio::write_atomic(&dir.join(name), bytes)?),
            Outbox::Remote { staging, .. } => {
                let staged = staging.join(name);
                fs::write(&staged, bytes)?;
                self.publish(&staged, name)
            }
        }
    }

    /// Makes the renames so far durable (a folder's entries fsynced).
    pub fn sync(&self) -> Result<()> {
        if let Outbox::Folder(dir) = self {
            fsio::sync_dir(dir)?;
        }
        Ok(())
    }

    /// The batch as published by an interrupted export, if it was: its done marker there and
    /// its data file with the SHA-256 and size its manifest says.
    pub fn published(&mut self, plan: &BatchPlan) -> Result<Option<Written>> {
        let done = format!("{}.done", plan.name);
        let manifest = format!("{}.manifest.json", plan.name);
        let (manifest, data) = match self {
            Outbox::Folder(dir) => {
                if !dir.join(&done).exists() {
                    return Ok(None);
                }
                let Ok(m) = fs::read(dir.join(&manifest)) else {
                    return Ok(None);
                };
                let Ok(f) = File::open(dir.join(&plan.name)) else {
                    return Ok(None);
                };
                let mut h = Hashing::new(io::sink());
                io::copy(&mut { f }, &mut h)?;
                (m, h)
            }
            Outbox::Remote { place, .. } => {
                if place.stat(&done)?.is_none() {
                    return Ok(None);
                }
                let mut m = Vec::new();
                if place.stat(&manifest)?.is_none() {
                    return Ok(None);
                }
                place.read(&manifest, &mut m, MANIFEST_LIMIT)?;
                let Some(f) = place.stat(&plan.name)? else {
                    return Ok(None);
                };
                let mut h = Hashing::new(io::sink());
                place.read(&plan.name, &mut h, f.size)?;
                (m, h)
            }
        };
        let Ok(m) = serde_json::from_slice::<serde_json::Value>(&manifest) else {
            return Ok(None);
        };
        let (sha256, bytes) = data.digest();
        let same = m["sha256"].as_str() == Some(sha256.as_str()) && m["bytes"] == bytes;
        Ok(same.then(|| Written {
            sha256,
            bytes,
            rows: m["rows"].as_u64().unwrap_or(plan.rows),
        }))
    }

    /// Removes temp files an interrupted export of this dataset left (hidden, named after one
    /// of its batches, ending in `.ferry-tmp`) and, for a remote target, its staged copies.
    /// Runs under the target's lock.
    pub fn remove_stray_temps(&mut self, stem: &str) -> Result<u64> {
        let prefix = format!(".{stem}-");
        let stray = |name: &str| name.starts_with(&prefix) && name.ends_with(fsio::TEMP_SUFFIX);
        let mut n = 0;
        match self {
            Outbox::Folder(dir) => {
                for e in fs::read_dir(&*dir)? {
                    let e = e?;
                    if stray(&e.file_name().to_string_lossy()) && e.file_type()?.is_file() {
                        fs::remove_file(e.path())?;
                        n += 1;
                    }
                }
                if n > 0 {
                    fsio::sync_dir(dir)?;
                }
            }
            Outbox::Remote { place, staging, .. } => {
                if staging.exists() {
                    fs::remove_dir_all(&*staging)?;
                }
                fs::create_dir_all(&*staging)?;
                // The target reached (a refusal stops here); only SFTP and FTP uploads leave
                // temp names behind, found by listing the folder.
                place.make_folder()?;
                place.check()?;
                if !place.puts_whole() {
                    let (mut files, mut problems) = (Vec::new(), Vec::new());
                    place.list(&mut files, &mut problems)?;
                    for f in files.iter().filter(|f| !f.path.contains('/')) {
                        if stray(&f.path) {
                            place.remove(&f.path)?;
                            n += 1;
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

/// The hidden name a file is uploaded under before it is renamed to `name`: the same for every
/// attempt (one export per target at a time), so an upload a crash cut short is overwritten by
/// the next attempt at that batch — whether or not the server lists hidden names (FTP servers
/// mostly do not), nothing is left behind.
fn temp_name(name: &str) -> String {
    format!(".{name}{}", fsio::TEMP_SUFFIX)
}
