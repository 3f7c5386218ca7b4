//! Zip and tar (plain or gzip) archives: members walked in order, each checked before a byte
//! of it is written — a name that could leave the folder, a link, a device, a name two members
//! share, an encrypted entry, an archive inside — and written out within the bounds. Zip is read
//! through its central directory (every member judged before any is written); tar streams.

use super::{member_path, nested, Facts, Flow, Member, SpillError, Spiller, Wrap};
use crate::config::Unpack;
use crate::reject::{Kind, Reject, Stage};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Hands `wrap`'s members to `each`.
pub(super) fn members(
    wrap: Wrap,
    file: &File,
    u: &Unpack,
    spill: &mut Spiller,
    each: &mut dyn FnMut(Member) -> Flow,
    facts: &mut Facts,
) -> Result<(), Reject> {
    let mut names = Names::default();
    match wrap {
        Wrap::Zip => zip(file, u, spill, &mut names, each),
        Wrap::Tar => tar(
            BufReader::with_capacity(256 << 10, file),
            u,
            spill,
            &mut names,
            each,
        ),
        Wrap::TarGz => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, file));
            tar(gz, u, spill, &mut names, each)
        }
        Wrap::Pgp => Err(nested("an OpenPGP file inside an archive")),
    }?;
    if names.skipped > 0 {
        facts.notes.push(format!(
            "{} member(s) passed over as system files (names starting with `.`, or under \
             __MACOSX/): {}",
            names.skipped,
            names.skipped_names.join(", ")
        ));
    }
    Ok(())
}

/// The members' names so far: two members never share one, and system files are passed over
/// (and noted).
#[derive(Default)]
struct Names {
    seen: HashSet<PathBuf>,
    skipped: usize,
    skipped_names: Vec<String>,
}

impl Names {
    /// The member's path, `None` for a system file passed over, or why it is unsafe.
    fn take(&mut self, raw: &[u8]) -> Result<Option<PathBuf>, Reject> {
        let path = member_path(raw).map_err(unsafe_member)?;
        let system = path.components().any(|c| {
            let s = c.as_os_str().to_string_lossy();
            s.starts_with('.') || s == "__MACOSX"
        });
        if system {
            self.skipped += 1;
            if self.skipped_names.len() < 10 {
                self.skipped_names.push(path.display().to_string());
            }
            return Ok(None);
        }
        if !self.seen.insert(path.clone()) {
            return Err(unsafe_member(format!(
                "two members are named {:?}: which one is meant cannot be told",
                path.display().to_string()
            )));
        }
        Ok(Some(path))
    }
}

fn unsafe_member(why: String) -> Reject {
    Reject::new(Kind::ArchiveUnsafeMember, Stage::Decode, why)
}

fn corrupt(why: String, offset: Option<u64>) -> Reject {
    let mut r = Reject::new(Kind::ArchiveCorrupt, Stage::Decode, why);
    r.offset = offset;
    r
}

