//! Turning a file's bytes into a stream of UTF-8 text.
//!
//! The stack, outermost last: raw bytes → gzip (for `.gz`) → byte-order-mark sniffing →
//! UTF-8 validation (or transcoding from a declared encoding) → the parser. Each layer is a
//! `Read` adapter, so memory stays flat whatever the file size.
//!
//! Content errors (invalid UTF-8, a NUL character, a corrupt gzip stream) travel up through
//! `io::Error` carrying a `Reject`, so the parsers can tell them from real IO errors with
//! `classify`. Lines are counted the way people see them: LF, CRLF and a lone CR each end one.

use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

/// The text encoding a dataset declares. `None` in the options means UTF-8 (validated).
pub type Encoding = &'static encoding_rs::Encoding;

/// Looks up an encoding by its WHATWG label (`latin1`, `windows-1252`, `utf-16le`, …).
pub fn encoding_for_label(label: &str) -> Option<Encoding> {
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
}

/// Wraps a content error so it survives the trip through `io::Read`.
pub fn reject_io(r: Reject) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, r)
}

/// What went wrong under a parser: the file's content (reject now) or the environment (retry).
pub fn classify(e: io::Error) -> Reject {
    if e.get_ref().is_some_and(|inner| inner.is::<Reject>()) {
        let inner = e.into_inner().expect("checked above");
        return *inner.downcast::<Reject>().expect("checked above");
    }
    Reject::new(
        Kind::IoRead,
        Stage::Read,
        format!("reading the file failed: {e}"),
    )
}

/// Decompresses gzip, turning corrupt or truncated streams into `gzip.corrupt` rejects.
pub struct Gunzip<R: Read> {
    inner: flate2::read::MultiGzDecoder<R>,
    out: u64,
}

impl<R: Read> Gunzip<R> {
    pub fn new(r: R) -> Self {
        Gunzip {
            inner: flate2::read::MultiGzDecoder::new(r),
            out: 0,
        }
    }
}

impl<R: Read> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.out += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput
                        | io::ErrorKind::InvalidData
                        | io::ErrorKind::UnexpectedEof
                ) && !e.get_ref().is_some_and(|i| i.is::<Reject>()) =>
            {
                Err(reject_io(
                    Reject::new(
                        Kind::GzipCorrupt,
                        Stage::Decode,
                        format!(
                            "the gzip stream is corrupt or truncated after {} decompressed bytes: {e}",
                            self.out
                        ),
                    )
                    .at_offset(self.out),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// Counts line ends in a stream fed piece by piece: LF, CRLF (one end, even when split between
/// two pieces) and a lone CR (old Mac files) each end a line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines {
    ends: u64,
    /// The last byte fed was a CR: an LF at the start of the next piece completes it.
    cr_pending: bool,
}

impl Lines {
    pub fn feed(&mut self, b: &[u8]) {
        let Some(&last) = b.last() else { return };
        for i in memchr::memchr2_iter(b'\r', b'\n', b) {
            let after_cr = if i == 0 {
                self.cr_pending
            } else {
                b[i - 1] == b'\r'
            };
            if b[i] == b'\r' || !after_cr {
                self.ends += 1;
            }
        }
        self.cr_pending = last == b'\r';
    }

    /// One line-end byte (CR or LF) consumed on its own: the same count as `feed(&[b])`.
    pub fn end(&mut self, b: u8) {
        if b == b'\r' || !self.cr_pending {
            self.ends += 1;
        }
        self.cr_pending = b == b'\r';
    }

    /// Bytes that are no line ends were consumed (not counted: they cannot end a line, and an
    /// LF after them is a line end of its own).
    pub fn text(&mut self) {
        self.cr_pending = false;
    }

    /// The 1-based line of the next byte.
    pub fn line(&self) -> u64 {
        self.ends + 1
    }

    /// The line of the next byte if `more` were fed first.
    pub fn line_after(&self, more: &[u8]) -> u64 {
        let mut l = *self;
        l.feed(more);
        l.line()
    }
}

/// Fails with `encoding.nul` (line and offset) at the first NUL character of decoded text.
pub struct NulCheck<R: Read> {
    inner: R,
    offset: u64,
    lines: Lines,
}

impl<R: Read> NulCheck<R> {
    pub fn new(inner: R, start_offset: u64) -> Self {
        NulCheck {
            inner,
            offset: start_offset,
            lines: Lines::default(),
        }
    }
}

impl<R: Read> Read for NulCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        if let Some(at) = memchr::memchr(0, got) {
            let line = self.lines.line_after(&got[..at]);
            let offset = self.offset + at as u64;
            return Err(reject_io(nul_reject(line, offset)));
        }
        self.lines.feed(got);
        self.offset += n as u64;
        Ok(n)
    }
}

/// The reject for a NUL character at `line`/`offset`.
pub fn nul_reject(line: u64, offset: u64) -> Reject {
    Reject::new(
        Kind::EncodingNul,
        Stage::Decode,
        format!(
            "line {line} holds a NUL character (byte {offset}); most tools cut a value there and \
             PostgreSQL cannot store it. If the partner really sends NULs, set allow_nul = true on \
             the dataset"
        ),
    )
    .at_line(line)
    .at_offset(offset)
}

