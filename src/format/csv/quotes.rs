//! Following RFC 4180 quoting over the bytes as they pass, ahead of csv-core: a file that ends
//! inside quotes is `csv.unterminated_quote`; in strict mode a quote where RFC 4180 allows none
//! is `csv.stray_quote`, with line and byte offset.

use crate::format::text::{reject_io, Lines};
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Q {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Tracks whether the input is inside a quoted field, as csv-core would parse it, and (when
/// strict) refuses quotes where RFC 4180 allows none.
pub(super) struct QuoteScan<R: Read> {
    inner: R,
    state: Q,
    delim: u8,
    quote: u8,
    strict: bool,
    offset: u64,
    /// Line ends before `offset`.
    lines: Lines,
    /// Where the currently open quoted field began.
    opened_at: u64,
}

impl<R: Read> QuoteScan<R> {
    pub(super) fn new(inner: R, delim: u8, quote: u8, strict: bool) -> Self {
        QuoteScan {
            inner,
            state: Q::FieldStart,
            delim,
            quote,
            strict,
            offset: 0,
            lines: Lines::default(),
            opened_at: 0,
        }
    }

    /// Follows the quoting state over `buf`; in strict mode, the position of a stray quote.
    fn scan(&mut self, buf: &[u8]) -> Result<(), (usize, &'static str)> {
        let (d, q) = (self.delim, self.quote);
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                Q::Quoted => match memchr::memchr(q, &buf[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = Q::QuoteInQuoted;
                    }
                    None => i = buf.len(),
                },
                Q::Unquoted => {
                    let end =
                        memchr::memchr3(d, b'\n', b'\r', &buf[i..]).map_or(buf.len(), |p| i + p);
                    if self.strict {
                        if let Some(p) = memchr::memchr(q, &buf[i..end]) {
                            return Err((
                                i + p,
                                "a quote inside a field that does not start with one",
                            ));
                        }
                    }
                    if end < buf.len() {
                        self.state = Q::FieldStart;
                        i = end + 1;
                    } else {
                        i = end;
                    }
                }
                Q::FieldStart | Q::QuoteInQuoted => {
                    let b = buf[i];
                    let closed = self.state == Q::QuoteInQuoted;
                    self.state = if b == q {
                        if !closed {
                            self.opened_at = self.offset + i as u64;
                        }
                        // At a field start a quote opens the field; after a closing quote a
                        // second quote is an escaped quote and the field stays open.
                        Q::Quoted
                    } else if b == d || b == b'\n' || b == b'\r' {
                        Q::FieldStart
                    } else if closed && self.strict {
                        return Err((i, "text after the closing quote of a quoted field"));
                    } else {
                        Q::Unquoted
                    };
                    i += 1;
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for QuoteScan<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.state == Q::Quoted {
                let at = self.opened_at;
                return Err(reject_io(
                    Reject::new(
                        Kind::CsvUnterminatedQuote,
                        Stage::Parse,
                        format!(
                            "the quoted field opened at byte {at} is never closed: the file ends \
                             inside quotes, which usually means the upload was cut short"
                        ),
                    )
                    .at_offset(at),
                ));
            }
            return Ok(0);
        }
        if let Err((at, what)) = self.scan(&buf[..n]) {
            let line = self.lines.line_after(&buf[..at]);
            let offset = self.offset + at as u64;
            let from = at.saturating_sub(20);
            let context = String::from_utf8_lossy(&buf[from..(at + 10).min(n)]);
            return Err(reject_io(
                Reject::new(
                    Kind::CsvStrayQuote,
                    Stage::Parse,
                    format!(
                        "line {line}, byte {offset}: {what} (near {context:?}); RFC 4180 allows \
                         quotes only around a whole field, doubled inside it. If the partner's \
                         files are like this on purpose, set quotes = \"lenient\" on the dataset"
                    ),
                )
                .at_line(line)
                .at_offset(offset),
            ));
        }
        self.lines.feed(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}
