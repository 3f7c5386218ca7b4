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

/// The text encoding a dataset (or an XML declaration) names. `None` in the options means
/// UTF-8 (validated).
///
/// Labels are looked up by the WHATWG Encoding Standard (encoding_rs), with one difference:
/// WHATWG reads `iso-8859-1`/`latin1`, `us-ascii`, `iso-8859-9`/`latin5` and
/// `iso-8859-11`/`tis-620` as their Windows supersets (windows-1252, -1252, -1254, -874), which
/// turn bytes the named encoding does not define (0x80–0x9F; 0x80–0xFF for ASCII) into
/// characters such as `€` or `“`. ferry honours the label: those bytes are `encoding.invalid`
/// (with a hint to declare the Windows encoding if that is what the partner sends). Labels that
/// WHATWG maps to its "replacement" decoder (`iso-2022-kr`, `hz-gb-2312`, …) cannot be decoded
/// faithfully and are refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    decoder: &'static encoding_rs::Encoding,
    /// Bytes the label does not define, though its WHATWG decoder reads them.
    narrow: Option<Narrow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Narrow {
    name: &'static str,
    first: u8,
    last: u8,
}

/// Labels WHATWG reads with a wider Windows decoder: the encoding they name, and the bytes only
/// the Windows encoding defines.
const NARROW: &[(&[&str], Narrow)] = &[
    (
        &["ansi_x3.4-1968", "ascii", "us-ascii"],
        Narrow {
            name: "US-ASCII",
            first: 0x80,
            last: 0xFF,
        },
    ),
    (
        &[
            "cp819",
            "csisolatin1",
            "ibm819",
            "iso-8859-1",
            "iso-ir-100",
            "iso8859-1",
            "iso88591",
            "iso_8859-1",
            "iso_8859-1:1987",
            "l1",
            "latin1",
        ],
        Narrow {
            name: "ISO-8859-1",
            first: 0x80,
            last: 0x9F,
        },
    ),
    (
        &[
            "csisolatin5",
            "iso-8859-9",
            "iso-ir-148",
            "iso8859-9",
            "iso88599",
            "iso_8859-9",
            "iso_8859-9:1989",
            "l5",
            "latin5",
        ],
        Narrow {
            name: "ISO-8859-9",
            first: 0x80,
            last: 0x9F,
        },
    ),
    (
        &["iso-8859-11", "iso8859-11", "iso885911", "tis-620"],
        Narrow {
            name: "ISO-8859-11",
            first: 0x80,
            last: 0x9F,
        },
    ),
];

impl Encoding {
    pub const UTF_8: Encoding = Encoding::whatwg(encoding_rs::UTF_8);

    /// An encoding exactly as WHATWG defines it.
    pub const fn whatwg(decoder: &'static encoding_rs::Encoding) -> Encoding {
        Encoding {
            decoder,
            narrow: None,
        }
    }

    /// The encoding a label names (see the type's documentation), or why ferry will not read it.
    pub fn for_label(label: &str) -> Result<Encoding, String> {
        let label = label.trim();
        let Some(decoder) = encoding_rs::Encoding::for_label(label.as_bytes()) else {
            return Err(format!(
                "unknown encoding {label:?} (e.g. utf-8, latin1, windows-1252, utf-16le, shift_jis)"
            ));
        };
        if decoder == encoding_rs::REPLACEMENT {
            return Err(format!(
                "encoding {label:?} cannot be decoded faithfully (the Encoding Standard reads \
                 every such file as one replacement character); convert the files to UTF-8"
            ));
        }
        let lower = label.to_ascii_lowercase();
        let narrow = NARROW
            .iter()
            .find(|(labels, _)| labels.contains(&lower.as_str()))
            .map(|(_, n)| *n);
        Ok(Encoding { decoder, narrow })
    }

    /// The encoding's name (`UTF-8`, `ISO-8859-1`, `windows-1252`, `Shift_JIS`, …).
    pub fn name(&self) -> &'static str {
        self.narrow.map_or(self.decoder.name(), |n| n.name)
    }

    pub fn is_utf8(&self) -> bool {
        self.decoder == encoding_rs::UTF_8
    }

    pub fn is_single_byte(&self) -> bool {
        self.decoder.is_single_byte()
    }

    /// Whether ASCII bytes mean ASCII characters in it (an XML declaration can be read).
    pub fn is_ascii_compatible(&self) -> bool {
        self.decoder.is_ascii_compatible()
    }
}

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
        Some(Encoding::whatwg(encoding_rs::UTF_16LE))
    } else if head.starts_with(&[0xFE, 0xFF]) {
        Some(Encoding::whatwg(encoding_rs::UTF_16BE))
    } else {
        None
    };
    let declared = declared.filter(|e| !e.is_utf8());
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

