//! Records read straight off ferry's own buffer: one pass over the bytes splits fields, unescapes
//! quoted ones, follows the quoting rules strictly (RFC 4180) or leniently, counts lines the way
//! people see them, and refuses a record longer than the limit before it is buffered whole.
//!
//! Lenient mode reads exactly what csv-core (the csv crate's parser) reads, except that a file
//! ending inside quotes is refused (`csv.unterminated_quote`) where csv-core silently ends the
//! field: a truncated upload must not load as if complete. Strict mode refuses in addition a
//! quote inside a field that does not start with one, and text after a closing quote
//! (`csv.stray_quote`), at the offending byte. Blank lines between records are skipped and
//! counted; a CR, an LF or a CRLF ends a record.

use super::CsvOptions;
use crate::format::text::{classify, Lines};
use crate::format::Stop;
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

/// Most fields a record may have before it is refused (bounds the field index, whatever a line
/// of delimiters holds).
const MAX_FIELDS: usize = 1 << 16;

/// How a field ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Delimiter,
    Record,
    Input,
}

pub(super) struct Records<R: Read> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    delimiter: u8,
    quote: u8,
    strict: bool,
    /// The bytes that end an unquoted field's plain run: delimiter, quote, CR, LF.
    special: [bool; 256],
    /// The current record's unescaped bytes, and where each field ends in them.
    pub(super) out: Vec<u8>,
    pub(super) ends: Vec<usize>,
    pub(super) nfields: usize,
    /// Line ends consumed so far; byte offset of the next unconsumed byte.
    lines: Lines,
    byte: u64,
    max_record: usize,
    /// Where the current record started.
    pub(super) rec_line: u64,
    pub(super) rec_byte: u64,
    /// The line the next record starts on if no blank line comes first.
    next_line: u64,
    /// Blank lines skipped between records (not those at the end), and the first few of them.
    pub(super) blank: u64,
    pub(super) blank_at: Vec<u64>,
}

impl<R: Read> Records<R> {
    pub(super) fn new(src: R, opt: &CsvOptions) -> Self {
        let mut special = [false; 256];
        for b in [opt.delimiter, opt.quote, b'\n', b'\r'] {
            special[usize::from(b)] = true;
        }
        Records {
            src,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            eof: false,
            delimiter: opt.delimiter,
            quote: opt.quote,
            strict: opt.strict_quotes,
            special,
            out: Vec::with_capacity(4096),
            ends: Vec::with_capacity(64),
            nfields: 0,
            lines: Lines::default(),
            byte: 0,
            max_record: opt.max_record,
            rec_line: 1,
            rec_byte: 0,
            next_line: 1,
            blank: 0,
            blank_at: Vec::new(),
        }
    }

    /// Makes unconsumed bytes available; false at the end of the input.
    #[inline]
    fn fill(&mut self) -> Result<bool, Stop> {
        if self.pos < self.len {
            return Ok(true);
        }
        self.refill()
    }