/// Whether a member's name says it is a container itself.
fn nested_by_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_lowercase();
    [".zip", ".tar", ".tgz", ".tar.gz", ".pgp", ".gpg"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// A member written out: checked for its announced length and for being an archive itself.
fn spilled(
    spill: &mut Spiller,
    path: PathBuf,
    announced: u64,
    offset: u64,
    r: impl Read,
) -> Result<Member, Reject> {
    let what = format!("member {:?}", path.display().to_string());
    let mut m = match spill.spill(&what, r) {
        Ok(m) => m,
        Err(SpillError::Bounds(r)) => return Err(r),
        Err(SpillError::Read(e)) => {
            return Err(corrupt(
                format!("{what} (its header at byte {offset}) cannot be read whole: {e}"),
                Some(offset),
            ))
        }
        Err(SpillError::Write(e)) => {
            return Err(super::io_reject("cannot write the member out", e));
        }
    };
    if m.len != announced {
        return Err(corrupt(
            format!(
                "{what} (its header at byte {offset}) holds {} bytes where the archive says {announced}: \
                 it was cut short",
                m.len
            ),
            Some(offset),
        ));
    }
    let f = File::open(&m.spill).map_err(|e| super::io_reject("cannot read the member back", e))?;
    if super::detect(path.as_os_str(), &f)
        .map_err(|e| super::io_reject("cannot read the member back", e))?
        .is_some()
    {
        return Err(nested(&format!("{what} is an archive or an OpenPGP file")));
    }
    m.path = path;
    Ok(m)
}

/// A folder entry is passed over only when it holds nothing: bytes under a folder's name would
/// be content no one sees.
fn folder_without_bytes(shown: &str, size: u64) -> Result<(), Reject> {
    if size == 0 {
        return Ok(());
    }
    Err(unsafe_member(format!(
        "member {shown:?} is a folder entry holding {size} bytes: content under a folder's name \
         is never loaded, so the archive is refused rather than read without it"
    )))
}

fn too_many(u: &Unpack) -> Reject {
    Reject::new(
        Kind::ArchiveTooBig,
        Stage::Decode,
        format!(
            "the archive has more than {} members (max_archive_members)",
            u.max_members
        ),
    )
}

fn zip(
    file: &File,
    u: &Unpack,
    spill: &mut Spiller,
    names: &mut Names,
    each: &mut dyn FnMut(Member) -> Flow,
) -> Result<(), Reject> {
    let mut z = zip::ZipArchive::new(BufReader::with_capacity(256 << 10, file)).map_err(|e| {
        corrupt(
            format!("not a readable zip archive (its central directory): {e}"),
            None,
        )
    })?;
    if z.len() > u.max_members {
        return Err(too_many(u));
    }
    // The zip reader keeps one entry per name: a directory listing more entries than it kept
    // holds a name twice, and which one is meant cannot be told.
    if let Some(listed) = listed_entries(file) {
        if listed != z.len() as u64 {
            return Err(unsafe_member(format!(
                "the archive's directory lists {listed} entries but only {} distinct names: \
                 members share a name, and which one is meant cannot be told",
                z.len()
            )));
        }
    }
    // Every member judged from the central directory before any is written.
    let mut plan = Vec::new();
    let mut announced = 0u64;
    for i in 0..z.len() {
        let f = z
            .by_index_raw(i)
            .map_err(|e| corrupt(format!("entry {i} of the central directory: {e}"), None))?;
        let shown = String::from_utf8_lossy(f.name_raw()).into_owned();
        if f.is_dir() {
            folder_without_bytes(&shown, f.size())?;
            continue;
        }
        let offset = f.header_start();
        let regular = f.unix_mode().is_none_or(|m| {
            let t = m & libc::S_IFMT;
            t == 0 || t == libc::S_IFREG
        });
        if f.is_symlink() || !regular {
            return Err(unsafe_member(format!(
                "member {shown:?} is a link or a special file, not a regular file"
            )));
        }
        let Some(path) = names.take(f.name().as_bytes())? else {
            continue;
        };
        if f.encrypted() {
            let mut r = Reject::new(
                Kind::ArchiveEncrypted,
                Stage::Decode,
                format!(
                    "member {shown:?} is encrypted with a zip password; ferry reads OpenPGP \
                     files, not zip passwords (ask for an OpenPGP-encrypted file instead)"
                ),
            );
            r.offset = Some(offset);
            return Err(r);
        }
        if nested_by_name(&path) {
            return Err(nested(&format!("member {shown:?} is an archive")));
        }
        announced = announced.saturating_add(f.size());
        spill.check_announced(
            "the archive's members as its directory lists them",
            announced,
        )?;
        plan.push((i, path, f.size(), offset));
    }
    for (i, path, size, offset) in plan {
        let shown = path.display().to_string();
        let f = z.by_index(i).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(why) => Reject::new(
                Kind::ArchiveUnsupported,
                Stage::Decode,
                format!("member {shown:?}: {why} (ferry reads stored and deflated members)"),
            ),
            e => corrupt(
                format!("member {shown:?} (its header at byte {offset}): {e}"),
                Some(offset),
            ),
        })?;
        let m = spilled(spill, path, size, offset, f)?;
        if let Flow::Stop = each(m) {
            return Ok(());
        }
    }
    Ok(())
}