/// Transcodes from a declared encoding into UTF-8, strictly: malformed input (a lone UTF-16
/// surrogate, a file ending mid-character, a byte Shift_JIS does not define, a byte the label
/// does not define) is `encoding.invalid` with its byte offset and line, never a replacement
/// character.
pub struct Transcode<R: Read> {
    inner: R,
    encoding: Encoding,
    decoder: encoding_rs::Decoder,
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
    /// Offset in the (decompressed) file of `raw[0]`.
    raw_base: u64,
    eof: bool,
    done: bool,
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    /// Line ends in the text handed out so far.
    lines: Lines,
    /// An error to return once the text before it is handed out.
    pending: Option<Reject>,
}

impl<R: Read> Transcode<R> {
    pub fn new(inner: R, encoding: Encoding) -> Self {
        Transcode {
            inner,
            encoding,
            decoder: encoding.decoder.new_decoder(),
            raw: vec![0; 64 * 1024],
            raw_start: 0,
            raw_end: 0,
            raw_base: 0,
            eof: false,
            done: false,
            out: vec![0; 3 * 64 * 1024 + 16],
            out_start: 0,
            out_end: 0,
            lines: Lines::default(),
            pending: None,
        }
    }

    /// The reject for malformed input at file offset `at`, after `before` more text.
    fn invalid(&self, at: u64, bad: &[u8], before: &[u8]) -> Reject {
        let line = self.lines.line_after(before);
        let shown: Vec<String> = bad.iter().take(4).map(|b| format!("0x{b:02X}")).collect();
        let hint = match self.encoding.narrow {
            Some(n) if n.first == 0x80 && n.last == 0x9F => format!(
                "; {} leaves 0x80-0x9F undefined — if the partner sends {}, declare that",
                n.name,
                self.encoding.decoder.name()
            ),
            Some(n) => format!(
                "; {} has no bytes over 0x7F — declare the encoding the partner uses",
                n.name
            ),
            None => String::new(),
        };
        Reject::new(
            Kind::EncodingInvalid,
            Stage::Decode,
            format!(
                "byte {at} (line {line}) is not valid {} ({}){hint}",
                self.encoding.name(),
                shown.join(" ")
            ),
        )
        .at_line(line)
        .at_offset(at)
    }

    /// Decodes the next piece of raw bytes into `out`.
    fn step(&mut self) {
        let slice_start = self.raw_start;
        // A byte the label does not define stops the decoding right before it.
        let refused = self.encoding.narrow.and_then(|n| {
            self.raw[slice_start..self.raw_end]
                .iter()
                .position(|b| (n.first..=n.last).contains(b))
                .map(|k| slice_start + k)
        });
        let end = refused.unwrap_or(self.raw_end);
        let last = self.eof && refused.is_none();
        let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
            &self.raw[slice_start..end],
            &mut self.out,
            last,
        );
        self.raw_start += read;
        self.out_start = 0;
        self.out_end = written;
        let here = self.raw_base + self.raw_start as u64;
        match result {
            encoding_rs::DecoderResult::Malformed(bad, extra) => {
                let back = u64::from(bad) + u64::from(extra);
                let from = self.raw_start.saturating_sub(back as usize);
                let to = self.raw_start.saturating_sub(usize::from(extra));
                let r = self.invalid(here - back, &self.raw[from..to], &self.out[..written]);
                self.pending = Some(r);
            }
            encoding_rs::DecoderResult::InputEmpty => match refused {
                Some(k) if self.raw_start == k => {
                    let r = self.invalid(here, &self.raw[k..k + 1], &self.out[..written]);
                    self.pending = Some(r);
                }
                _ => self.done = last,
            },
            encoding_rs::DecoderResult::OutputFull => {}
        }
    }
}