    #[cold]
    fn refill(&mut self) -> Result<bool, Stop> {
        if self.eof {
            return Ok(false);
        }
        self.pos = 0;
        self.len = loop {
            match self.src.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Stop::Reject(classify(e))),
            }
        };
        self.eof = self.len == 0;
        Ok(!self.eof)
    }

    /// Consumes `n` bytes that are not part of any value (quotes, delimiters).
    #[inline]
    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.byte += n as u64;
    }

    /// Consumes a line end (CR or LF), counting it.
    fn line_end(&mut self) {
        self.lines.end(self.buf[self.pos]);
        self.skip(1);
    }

    /// Consumes `n` bytes into the current record's value bytes, refusing a record that grows
    /// past the limit before it is buffered.
    #[inline]
    fn take(&mut self, n: usize) -> Result<(), Stop> {
        if self.out.len() + n > self.max_record {
            return Err(self.too_long().into());
        }
        self.out
            .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.skip(n);
        Ok(())
    }

    /// Reads the next record into `out`/`ends`; false at the end of the input.
    pub(super) fn next(&mut self) -> Result<bool, Stop> {
        self.out.clear();
        self.ends.clear();
        self.nfields = 0;
        // Blank lines and the LF of a CRLF belong before the record, not in it.
        loop {
            if !self.fill()? {
                return Ok(false);
            }
            match self.buf[self.pos] {
                b'\r' | b'\n' => self.line_end(),
                _ => break,
            }
        }
        self.lines.text();
        self.rec_line = self.lines.line();
        self.rec_byte = self.byte;
        if self.rec_line > self.next_line {
            // Blank lines before a record: ferry skips them and says so.
            let room = 5usize.saturating_sub(self.blank_at.len());
            self.blank_at
                .extend((self.next_line..self.rec_line).take(room));
            self.blank += self.rec_line - self.next_line;
        }
        loop {
            let end = if self.fill()? && self.buf[self.pos] == self.quote {
                self.quoted()?
            } else {
                self.unquoted()?
            };
            if self.ends.len() == MAX_FIELDS {
                return Err(Reject::new(
                    Kind::SchemaTooManyColumns,
                    Stage::Parse,
                    format!("line {} has more than {MAX_FIELDS} fields", self.rec_line),
                )
                .at_line(self.rec_line)
                .at_offset(self.rec_byte)
                .into());
            }
            self.ends.push(self.out.len());
            if end != End::Delimiter {
                break;
            }
        }
        self.nfields = self.ends.len();
        self.next_line = self.lines.line();
        Ok(true)
    }

    /// Consumes the delimiter or line end at the next byte, if it is one: how the field ended.
    #[inline]
    fn field_end(&mut self) -> Option<End> {
        let b = self.buf[self.pos];
        if b == self.delimiter {
            self.skip(1);
            Some(End::Delimiter)
        } else if b == b'\n' || b == b'\r' {
            self.line_end();
            Some(End::Record)
        } else {
            None
        }
    }

    /// A field that does not start with a quote (or the rest of one after a closing quote, in
    /// lenient mode), up to the delimiter or line end that ends it.
    fn unquoted(&mut self) -> Result<End, Stop> {
        loop {
            let run = self.buf[self.pos..self.len]
                .iter()
                .position(|&b| self.special[usize::from(b)])
                .unwrap_or(self.len - self.pos);
            self.take(run)?;
            if self.pos == self.len {
                if !self.fill()? {
                    return Ok(End::Input);
                }
                continue;
            }
            if let Some(end) = self.field_end() {
                return Ok(end);
            }
            // A quote inside a field that does not start with one: text, unless strict.
            if self.strict {
                return Err(self
                    .stray("a quote inside a field that does not start with one")
                    .into());
            }
            self.take(1)?;
        }
    }

    /// A field that starts with a quote: up to the closing quote (a doubled quote is one quote
    /// of the value), then the delimiter or line end that must follow.
    fn quoted(&mut self) -> Result<End, Stop> {
        let opened_at = self.byte;
        self.skip(1);
        loop {
            self.through_quote(opened_at)?;
            // After a quote that may close the field.
            if !self.fill()? {
                return Ok(End::Input);
            }
            if self.buf[self.pos] == self.quote {
                // A doubled quote: one quote in the value, still inside.
                self.take(1)?;
                continue;
            }
            if let Some(end) = self.field_end() {
                return Ok(end);
            }
            if self.strict {
                return Err(self
                    .stray("text after the closing quote of a quoted field")
                    .into());
            }
            // Lenient: what follows is plain text of the same field (`"b"c` reads `bc`).
            return self.unquoted();
        }
    }

    /// Inside quotes: the value's bytes up to the next quote, which is consumed; the file must
    /// not end first.
    fn through_quote(&mut self, opened_at: u64) -> Result<(), Stop> {
        loop {
            if !self.fill()? {
                return Err(self.unterminated(opened_at).into());
            }
            let rest = &self.buf[self.pos..self.len];
            let found = memchr::memchr(self.quote, rest);
            let n = found.unwrap_or(rest.len());
            self.lines.feed(&rest[..n]);
            self.take(n)?;
            if found.is_some() {
                self.skip(1);
                self.lines.text();
                return Ok(());
            }
        }
    }

    /// `csv.stray_quote` at the next unconsumed byte.
    fn stray(&self, what: &str) -> Reject {
        let (line, offset) = (self.lines.line(), self.byte);
        let from = self.pos.saturating_sub(20);
        let context = String::from_utf8_lossy(&self.buf[from..(self.pos + 10).min(self.len)]);
        Reject::new(
            Kind::CsvStrayQuote,
            Stage::Parse,
            format!(
                "line {line}, byte {offset}: {what} (near {context:?}); RFC 4180 allows quotes \
                 only around a whole field, doubled inside it. If the partner's files are like \
                 this on purpose, set quotes = \"lenient\" on the dataset"
            ),
        )
        .at_line(line)
        .at_offset(offset)
    }

    /// `csv.unterminated_quote` for the quoted field opened at byte `at`.
    fn unterminated(&self, at: u64) -> Reject {
        let line = self.rec_line;
        Reject::new(
            Kind::CsvUnterminatedQuote,
            Stage::Parse,
            format!(
                "line {line}: the quoted field opened at byte {at} is never closed: the file ends \
                 inside quotes, which usually means the upload was cut short"
            ),
        )
        .at_line(line)
        .at_offset(at)
    }

    fn too_long(&self) -> Reject {
        Reject::new(
            Kind::CsvLineTooLong,
            Stage::Parse,
            format!(
                "the record at line {} is longer than max_line_bytes ({} bytes); the rest of it \
                 was not read",
                self.rec_line, self.max_record
            ),
        )
        .at_line(self.rec_line)
        .at_offset(self.rec_byte)
    }

    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.nfields];
        (0..ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.out[start..ends[i]]
        })
    }
}
