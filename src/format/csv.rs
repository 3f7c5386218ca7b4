//! CSV (RFC 4180) parsing over csv-core, plus what csv-core does not check.
//!
//! csv-core is lenient where a loader must not be: it ends a quoted field silently at end of
//! input (a truncated upload would load as if complete), and it keeps going after a stray quote
//! (`a,"b"c,d` becomes `bc`). `QuoteScan` follows the same quoting rules over the bytes as they
//! pass and fails with `csv.unterminated_quote` when the input ends inside quotes, and — unless
//! the dataset says `quotes = "lenient"` — with `csv.stray_quote` at text after a closing quote or
//! a quote inside an unquoted field. Records longer than `max_record` bytes fail with
//! `csv.line_too_long` before they are buffered whole, so memory stays flat whatever the input.
//! Row lengths are checked here too, for a clear `csv.ragged_row` message.

use super::text::{classify, reject_io, Lines};
use super::{RowOut, Stop, MAX_COLUMN_NAME};
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    /// Names for the columns when there is no header row.
    pub names: Vec<String>,
    /// Refuse stray quotes (RFC 4180); `false` is the dataset's `quotes = "lenient"`.
    pub strict_quotes: bool,
    /// The longest record accepted, in bytes.
    pub max_record: usize,
    /// Refuse a header row whose every name is a number (a data row taken for the header).
    pub numeric_header_check: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            header: true,
            names: Vec::new(),
            strict_quotes: true,
            max_record: super::DEFAULT_MAX_RECORD,
            numeric_header_check: false,
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

/// Tracks whether the input is inside a quoted field, as csv-core would parse it, and (when
/// strict) refuses quotes where RFC 4180 allows none.
pub struct QuoteScan<R: Read> {
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
    pub fn new(inner: R, delim: u8, quote: u8, strict: bool) -> Self {
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

/// Most fields a record may have before it is refused (bounds the field index, whatever a line
/// of delimiters holds).
const MAX_FIELDS: usize = 1 << 16;

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
    /// Line ends consumed so far; byte offset of the next unconsumed byte.
    lines: Lines,
    byte: u64,
    max_record: usize,
    /// Where the current record started.
    rec_line: u64,
    rec_byte: u64,
    /// The line the next record starts on if no blank line comes first.
    next_line: u64,
    /// Blank lines skipped between records (not those at the end), and the first few of them.
    blank: u64,
    blank_at: Vec<u64>,
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
        self.lines.feed(&self.buf[self.pos..self.pos + n]);
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
                self.rec_line = self.lines.line();
                self.rec_byte = self.byte;
                if self.pos < self.len && self.rec_line > self.next_line {
                    // Blank lines before a record: csv-core skips them; ferry says so.
                    for l in self.next_line..self.rec_line {
                        if self.blank_at.len() < 5 {
                            self.blank_at.push(l);
                        }
                    }
                    self.blank += self.rec_line - self.next_line;
                }
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
                    if self.out.len() >= self.max_record {
                        return Err(self.too_long().into());
                    }
                    let n = (self.out.len() * 2).min(self.max_record);
                    self.out.resize(n, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        return Err(Reject::new(
                            Kind::SchemaTooManyColumns,
                            Stage::Parse,
                            format!("line {} has more than {MAX_FIELDS} fields", self.rec_line),
                        )
                        .at_line(self.rec_line)
                        .at_offset(self.rec_byte)
                        .into());
                    }
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.next_line = self.lines.line();
                    return Ok(true);
                }
                csv_core::ReadRecordResult::End => return Ok(false),
            }
        }
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

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.nfields];
        (0..ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.out[start..ends[i]]
        })
    }
}