/// Reads the first bytes to find a byte-order mark, then returns a reader of UTF-8 text:
/// a UTF-8 BOM is dropped; a UTF-16 BOM (or a declared encoding) means transcoding; otherwise
/// the bytes are validated as UTF-8 as they pass. Unless `allow_nul`, a NUL character is an
/// error (`encoding.nul`).
pub fn decoded<'a>(
    raw: Box<dyn Read + Send + 'a>,
    declared: Option<Encoding>,
    allow_nul: bool,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let (text, skipped) = decode(raw, declared)?;
    Ok(if allow_nul {
        text
    } else {
        Box::new(NulCheck::new(text, skipped))
    })
}

/// `decoded` without the NUL check; also returns how many leading bytes (a BOM) were dropped.
fn decode<'a>(
    mut raw: Box<dyn Read + Send + 'a>,
    declared: Option<Encoding>,
) -> io::Result<(Box<dyn Read + Send + 'a>, u64)> {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match raw.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &head[..n];
    let utf16 = if head.starts_with(&[0xFF, 0xFE]) {
        Some(encoding_rs::UTF_16LE)
    } else if head.starts_with(&[0xFE, 0xFF]) {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    };
    let declared = declared.filter(|e| *e != encoding_rs::UTF_8);
    if let Some(enc) = utf16.or(declared) {
        // encoding_rs sniffs and removes any BOM itself (and a BOM wins over the label).
        let whole = io::Cursor::new(head.to_vec()).chain(raw);
        return Ok((Box::new(Transcode::new(whole, enc)), 0));
    }
    let rest: Vec<u8> = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        Vec::new()
    } else {
        head.to_vec()
    };
    let skipped = (head.len() - rest.len()) as u64;
    Ok((
        Box::new(Utf8Check::new(io::Cursor::new(rest).chain(raw), skipped)),
        skipped,
    ))
}

/// Passes bytes through, failing with `encoding.invalid_utf8` (exact byte offset and line) at
/// the first byte that is not UTF-8. Sequences split across reads are carried over.
pub struct Utf8Check<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// `buf[pos..valid]` is validated and not yet handed out; `buf[valid..filled]` is an
    /// incomplete sequence waiting for more bytes.
    pos: usize,
    valid: usize,
    filled: usize,
    /// Offset in the file of `buf[pos]`.
    offset: u64,
    /// Line ends handed out so far.
    lines: Lines,
}

impl<R: Read> Utf8Check<R> {
    pub fn new(inner: R, start_offset: u64) -> Self {
        Utf8Check {
            inner,
            buf: vec![0; 64 * 1024],
            pos: 0,
            valid: 0,
            filled: 0,
            offset: start_offset,
            lines: Lines::default(),
        }
    }

    fn invalid(&self, valid_len: usize, bad: &[u8]) -> io::Error {
        let valid = &self.buf[self.pos..self.pos + valid_len];
        let line = self.lines.line_after(valid);
        let offset = self.offset + valid_len as u64;
        let shown: Vec<String> = bad.iter().take(4).map(|b| format!("0x{b:02X}")).collect();
        reject_io(
            Reject::new(
                Kind::InvalidUtf8,
                Stage::Decode,
                format!(
                    "byte {offset} (line {line}) is not valid UTF-8 ({}); if the partner sends \
                     another encoding, declare it with `encoding` on the dataset",
                    shown.join(" ")
                ),
            )
            .at_line(line)
            .at_offset(offset),
        )
    }

