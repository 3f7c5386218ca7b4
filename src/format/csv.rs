//! CSV (RFC 4180) parsing over the csv crate, plus what the crate does not check.
//!
//! The csv crate ends a quoted field silently at end of input, so a truncated upload
//! (`…,"half a val`) would load as if complete. `QuoteScan` follows the same quoting rules over
//! the bytes as they pass and fails with `csv.unterminated_quote` if the input ends inside quotes.
//! Row lengths are checked here too, for a clear `csv.ragged_row` message.

use super::text::{classify, reject_io};
use super::{ColumnNames, RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    /// Names for the columns when there is no header row.
    pub names: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            header: true,
            names: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Q {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Tracks whether the input is inside a quoted field, as csv-core would parse it.
pub struct QuoteScan<R: Read> {
    inner: R,
    state: Q,
    delim: u8,
    quote: u8,
    offset: u64,
    /// Where the currently open quoted field began.
    opened_at: u64,
}

impl<R: Read> QuoteScan<R> {
    pub fn new(inner: R, delim: u8, quote: u8) -> Self {
        QuoteScan {
            inner,
            state: Q::FieldStart,
            delim,
            quote,
            offset: 0,
            opened_at: 0,
        }
    }

    fn scan(&mut self, buf: &[u8]) {
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
                Q::Unquoted => match memchr::memchr3(d, b'\n', b'\r', &buf[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = Q::FieldStart;
                    }
                    None => i = buf.len(),
                },
                Q::FieldStart | Q::QuoteInQuoted => {
                    let b = buf[i];
                    let was_start = self.state == Q::FieldStart;
                    self.state = if b == q {
                        if was_start {
                            self.opened_at = self.offset + i as u64;
                        }
                        // At a field start a quote opens the field; after a closing quote a
                        // second quote is an escaped quote and the field stays open.
                        Q::Quoted
                    } else if b == d || b == b'\n' || b == b'\r' {
                        Q::FieldStart
                    } else {
                        Q::Unquoted
                    };
                    i += 1;
                }
            }
        }
        self.offset += buf.len() as u64;
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
        self.scan(&buf[..n]);
        Ok(n)
    }
}

/// Reads records with csv-core over our own buffer, so every record's raw bytes are seen and
/// its first line is exact (the csv crate's line counter skips newlines inside quoted fields).
struct Records<R: Read> {
    core: csv_core::Reader,
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// The current record's unescaped bytes, and where each field ends in them.
    out: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// 1 + newlines consumed so far; byte offset of the next unconsumed byte.
    line: u64,
    byte: u64,
    /// Where the current record started.
    rec_line: u64,
    rec_byte: u64,
}

impl<R: Read> Records<R> {
    fn new(src: R, opt: &CsvOptions) -> Self {
        let core = csv_core::ReaderBuilder::new()
            .delimiter(opt.delimiter)
            .quote(opt.quote)
            .build();
        Records {
            core,
            src,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            eof: false,
            out: vec![0; 4096],
            ends: vec![0; 64],
            nfields: 0,
            line: 1,
            byte: 0,
            rec_line: 1,
            rec_byte: 0,
        }
    }

    fn refill(&mut self) -> Result<(), Stop> {
        if self.pos < self.len || self.eof {
            return Ok(());
        }
        self.pos = 0;
        self.len = loop {
            match self.src.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let mut r = classify(e);
                    if r.kind == Kind::CsvUnterminatedQuote {
                        r.line = Some(self.rec_line);
                        r.message = format!("line {}: {}", self.rec_line, r.message);
                    }
                    return Err(Stop::Reject(r));
                }
            }
        };
        self.eof = self.len == 0;
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        let taken = &self.buf[self.pos..self.pos + n];
        self.line += memchr::memchr_iter(b'\n', taken).count() as u64;
        self.byte += n as u64;
        self.pos += n;
    }

    /// Reads the next record into `out`/`ends`; false at the end of the input.
    fn next(&mut self) -> Result<bool, Stop> {
        let mut outlen = 0;
        self.nfields = 0;
        let mut started = false;
        loop {
            self.refill()?;
            if !started {
                // Blank lines and the '\n' of a CRLF belong before the record, not in it.
                let skip = self.buf[self.pos..self.len]
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                self.consume(skip);
                if self.pos == self.len && !self.eof {
                    continue;
                }
                started = true;
                self.rec_line = self.line;
                self.rec_byte = self.byte;
            }
            let (res, nin, nout, nend) = self.core.read_record(
                &self.buf[self.pos..self.len],
                &mut self.out[outlen..],
                &mut self.ends[self.nfields..],
            );
            self.consume(nin);
            outlen += nout;
            self.nfields += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                csv_core::ReadRecordResult::Record => return Ok(true),
                csv_core::ReadRecordResult::End => return Ok(false),
            }
        }
    }

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.nfields];
        (0..ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.out[start..ends[i]]
        })
    }
}