/// Whether a header cell reads as a number (`2`, `-1.5`, `1,50`, `3e4`).
fn is_number(s: &str) -> bool {
    let t = s.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mant.find(['.', ',']) {
        Some(i) => (&mant[..i], Some(&mant[i + 1..])),
        None => (mant, None),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let int_ok = digits(int) && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let frac_ok = frac.is_none_or(digits);
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    int_ok && frac_ok && exp_ok
}

/// Parses CSV text into `out`. Empty fields are nulls. A header with no rows is a valid file
/// with no records; a file with no header line at all is `empty`.
pub fn parse(r: impl Read, opt: &CsvOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let scan = QuoteScan::new(r, opt.delimiter, opt.quote, opt.strict_quotes);
    let mut recs = Records::new(scan, opt);
    let mut names: Vec<String> = Vec::new();
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
        for (i, f) in recs.fields().enumerate() {
            if f.len() > MAX_COLUMN_NAME {
                return Err(Reject::new(
                    Kind::SchemaColumnNameTooLong,
                    Stage::Parse,
                    format!(
                        "header field {} is {} bytes long; column names are at most \
                         {MAX_COLUMN_NAME} bytes (is the first line really a header?)",
                        i + 1,
                        f.len()
                    ),
                )
                .at_line(recs.rec_line)
                .into());
            }
            names.push(String::from_utf8_lossy(f).into_owned());
        }
        if opt.numeric_header_check && names.iter().all(|n| is_number(n)) {
            let shown: Vec<&str> = names.iter().take(5).map(|n| n.trim()).collect();
            return Err(Reject::new(
                Kind::CsvNumericHeader,
                Stage::Parse,
                format!(
                    "every name in the header row is a number ({}): this looks like a data row, \
                     so the real header is missing (a file cut at the front, or one written \
                     without a header). For headerless files set header = false and names on the \
                     dataset",
                    shown.join(", ")
                ),
            )
            .at_line(recs.rec_line)
            .into());
        }
    } else {
        names = opt.names.clone();
        if names.is_empty() {
            // No names configured: the first row decides how many columns there are.
            if !recs.next()? {
                return Err(Reject::new(Kind::Empty, Stage::Parse, "the file has no rows").into());
            }
            names = (1..=recs.nfields).map(|i| format!("column_{i}")).collect();
            first_is_data = true;
        }
    }
    let width = names.len();
    out.columns(&names)?;

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
    if recs.blank > 0 {
        let at: Vec<String> = recs.blank_at.iter().map(u64::to_string).collect();
        out.note(format!(
            "{} blank line{} skipped (line{} {}{})",
            recs.blank,
            crate::reject::plural(recs.blank as usize),
            crate::reject::plural(at.len()),
            at.join(", "),
            if recs.blank > at.len() as u64 {
                ", …"
            } else {
                ""
            }
        ));
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
        // Closed quotes and escaped quotes are fine.
        for good in [
            "a,b\n1,\"x\"\n",
            "a,b\n\"\",\"\"\"\"\n",
            "a,b\r1,\"x\"\r\"y\",2\r",
        ] {
            run(good, &CsvOptions::default()).unwrap();
        }
    }

    #[test]
    fn stray_quotes_are_refused_where_they_are() {
        // (input, line, offset of the offending byte)
        for (bad, line, offset) in [
            ("a,b,c\na,\"b\"c,d\n", 2, 11),       // text after a closing quote
            ("a\n\"d\"e\"f\"\n", 2, 5),           // …inside what looks like one field
            ("a,b\n\"Foo\",   \"Bar\"\n", 2, 13), // spaces, then a quote: not a field start
            ("a,b,c,d\n\"1\",\"2\",\"3\" \"\n", 2, 19),
            ("a,b\n1,x\"y\n", 2, 7), // a quote inside an unquoted field
            ("a,b\r\n1,2\r\n3,x\"\r\n", 3, 13),
            ("a,b\r1,2\r3,x\"\r", 3, 11), // CR-only line ends
            ("x\"y,b\n1,2\n", 1, 1),      // in the header
        ] {
            let e = run(bad, &CsvOptions::default()).unwrap_err();
            assert_eq!(e.kind, Kind::CsvStrayQuote, "{bad:?}: {}", e.message);
            assert_eq!((e.line, e.offset), (Some(line), Some(offset)), "{bad:?}");
        }
        // The same inputs load as today when the dataset asks for lenient quotes.
        let lenient = CsvOptions {
            strict_quotes: false,
            ..CsvOptions::default()
        };
        let c = run("a,b,c\na,\"b\"c,d\n", &lenient).unwrap();
        assert_eq!(c.rows[0].1[1].as_deref(), Some("bc"));
        // Another quote character: double quotes are plain text then.
        let single = CsvOptions {
            quote: b'\'',
            ..CsvOptions::default()
        };
        let c = run("a,b\n'x,y',say \"hi\"\n", &single).unwrap();
        assert_eq!(c.rows[0].1[1].as_deref(), Some("say \"hi\""));
    }

    #[test]
    fn blank_lines_between_records_are_noted_not_trailing_ones() {
        #[derive(Default)]
        struct Notes(Collect, Vec<String>);
        impl RowOut for Notes {
            fn columns(&mut self, n: &[String]) -> Result<(), Stop> {
                self.0.columns(n)
            }
            fn row(&mut self, l: u64, t: &str, s: &[Option<(usize, usize)>]) -> Result<(), Stop> {
                self.0.row(l, t, s)
            }
            fn note(&mut self, n: String) {
                self.1.push(n);
            }
        }
        let parse_notes = |input: &str| {
            let mut n = Notes::default();
            assert!(parse(input.as_bytes(), &CsvOptions::default(), &mut n).is_ok());
            (n.0.rows.iter().map(|r| r.0).collect::<Vec<_>>(), n.1)
        };
        let (lines, notes) = parse_notes("a,b\n1,2\n\n3,4\r\n\r\n\r\n5,6\n\n\n");
        assert_eq!(lines, [2, 4, 7]);
        assert_eq!(notes, ["3 blank lines skipped (lines 3, 5, 6)"]);
        let (_, notes) = parse_notes("a,b\n1,2\n3,\"x\ny\"\n4,5\n\n");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn lines_count_lone_cr_line_ends() {
        let c = run("a,b\r1,2\r3,4\r", &CsvOptions::default()).unwrap();
        let lines: Vec<u64> = c.rows.iter().map(|r| r.0).collect();
        assert_eq!(lines, [2, 3]);
        let e = run("a,b\r1,2\r3\r", &CsvOptions::default()).unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::CsvRaggedRow, Some(3)));
    }

    #[test]
    fn records_longer_than_the_limit_are_refused_unread() {
        let opt = CsvOptions {
            max_record: 1000,
            ..CsvOptions::default()
        };
        let long = format!("a,b\n1,2\n3,{}\n5,6\n", "x".repeat(5000));
        let e = run(&long, &opt).unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.offset),
            (Kind::CsvLineTooLong, Some(3), Some(8))
        );
        let quoted = format!("a,b\n1,\"{}\"\n", "x\n".repeat(5000));
        assert_eq!(run(&quoted, &opt).unwrap_err().kind, Kind::CsvLineTooLong);
        let header = format!("a,{}\n1,2\n", "h".repeat(2000));
        assert_eq!(
            run(&header, &CsvOptions::default()).unwrap_err().kind,
            Kind::SchemaColumnNameTooLong
        );
    }

    #[test]
    fn numeric_headers_are_refused_when_asked() {
        let opt = CsvOptions {
            numeric_header_check: true,
            ..CsvOptions::default()
        };
        for bad in ["2,20\n3,30\n", "1,-2.5,1e3\n", "1,50\n", " 7 \n8\n"] {
            let e = run(bad, &opt).unwrap_err();
            assert_eq!(
                (e.kind, e.line),
                (Kind::CsvNumericHeader, Some(1)),
                "{bad:?}"
            );
        }
        for good in ["id,2\n1,2\n", "2024q1,x\n1,2\n", "e,1\n1,2\n", ".,1\n1,2\n"] {
            run(good, &opt).unwrap();
        }
        run("2,20\n3,30\n", &CsvOptions::default()).unwrap();
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