fn tar(
    r: impl Read,
    u: &Unpack,
    spill: &mut Spiller,
    names: &mut Names,
    each: &mut dyn FnMut(Member) -> Flow,
) -> Result<(), Reject> {
    let mut a = tar::Archive::new(r);
    let entries = a
        .entries()
        .map_err(|e| corrupt(format!("not a readable tar archive: {e}"), Some(0)))?;
    let mut count = 0usize;
    let mut last = 0u64;
    for e in entries {
        let e = e.map_err(|e| {
            corrupt(
                format!("the archive is corrupt or cut short after byte {last}: {e}"),
                Some(last),
            )
        })?;
        count += 1;
        if count > u.max_members {
            return Err(too_many(u));
        }
        let offset = e.raw_header_position();
        last = offset;
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        use tar::EntryType as T;
        match e.header().entry_type() {
            T::Regular | T::Continuous => {}
            T::Directory => {
                folder_without_bytes(&shown, e.size())?;
                continue;
            }
            T::XGlobalHeader => continue,
            T::Symlink | T::Link | T::Char | T::Block | T::Fifo => {
                return Err(unsafe_member(format!(
                    "member {shown:?} is a link or a device, not a regular file"
                )))
            }
            other => {
                return Err(Reject::new(
                    Kind::ArchiveUnsupported,
                    Stage::Decode,
                    format!(
                    "member {shown:?} is a tar entry of type {other:?}, which ferry does not read"
                ),
                ))
            }
        }
        let Some(path) = names.take(&raw)? else {
            continue;
        };
        if nested_by_name(&path) {
            return Err(nested(&format!("member {shown:?} is an archive")));
        }
        let size = e.size();
        spill.check_announced(&format!("member {shown:?}"), size)?;
        let m = spilled(spill, path, size, offset, e)?;
        if let Flow::Stop = each(m) {
            return Ok(());
        }
    }
    nothing_after(a.into_inner(), spill, last)
}

/// The entries a zip's end-of-central-directory record lists — its zip64 record's when the
/// count did not fit (`None`: no record found, where the zip reader's own count stands).
fn listed_entries(file: &File) -> Option<u64> {
    let size = file.metadata().ok()?.len();
    let tail = size.min(66 << 10);
    let mut buf = vec![0u8; tail as usize];
    let got = super::read_at_most(file, &mut buf, size - tail).ok()?;
    buf.truncate(got);
    let at = buf.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let rec = buf.get(at..at + 22)?;
    let total = u16::from_le_bytes([rec[10], rec[11]]);
    if total != 0xFFFF {
        return Some(u64::from(total));
    }
    // Zip64: a locator just before the record names where the zip64 record is.
    let loc = buf.get(at.checked_sub(20)?..at)?;
    if &loc[..4] != b"PK\x06\x07" {
        return None;
    }
    let offset = u64::from_le_bytes(loc[8..16].try_into().ok()?);
    let mut rec64 = [0u8; 56];
    if super::read_at_most(file, &mut rec64, offset).ok()? < 56 || &rec64[..4] != b"PK\x06\x06" {
        return None;
    }
    Some(u64::from_le_bytes(rec64[32..40].try_into().ok()?))
}

/// What follows a tar archive's end must be its zero padding: bytes there would be content
/// nobody reads (a second archive appended, say), so the archive is refused, not loaded without
/// them. Read within the expansion bound.
fn nothing_after(mut r: impl Read, spill: &Spiller, last: u64) -> Result<(), Reject> {
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(corrupt(
                    format!(
                        "the archive is corrupt after its last member (header at byte {last}): {e}"
                    ),
                    Some(last),
                ))
            }
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(corrupt(
                format!(
                    "bytes after the archive's end (its last member's header is at byte {last}) \
                     hold data ferry would not read; the archive is refused rather than loaded \
                     without them"
                ),
                Some(last),
            ));
        }
        seen += n as u64;
        if seen > spill.budget() {
            return Err(spill.too_big("the padding after the archive's end"));
        }
    }
}