/// Parses CSV text into `out`. Empty fields are nulls. A header with no rows is a valid file
/// with no records; a file with no header line at all is `empty`.
pub fn parse(r: impl Read, opt: &CsvOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut recs = Records::new(QuoteScan::new(r, opt.delimiter, opt.quote), opt);
    let mut names = ColumnNames::new();
    let mut first_is_data = false;
    if opt.header {
        if !recs.next()? {
            return Err(Reject::new(
                Kind::Empty,
                Stage::Parse,
                "the file has no header line (it is empty or only a byte-order mark)",
            )
            .into());
        }
        for f in recs.fields() {
            names.push(&String::from_utf8_lossy(f));
        }
    } else {
        for n in &opt.names {
            names.push(n);
        }
        if names.is_empty() {
            // No names configured: the first row decides how many columns there are.
            if !recs.next()? {
                return Err(Reject::new(Kind::Empty, Stage::Parse, "the file has no rows").into());
            }
            for i in 0..recs.nfields {
                names.push(&format!("column_{}", i + 1));
            }
            first_is_data = true;
        }
    }
    let width = names.len();
    out.columns(names.names())?;

    let mut spans: Vec<Option<(usize, usize)>> = Vec::with_capacity(width);
    let mut rows = 0u64;
    loop {
        if first_is_data {
            first_is_data = false;
        } else if !recs.next()? {
            break;
        }
        let line = recs.rec_line;
        if recs.nfields != width {
            return Err(Reject::new(
                Kind::CsvRaggedRow,
                Stage::Parse,
                format!(
                    "line {line} has {} fields where the header has {width}",
                    recs.nfields
                ),
            )
            .at_line(line)
            .at_offset(recs.rec_byte)
            .into());
        }
        let end = if width == 0 { 0 } else { recs.ends[width - 1] };
        let text = std::str::from_utf8(&recs.out[..end]).map_err(|e| {
            Reject::new(
                Kind::InvalidUtf8,
                Stage::Decode,
                format!("line {line} is not valid UTF-8: {e}"),
            )
            .at_line(line)
        })?;
        spans.clear();
        let mut start = 0;
        for &e in &recs.ends[..width] {
            spans.push(if e == start { None } else { Some((start, e)) });
            start = e;
        }
        out.row(line, text, &spans)?;
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Collect;

    fn run(input: &str, opt: &CsvOptions) -> Result<Collect, Reject> {
        let mut c = Collect::default();
        match parse(input.as_bytes(), opt, &mut c) {
            Ok(_) => Ok(c),
            Err(Stop::Reject(r)) => Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }

    #[test]
    fn rfc4180_quoting() {
        let c = run(
            "id,text\r\n1,\"a \"\"quoted\"\", word\"\r\n2,\"multi\nline\"\r\n3,\n",
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(c.cols, ["id", "text"]);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.rows[0].1[1].as_deref(), Some("a \"quoted\", word"));
        assert_eq!(c.rows[1].1[1].as_deref(), Some("multi\nline"));
        assert_eq!(c.rows[2], (5, vec![Some("3".into()), None]));
    }

    #[test]
    fn header_only_is_zero_records() {
        assert_eq!(run("a,b\n", &CsvOptions::default()).unwrap().rows.len(), 0);
        assert_eq!(
            run("", &CsvOptions::default()).unwrap_err().kind,
            Kind::Empty
        );
    }

    #[test]
    fn ragged_rows_are_rejected_with_their_line() {
        let e = run("a,b\n1,2\n3\n", &CsvOptions::default()).unwrap_err();
        assert_eq!(e.kind, Kind::CsvRaggedRow);
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn unterminated_quotes_are_caught() {
        for bad in [
            "a,b\n1,\"open\n",
            "a,b\n1,\"x\"\"",
            "\"a",
            "a,b\n1,\"x\"\"\"\"y",
        ] {
            let e = run(bad, &CsvOptions::default()).unwrap_err();
            assert_eq!(e.kind, Kind::CsvUnterminatedQuote, "{bad:?}");
        }
        let e = run("a,b\n1,2\n3,\"cut\nshort", &CsvOptions::default()).unwrap_err();
        assert_eq!((e.line, e.offset), (Some(3), Some(10)));
        // Closed quotes, quotes inside unquoted fields, and escaped quotes are fine.
        for good in ["a,b\n1,\"x\"\n", "a,b\n1,x\"y\n", "a,b\n\"\",\"\"\"\"\n"] {
            run(good, &CsvOptions::default()).unwrap();
        }
    }

    #[test]
    fn headerless_files_use_configured_names() {
        let opt = CsvOptions {
            header: false,
            names: vec!["x".into(), "y".into()],
            ..CsvOptions::default()
        };
        let c = run("1,2\n3,4\n", &opt).unwrap();
        assert_eq!(c.cols, ["x", "y"]);
        assert_eq!(c.rows.len(), 2);
        let semi = CsvOptions {
            header: false,
            delimiter: b';',
            ..CsvOptions::default()
        };
        let c = run("1;2\n", &semi).unwrap();
        assert_eq!(c.cols, ["column_1", "column_2"]);
        assert_eq!(c.rows.len(), 1);
    }
}
