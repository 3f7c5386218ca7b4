//! Reading one file's bytes: the pass that names it (its SHA-256), the pass the parser reads
//! (hashed again for big files), and the check that the file did not change in between.
//!
//! Small files are read once into memory and parsed from those bytes. Big files are hashed in a
//! first pass (so a duplicate is known before any parsing) and streamed in a second that hashes
//! again: the records stored must come from exactly the bytes the recorded hash names.

use crate::discover::Stamp;
use crate::hash::{FileHash, Hasher};
use crate::reject::{Kind, Reject, Stage};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::sync::{Arc, Mutex};

/// What the first pass learned: the content's hash and length, and for a small file its bytes.
pub struct Identity {
    pub hash: FileHash,
    pub len: u64,
    bytes: Option<Vec<u8>>,
}

/// The stamp of an open file, which must be a regular file.
pub fn regular(file: &File) -> Result<Stamp, Reject> {
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(Stamp::of(&m)),
        Ok(_) => Err(Reject::new(
            Kind::SpecialFile,
            Stage::Claim,
            "not a regular file",
        )),
        Err(e) => Err(Reject::new(
            Kind::IoRead,
            Stage::Read,
            format!("cannot stat the file: {e}"),
        )),
    }
}

/// A read that failed (not the content's fault: it is tried again).
pub fn failed(e: io::Error) -> Reject {
    Reject::new(
        Kind::IoRead,
        Stage::Read,
        format!("reading the file failed: {e}"),
    )
}

/// The first pass, done already: a big file downloaded by ferry was hashed as it was written
/// (`remote::pull`). The parse pass hashes it again, as for any big file, and a difference puts
/// the file back.
pub fn identified(hash: FileHash, len: u64) -> Identity {
    Identity {
        hash,
        len,
        bytes: None,
    }
}

/// The first pass: a small file (`size` ≤ `small`) is read into memory, a big one hashed and
/// rewound.
pub fn identify(mut file: &File, size: u64, small: bool) -> io::Result<Identity> {
    if small {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes)?;
        // Both passes at once: the second reads from memory.
        read_half_bytes(2 * bytes.len() as u64);
        Ok(Identity {
            hash: FileHash::of_bytes(&bytes),
            len: bytes.len() as u64,
            bytes: Some(bytes),
        })
    } else {
        let (hash, len) = FileHash::of_reader(Counting(file))?;
        file.rewind()?;
        Ok(Identity {
            hash,
            len,
            bytes: None,
        })
    }
}

/// The parser's pass over one file, and for a big file the hash of what it read.
pub struct Pass {
    /// `None` for ferry's own copy (an unpacked member): nobody else writes it.
    rehash: Option<Arc<Mutex<Hasher>>>,
}

impl Pass {
    /// The reader the parser consumes: the small file's bytes, or the big file streamed and
    /// hashed again.
    pub fn start(
        file: &File,
        first: &mut Identity,
    ) -> io::Result<(Pass, Box<dyn Read + Send + 'static>)> {
        let hasher = Arc::new(Mutex::new(Hasher::default()));
        let raw: Box<dyn Read + Send> = match first.bytes.take() {
            Some(b) => Box::new(io::Cursor::new(b)),
            None => Box::new(io::BufReader::with_capacity(
                256 * 1024,
                Hashing {
                    inner: file.try_clone()?,
                    hasher: hasher.clone(),
                },
            )),
        };
        Ok((
            Pass {
                rehash: Some(hasher),
            },
            raw,
        ))
    }

    /// The parser's pass over ferry's own copy of a file (an archive member it unpacked and
    /// hashed while writing it): read as it is, not hashed again.
    pub fn own(file: &File, first: &mut Identity) -> io::Result<(Pass, Box<dyn Read + Send>)> {
        let raw: Box<dyn Read + Send> = match first.bytes.take() {
            Some(b) => Box::new(io::Cursor::new(b)),
            None => Box::new(io::BufReader::with_capacity(256 * 1024, file.try_clone()?)),
        };
        Ok((Pass { rehash: None }, raw))
    }

    /// Whether the file changed since `before` (size or mtime), or — for a big file whose
    /// parse succeeded — whether the bytes read in the second pass (plus any trailing bytes the
    /// parser left) hash differently from the first: a rewrite in place that kept size and
    /// mtime is caught too.
    pub fn changed(self, file: &File, before: &Stamp, hash: FileHash, streamed: bool) -> bool {
        let moved = file.metadata().map_or(true, |m| {
            let after = Stamp::of(&m);
            after.size != before.size || after.mtime_ns != before.mtime_ns
        });
        let Some(rehash) = self.rehash.filter(|_| streamed && !moved) else {
            return moved;
        };
        let mut rest = Hashing {
            inner: file,
            hasher: rehash.clone(),
        };
        let again = io::copy(&mut rest, &mut io::sink()).ok().map(|_| {
            let mut h = rehash.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *h).finish().0
        });
        if again != Some(hash) {
            tracing::warn!("the file's content changed while it was read; it goes back");
            return true;
        }
        false
    }
}

/// Counts bytes read for the progress bar, in halves: each file is read twice (a big one
/// streamed twice, a small one once into memory and counted twice), so half of what is read is
/// how far through the files' bytes the run is.
fn read_half_bytes(n: u64) {
    crate::events::counters()
        .half_bytes_read
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Passes bytes through, counting them (`read_half_bytes`).
struct Counting<R>(R);

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        read_half_bytes(n as u64);
        Ok(n)
    }
}

/// Passes bytes through and hashes them into a shared hasher.
struct Hashing<R> {
    inner: R,
    hasher: Arc<Mutex<Hasher>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        read_half_bytes(n as u64);
        self.hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Half of what both passes read: the progress bar's position, in the files' bytes.
    fn progress_of(size: usize, small: bool) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; size]).unwrap();
        let file = File::open(&path).unwrap();
        let c = crate::events::counters();
        let before = c.half_bytes_read.load(Ordering::Relaxed);
        let mut first = identify(&file, size as u64, small).unwrap();
        let (_pass, mut raw) = Pass::start(&file, &mut first).unwrap();
        io::copy(&mut raw, &mut io::sink()).unwrap();
        (c.half_bytes_read.load(Ordering::Relaxed) - before) / 2
    }

    #[test]
    fn progress_counts_each_files_bytes_once_whichever_way_it_is_read() {
        assert_eq!(progress_of(3_000, true), 3_000);
        assert_eq!(progress_of(700_001, false), 700_001);
    }
}