    /// Makes validated bytes available, unless the input is exhausted.
    fn fill(&mut self) -> io::Result<()> {
        while self.pos == self.valid {
            // Keep the incomplete tail, drop what was handed out.
            self.buf.copy_within(self.valid..self.filled, 0);
            self.filled -= self.valid;
            self.pos = 0;
            self.valid = 0;
            let n = loop {
                match self.inner.read(&mut self.buf[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if self.filled > 0 {
                    let bad = self.buf[..self.filled].to_vec();
                    return Err(self.invalid(0, &bad));
                }
                return Ok(());
            }
            self.filled += n;
            match std::str::from_utf8(&self.buf[..self.filled]) {
                Ok(_) => self.valid = self.filled,
                Err(e) => {
                    let v = e.valid_up_to();
                    if e.error_len().is_some() {
                        let bad = self.buf[v..self.filled.min(v + 4)].to_vec();
                        return Err(self.invalid(v, &bad));
                    }
                    self.valid = v;
                }
            }
        }
        Ok(())
    }

    fn consume_bytes(&mut self, n: usize) {
        self.lines.feed(&self.buf[self.pos..self.pos + n]);
        self.offset += n as u64;
        self.pos += n;
    }
}

impl<R: Read> Read for Utf8Check<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let n = (self.valid - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume_bytes(n);
        Ok(n)
    }
}

/// Transcodes from a declared encoding into UTF-8.
pub struct Transcode<R: Read> {
    inner: R,
    decoder: encoding_rs::Decoder,
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
    eof: bool,
    done: bool,
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
}

impl<R: Read> Transcode<R> {
    pub fn new(inner: R, enc: Encoding) -> Self {
        Transcode {
            inner,
            decoder: enc.new_decoder(),
            raw: vec![0; 64 * 1024],
            raw_start: 0,
            raw_end: 0,
            eof: false,
            done: false,
            out: vec![0; 3 * 64 * 1024 + 16],
            out_start: 0,
            out_end: 0,
        }
    }
}

impl<R: Read> Read for Transcode<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = (self.out_end - self.out_start).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if self.raw_start == self.raw_end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut self.raw) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                self.raw_start = 0;
                self.raw_end = n;
                self.eof = n == 0;
            }
            let (result, read, written, _) = self.decoder.decode_to_utf8(
                &self.raw[self.raw_start..self.raw_end],
                &mut self.out,
                self.eof,
            );
            self.raw_start += read;
            self.out_start = 0;
            self.out_end = written;
            if self.eof && result == encoding_rs::CoderResult::InputEmpty {
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`, like a slow pipe.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn decode(bytes: &[u8], enc: Option<Encoding>, step: usize) -> Result<String, Reject> {
        let src = Trickle {
            bytes: bytes.to_vec(),
            at: 0,
            step,
        };
        let mut r = decoded(Box::new(src), enc, false).map_err(classify)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(String::from_utf8(out).expect("decoded text is UTF-8"))
    }

    #[test]
    fn utf8_passes_and_bom_goes() {
        for step in [1, 2, 7, 4096] {
            assert_eq!(
                decode("a,é\n€,𝄞\n".as_bytes(), None, step).unwrap(),
                "a,é\n€,𝄞\n"
            );
            assert_eq!(
                decode(b"\xEF\xBB\xBFid\n1\n", None, step).unwrap(),
                "id\n1\n"
            );
            assert_eq!(decode(b"", None, step).unwrap(), "");
        }
    }

    #[test]
    fn invalid_utf8_has_exact_offset_and_line() {
        for step in [1, 3, 4096] {
            let err = decode(b"id,name\n1,caf\xE9\n", None, step).unwrap_err();
            assert_eq!(err.kind, Kind::InvalidUtf8);
            assert_eq!(err.offset, Some(13));
            assert_eq!(err.line, Some(2));
            // A sequence cut off by the end of the file is invalid too.
            let err = decode(b"ab\xE2\x82", None, step).unwrap_err();
            assert_eq!(err.offset, Some(2));
        }
    }

    #[test]
    fn declared_and_sniffed_encodings_transcode() {
        let latin1 = encoding_for_label("latin1").unwrap();
        for step in [1, 5, 4096] {
            assert_eq!(decode(b"caf\xE9\n", Some(latin1), step).unwrap(), "café\n");
            // UTF-16LE with BOM, no declaration needed.
            let mut u16 = vec![0xFF, 0xFE];
            for c in "a,é\n".encode_utf16() {
                u16.extend_from_slice(&c.to_le_bytes());
            }
            assert_eq!(decode(&u16, None, step).unwrap(), "a,é\n");
        }
    }

    #[test]
    fn lines_end_at_lf_crlf_and_lone_cr_even_when_split() {
        let text = b"a\nb\r\nc\rd\r\r\ne";
        for step in 1..text.len() {
            let mut l = Lines::default();
            for piece in text.chunks(step) {
                l.feed(piece);
            }
            assert_eq!(l.line(), 6, "pieces of {step}");
        }
        assert_eq!(Lines::default().line_after(b"x\r"), 2);
    }

    #[test]
    fn nul_characters_are_refused_with_their_place() {
        for step in [1, 3, 4096] {
            let err = decode(b"id\r1,a\x00b\n", None, step).unwrap_err();
            assert_eq!(err.kind, Kind::EncodingNul);
            assert_eq!((err.line, err.offset), (Some(2), Some(6)));
            // After a BOM the offset is still the file's.
            let err = decode(b"\xEF\xBB\xBFa\x00", None, step).unwrap_err();
            assert_eq!(err.offset, Some(4));
        }
        let mut u16 = vec![0xFF, 0xFE];
        for c in "a\0".encode_utf16() {
            u16.extend_from_slice(&c.to_le_bytes());
        }
        assert_eq!(decode(&u16, None, 2).unwrap_err().kind, Kind::EncodingNul);
    }

    #[test]
    fn corrupt_gzip_is_a_content_error() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&b"id,name\n1,a\n".repeat(1000)).unwrap();
        let gz = enc.finish().unwrap();
        let mut whole = String::new();
        Gunzip::new(&gz[..]).read_to_string(&mut whole).unwrap();
        assert_eq!(whole.len(), 12_000);
        let mut cut = Vec::new();
        let err = Gunzip::new(&gz[..gz.len() / 2])
            .read_to_end(&mut cut)
            .unwrap_err();
        assert_eq!(classify(err).kind, Kind::GzipCorrupt);
    }
}