impl<R: Read> Read for Transcode<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = (self.out_end - self.out_start).min(buf.len());
                let piece = &self.out[self.out_start..self.out_start + n];
                buf[..n].copy_from_slice(piece);
                self.lines.feed(piece);
                self.out_start += n;
                return Ok(n);
            }
            if let Some(r) = self.pending.take() {
                self.done = true;
                return Err(reject_io(r));
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
                self.raw_base += self.raw_end as u64;
                self.raw_start = 0;
                self.raw_end = n;
                self.eof = n == 0;
            }
            self.step();
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
        let latin1 = Encoding::for_label("latin1").unwrap();
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

    fn label(l: &str) -> Option<Encoding> {
        Some(Encoding::for_label(l).unwrap())
    }

    fn utf16le(units: &[u16]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xFE];
        for u in units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    #[test]
    fn malformed_input_is_refused_with_its_place_never_replaced() {
        let cases: Vec<(Vec<u8>, Option<Encoding>, u64, u64)> = vec![
            // A lone high surrogate on line 2 (offsets count the BOM: the file's bytes).
            (utf16le(&[0x61, 0x0A, 0xD800, 0x62]), None, 6, 2),
            // A lone low surrogate.
            (utf16le(&[0x61, 0xDC00]), None, 4, 1),
            // A file ending halfway through a UTF-16 unit.
            ([utf16le(&[0x61, 0x0A]), vec![0x62]].concat(), None, 6, 2),
            (b"a\n\x82\xA0\x82".to_vec(), label("shift_jis"), 4, 2),
            (b"id\n\xFF".to_vec(), label("euc-jp"), 3, 2),
            (b"\xB0\xA1\xB0".to_vec(), label("euc-kr"), 2, 1),
            (b"caf\xE9 \x93quoted\x94".to_vec(), label("latin1"), 5, 1),
            (b"a\r\nb\xE9".to_vec(), label("us-ascii"), 4, 2),
            (b"\x80".to_vec(), label("iso-8859-9"), 0, 1),
        ];
        for (bytes, enc, offset, line) in cases {
            for step in [1, 2, 3, 4096] {
                let err = decode(&bytes, enc, step).unwrap_err();
                assert_eq!(err.kind, Kind::EncodingInvalid, "{bytes:?} {enc:?}");
                assert_eq!(err.offset, Some(offset), "{bytes:?} {enc:?} step {step}");
                assert_eq!(err.line, Some(line), "{bytes:?} {enc:?} step {step}");
            }
        }
        // What the labels do define still reads.
        assert_eq!(decode(b"caf\xE9", label("latin1"), 1).unwrap(), "café");
        assert_eq!(
            decode(b"\x93q\x94", label("windows-1252"), 1).unwrap(),
            "“q”"
        );
        assert_eq!(decode(b"\xFD", label("latin5"), 1).unwrap(), "ı");
        assert_eq!(decode(b"\x82\xA0", label("shift_jis"), 1).unwrap(), "あ");
    }

    #[test]
    fn labels_that_cannot_decode_faithfully_are_refused() {
        for l in [
            "iso-2022-kr",
            "hz-gb-2312",
            "iso-2022-cn",
            "replacement",
            "nonsense",
        ] {
            assert!(Encoding::for_label(l).is_err(), "{l}");
        }
        assert_eq!(
            Encoding::for_label(" Latin1 ").unwrap().name(),
            "ISO-8859-1"
        );
        assert_eq!(
            Encoding::for_label("cp1252").unwrap().name(),
            "windows-1252"
        );
        assert_eq!(Encoding::for_label("sjis").unwrap().name(), "Shift_JIS");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Random bytes in any multi-byte or single-byte encoding either decode exactly as the
        /// Encoding Standard's strict decoder does, or are refused: never a U+FFFD that the
        /// bytes did not encode.
        #[test]
        fn decoding_is_strict_in_every_encoding(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            which in 0usize..8,
            step in 1usize..9,
        ) {
            let labels = ["shift_jis", "euc-jp", "euc-kr", "gbk", "big5", "gb18030", "iso-8859-2", "koi8-r"];
            let enc = Encoding::for_label(labels[which]).unwrap();
            let reference = enc.decoder.decode_without_bom_handling_and_without_replacement(&bytes);
            match decode(&bytes, Some(enc), step) {
                Ok(text) => {
                    proptest::prop_assert!(!text.contains(char::REPLACEMENT_CHARACTER), "a replacement character");
                    // A leading BOM (of UTF-8 or UTF-16) switches the decoder, as a BOM should.
                    if !bytes.starts_with(b"\xEF\xBB\xBF") && !bytes.starts_with(b"\xFF\xFE") && !bytes.starts_with(b"\xFE\xFF") {
                        proptest::prop_assert_eq!(Some(text.as_str()), reference.as_deref());
                    }
                }
                Err(e) => {
                    proptest::prop_assert!(matches!(e.kind, Kind::EncodingInvalid | Kind::EncodingNul | Kind::InvalidUtf8), "{:?}", e);
                    if e.kind == Kind::EncodingInvalid {
                        proptest::prop_assert!(e.offset.unwrap() < bytes.len() as u64);
                    }
                }
            }
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
