//! Records read with csv-core over ferry's own buffer, so every record's bytes are seen, its
//! first line is exact (lone CRs count), blank lines between records are counted, and a record
//! longer than the limit is refused before it is buffered whole.

use super::CsvOptions;
use crate::format::text::{classify, Lines};
use crate::format::Stop;
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Read};

/// Most fields a record may have before it is refused (bounds the field index, whatever a line
/// of delimiters holds).
const MAX_FIELDS: usize = 1 << 16;

/// Reads records with csv-core over our own buffer, so every record's raw bytes are seen and
/// its first line is exact (the csv crate's line counter skips newlines inside quoted fields).
pub(super) struct Records<R: Read> {
    core: csv_core::Reader,
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
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
    pub(super) fn next(&mut self) -> Result<bool, Stop> {
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

    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.nfields];
        (0..ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.out[start..ends[i]]
        })
    }
}
