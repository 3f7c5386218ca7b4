//! File identity: the SHA-256 of the full content, streamed.
//!
//! A file is never identified by its path, name, size or a prefix: two files are the same file
//! exactly when their bytes are. This module only hashes; it does not decide what a duplicate is.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};

/// The SHA-256 of a file's complete content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHash([u8; 32]);

impl FileHash {
    pub fn of_bytes(bytes: &[u8]) -> FileHash {
        FileHash(Sha256::digest(bytes).into())
    }

    /// Hashes everything `r` yields, returning the hash and the number of bytes read.
    pub fn of_reader(mut r: impl Read) -> io::Result<(FileHash, u64)> {
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(h.finish())
    }

    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap());
            s.push(char::from_digit((b & 15) as u32, 16).unwrap());
        }
        s
    }
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHash({})", &self.hex()[..12])
    }
}

/// An incremental hasher, for callers that see the bytes anyway.
#[derive(Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn finish(self) -> (FileHash, u64) {
        (FileHash(self.inner.finalize().into()), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            FileHash::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let (h, n) = FileHash::of_reader(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            h.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
