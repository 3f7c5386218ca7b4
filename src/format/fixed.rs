//! Fixed-width records: each line is one record, each column a range of characters (or bytes)
//! declared in the dataset.
//!
//! Positions are 1-based and counted in characters of the decoded text by default, so a feed
//! with accented names lines up however it is encoded; `unit = "bytes"` counts UTF-8 bytes for
//! feeds whose layout is byte-based (for a declared single-byte encoding the two are the same).
//! A line must be exactly `line_length` long (default: the end of the last column): a shorter
//! one is padded only when the dataset says `pad_short_lines = true`, a longer one always
//! refused — text past the last column is never dropped silently; a padded line is read exactly
//! as if the spaces had been sent, and noted. Header lines are skipped by count. Trailer lines
//! are recognised by their `trailer_prefix` when one is given (a file whose last lines lack it
//! has lost its trailer: refused, so no data line is ever taken for the trailer); without one,
//! the last `skip_trailer` lines are taken whatever they hold, and only `trailer_count` can tell
//! a missing trailer. The trailer's record count, when declared, must match the records read.

use super::text::classify;
use super::{RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

/// One column: where it starts (0-based) and how wide it is, in the layout's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub start: usize,
    pub width: usize,
}

/// A dataset's fixed-width layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub fields: Vec<Field>,
    /// Positions count UTF-8 bytes instead of characters.
    pub bytes: bool,
    /// The length every data line must have.
    pub line_length: usize,
    /// Lines shorter than `line_length` are read as if padded with spaces.
    pub pad: bool,
    /// Spaces around each value are dropped (the default); an all-space value is null.
    pub trim: bool,
    pub skip_header: usize,
    pub skip_trailer: usize,
    /// What every trailer line starts with: a file without it at the end lost its trailer.
    pub trailer_prefix: Option<String>,
    /// Where the last trailer line holds the count of data records: (start, width).
    pub trailer_count: Option<(usize, usize)>,
    /// The longest line read, in bytes.
    pub max_record: usize,
}

impl Layout {
    /// The column names, in layout order.
    pub fn names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }

    /// The end of the last column: the default line length.
    pub fn end(fields: &[Field]) -> usize {
        fields.iter().map(|f| f.start + f.width).max().unwrap_or(0)
    }
}

/// A line read but not yet known to be data (it may turn out to be part of the trailer).
struct Line {
    number: u64,
    offset: u64,
    text: String,
}

/// Parses fixed-width text into `out`; returns the number of records.
pub fn parse(r: impl Read, layout: &Layout, out: &mut dyn RowOut) -> Result<u64, Stop> {
    out.columns(&layout.names())?;
    let mut lines = LineReader::new(r, layout.max_record);
    let mut held: VecDeque<Line> = VecDeque::with_capacity(layout.skip_trailer + 1);
    let mut spans = Vec::with_capacity(layout.fields.len());
    let mut positions = Vec::new();
    let mut padded = String::new();
    let (mut records, mut blank, mut short) = (0u64, 0u64, 0u64);
    while let Some(line) = lines.next()? {
        if line.number <= layout.skip_header as u64 {
            continue;
        }
        if line.text.is_empty() {
            blank += 1;
            continue;
        }
        held.push_back(line);
        if held.len() <= layout.skip_trailer {
            continue;
        }
        let line = held.pop_front().expect("more than skip_trailer lines held");
        let text = match pad(layout, &line, &mut padded, &mut positions)? {
            true => {
                short += 1;
                padded.as_str()
            }
            false => line.text.as_str(),
        };
        slice(layout, &line, text, &mut spans, &mut positions)?;
        out.row(line.number, text, &spans)?;
        records += 1;
    }
    if let Some(prefix) = &layout.trailer_prefix {
        check_trailer_prefix(layout, &held, prefix)?;
    }
    if let Some((start, width)) = layout.trailer_count {
        check_trailer(layout, held.back(), start, width, records)?;
    }
    if blank > 0 {
        out.note(format!("{blank} empty line(s) skipped"));
    }
    if short > 0 {
        out.note(format!(
            "{short} short line(s) read as if padded with spaces to {} (pad_short_lines)",
            layout.line_length
        ));
    }
    Ok(records)
}

/// A line's length in the layout's unit, and (for character layouts of non-ASCII text) the
/// byte offset of every character boundary in `positions`.
fn units(layout: &Layout, text: &str, positions: &mut Vec<usize>) -> usize {
    if layout.bytes || text.is_ascii() {
        return text.len();
    }
    positions.clear();
    positions.extend(text.char_indices().map(|(i, _)| i));
    positions.push(text.len());
    positions.len() - 1
}

/// With `pad_short_lines`, a short line's text with the missing spaces added, in `padded`
/// (`true`), exactly as if the partner had sent them; `false`: the line is used as it is.
fn pad(
    layout: &Layout,
    line: &Line,
    padded: &mut String,
    positions: &mut Vec<usize>,
) -> Result<bool, Reject> {
    if !layout.pad {
        return Ok(false);
    }
    let len = units(layout, &line.text, positions);
    if len >= layout.line_length {
        return Ok(false);
    }
    padded.clear();
    padded.push_str(&line.text);
    padded.extend(std::iter::repeat_n(' ', layout.line_length - len));
    Ok(true)
}

/// With `trailer_prefix`: every line taken for the trailer must start with it, or the file lost
/// its trailer (and the lines held are data that must not be dropped).
fn check_trailer_prefix(
    layout: &Layout,
    held: &VecDeque<Line>,
    prefix: &str,
) -> Result<(), Reject> {
    let mismatch = |msg: String| Reject::new(Kind::FixedTrailerMismatch, Stage::Parse, msg);
    if held.len() < layout.skip_trailer {
        return Err(mismatch(format!(
            "the file ends before its trailer (lines starting with {prefix:?}): it may have been \
             cut short"
        )));
    }
    match held.iter().find(|l| !l.text.starts_with(prefix)) {
        None => Ok(()),
        Some(l) => Err(mismatch(format!(
            "line {} is where the trailer should be, but it does not start with {prefix:?}: the \
             file lost its trailer (it may have been cut short); nothing of it was loaded",
            l.number
        ))
        .at_line(l.number)
        .at_offset(l.offset)),
    }
}

/// The value spans of one data line's `text` (the line, padded if it was short), or why its
/// length does not fit the layout.
fn slice(
    layout: &Layout,
    line: &Line,
    text: &str,
    spans: &mut Vec<Option<(usize, usize)>>,
    positions: &mut Vec<usize>,
) -> Result<(), Reject> {
    // Byte offset of each unit boundary; ASCII lines (and byte layouts) need no table.
    let by_index = layout.bytes || text.is_ascii();
    let len = units(layout, text, positions);
    if len != layout.line_length {
        let unit = if layout.bytes { "bytes" } else { "characters" };
        return Err(Reject::new(
            Kind::FixedLineLength,
            Stage::Parse,
            format!(
                "line {} is {len} {unit} long where the layout needs {}{}",
                line.number,
                layout.line_length,
                if len < layout.line_length && !layout.pad {
                    " (set pad_short_lines = true to read short lines as if padded with spaces)"
                } else {
                    ""
                }
            ),
        )
        .at_line(line.number)
        .at_offset(line.offset));
    }
    let at = |unit: usize| -> usize {
        let unit = unit.min(len);
        if by_index {
            unit
        } else {
            positions[unit]
        }
    };
    spans.clear();
    for f in &layout.fields {
        let (a, b) = (at(f.start), at(f.start + f.width));
        if !text.is_char_boundary(a) || !text.is_char_boundary(b) {
            return Err(Reject::new(
                Kind::FixedSplitCharacter,
                Stage::Parse,
                format!(
                    "column {:?} (bytes {}..{}) cuts a multi-byte character on line {}",
                    f.name,
                    f.start + 1,
                    f.start + f.width,
                    line.number
                ),
            )
            .at_line(line.number)
            .at_offset(line.offset + a as u64));
        }
        spans.push(trimmed(text, a, b, layout.trim));
    }
    Ok(())
}

/// A value's span, without surrounding spaces when trimming; `None` when nothing is left.
fn trimmed(text: &str, mut a: usize, mut b: usize, trim: bool) -> Option<(usize, usize)> {
    if trim {
        let bytes = text.as_bytes();
        while a < b && bytes[a] == b' ' {
            a += 1;
        }
        while b > a && bytes[b - 1] == b' ' {
            b -= 1;
        }
    }
    (a < b).then_some((a, b))
}

/// Checks the record count in the last trailer line.
fn check_trailer(
    layout: &Layout,
    trailer: Option<&Line>,
    start: usize,
    width: usize,
    records: u64,
) -> Result<(), Reject> {
    let mismatch = |msg: String| Reject::new(Kind::FixedTrailerMismatch, Stage::Parse, msg);
    let Some(line) = trailer.filter(|_| layout.skip_trailer > 0) else {
        return Err(mismatch(
            "the file ends before its trailer line: it may have been cut short".into(),
        ));
    };
    let len = line.text.len();
    // The byte offset of a position in the layout's unit.
    let at = |u: usize| {
        if layout.bytes {
            u.min(len)
        } else {
            line.text.char_indices().nth(u).map_or(len, |c| c.0)
        }
    };
    // A byte range that cuts a character holds no count.
    let field = line
        .text
        .get(at(start)..at(start + width))
        .unwrap_or("")
        .trim();
    let digits = field.strip_prefix('+').unwrap_or(field);
    let claimed = (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten();
    match claimed {
        Some(n) if n == records => Ok(()),
        Some(n) => Err(mismatch(format!(
            "the trailer (line {}) counts {n} records; the file holds {records}",
            line.number
        ))
        .at_line(line.number)
        .at_offset(line.offset)),
        None => Err(mismatch(format!(
            "the trailer (line {}) holds {field:?} where its record count should be",
            line.number
        ))
        .at_line(line.number)
        .at_offset(line.offset)),
    }
}

/// Reads lines (LF or CRLF ends, removed), each at most `max` bytes.
struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    number: u64,
    offset: u64,
    buf: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    fn new(r: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(256 * 1024, r),
            max,
            number: 0,
            offset: 0,
            buf: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<Option<Line>, Reject> {
        self.buf.clear();
        let got = (&mut self.inner)
            .take(self.max as u64 + 2)
            .read_until(b'\n', &mut self.buf)
            .map_err(classify)?;
        if got == 0 {
            return Ok(None);
        }
        self.number += 1;
        let offset = self.offset;
        self.offset += got as u64;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.buf.len() > self.max {
            return Err(Reject::new(
                Kind::FixedLineLength,
                Stage::Parse,
                format!(
                    "line {} is longer than max_line_bytes ({} bytes); the rest of it was not read",
                    self.number, self.max
                ),
            )
            .at_line(self.number)
            .at_offset(offset));
        }
        let text = String::from_utf8(std::mem::take(&mut self.buf)).map_err(|e| {
            Reject::new(
                Kind::InvalidUtf8,
                Stage::Decode,
                format!("line {} is not valid UTF-8: {e}", self.number),
            )
            .at_line(self.number)
        })?;
        Ok(Some(Line {
            number: self.number,
            offset,
            text,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Collect;

    fn layout(fields: &[(&str, usize, usize)]) -> Layout {
        let fields: Vec<Field> = fields
            .iter()
            .map(|&(n, s, w)| Field {
                name: n.into(),
                start: s - 1,
                width: w,
            })
            .collect();
        Layout {
            line_length: Layout::end(&fields),
            fields,
            bytes: false,
            pad: false,
            trim: true,
            skip_header: 0,
            skip_trailer: 0,
            trailer_prefix: None,
            trailer_count: None,
            max_record: 1 << 20,
        }
    }

    fn run(text: &str, l: &Layout) -> Result<Collect, Reject> {
        let mut c = Collect::default();
        match parse(text.as_bytes(), l, &mut c) {
            Ok(_) => Ok(c),
            Err(Stop::Reject(r)) => Err(r),
            Err(Stop::Cancelled) => unreachable!(),
        }
    }

    fn values(c: &Collect) -> Vec<Vec<Option<String>>> {
        c.rows.iter().map(|r| r.1.clone()).collect()
    }

    #[test]
    fn columns_are_cut_by_characters_and_trimmed() {
        let l = layout(&[("id", 1, 4), ("name", 5, 6), ("amt", 11, 5)]);
        let c = run("0001Zoë   00012\r\n0002      00300\n", &l).unwrap();
        assert_eq!(c.cols, ["id", "name", "amt"]);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            values(&c),
            [
                vec![s("0001"), s("Zoë"), s("00012")],
                vec![s("0002"), None, s("00300")]
            ]
        );
        assert_eq!(c.rows[1].0, 2);
    }

    #[test]
    fn wrong_lengths_are_refused_or_padded() {
        let mut l = layout(&[("a", 1, 3), ("b", 4, 3)]);
        let e = run("aaabbb\naaab\n", &l).unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.offset),
            (Kind::FixedLineLength, Some(2), Some(7))
        );
        let e = run("aaabbbX\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedLineLength);
        l.pad = true;
        let c = run("aaabbb\naaab\n", &l).unwrap();
        assert_eq!(values(&c)[1], [Some("aaa".into()), Some("b".into())]);
        // Longer lines are refused even when padding.
        assert_eq!(
            run("aaabbbX\n", &l).unwrap_err().kind,
            Kind::FixedLineLength
        );
    }

    #[test]
    fn byte_layouts_refuse_split_characters() {
        let mut l = layout(&[("a", 1, 2), ("b", 3, 2)]);
        l.bytes = true;
        let c = run("ébb\n", &l).unwrap();
        assert_eq!(values(&c)[0], [Some("é".into()), Some("bb".into())]);
        let e = run("aébb\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedLineLength);
        let e = run("aéb\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedSplitCharacter);
    }

    #[test]
    fn header_and_trailer_are_skipped_and_the_count_checked() {
        let mut l = layout(&[("a", 1, 3)]);
        l.skip_header = 1;
        l.skip_trailer = 1;
        l.trailer_count = Some((3, 4));
        let c = run("HEADER LINE\naaa\nbbb\n\nT 0002\n", &l).unwrap();
        assert_eq!(values(&c), [[Some("aaa".into())], [Some("bbb".into())]]);
        let e = run("HEADER LINE\naaa\nbbb\nT 0003\n", &l).unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::FixedTrailerMismatch, Some(4)));
        let e = run("HEADER LINE\naaa\nbbb\nT XX02\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedTrailerMismatch);
        assert_eq!(
            run("HEADER LINE\naaa\nbbb\nT  +002\n", &l)
                .unwrap()
                .rows
                .len(),
            2
        );
        let e = run("HEADER LINE\naaa\nbbb\nT  0+02\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedTrailerMismatch);
        // Cut short: the last data line is taken for the trailer and its count disagrees.
        let e = run("HEADER LINE\naaa\nbbb\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedTrailerMismatch);
        let e = run("HEADER LINE\n", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedTrailerMismatch);
    }

    #[test]
    fn a_missing_trailer_never_takes_a_data_line_when_trailer_lines_are_marked() {
        let mut l = layout(&[("a", 1, 3)]);
        l.skip_trailer = 1;
        l.trailer_prefix = Some("TRL".into());
        let c = run(
            "aaa
bbb
TRL 2
",
            &l,
        )
        .unwrap();
        assert_eq!(values(&c), [[Some("aaa".into())], [Some("bbb".into())]]);
        // The trailer is gone: bbb is not taken for it, the file is refused.
        let e = run(
            "aaa
bbb
", &l,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.line), (Kind::FixedTrailerMismatch, Some(2)));
        let e = run("", &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedTrailerMismatch);
        // A data line that merely starts like a trailer, in the middle, is data.
        l.line_length = 5;
        l.fields[0].width = 5;
        let c = run(
            "TRLxx
ccccc
TRL 2
",
            &l,
        )
        .unwrap();
        assert_eq!(c.rows.len(), 2);
    }

    #[test]
    fn padded_lines_read_exactly_as_if_the_spaces_were_sent() {
        let mut l = layout(&[("a", 1, 3), ("b", 4, 3), ("c", 7, 2)]);
        l.pad = true;
        for trim in [false, true] {
            l.trim = trim;
            let short = run(
                "xy
", &l,
            )
            .unwrap();
            let sent = run(
                "xy      
",
                &l,
            )
            .unwrap();
            assert_eq!(values(&short), values(&sent), "trim = {trim}");
            assert_eq!(short.notes.len(), 1, "{:?}", short.notes);
            assert!(sent.notes.is_empty());
        }
        l.trim = false;
        let c = run(
            "é
", &l,
        )
        .unwrap();
        assert_eq!(
            values(&c)[0],
            [Some("é  ".into()), Some("   ".into()), Some("  ".into())]
        );
    }

    #[test]
    fn untrimmed_values_keep_their_spaces() {
        let mut l = layout(&[("a", 1, 3), ("b", 4, 3)]);
        l.trim = false;
        let c = run(" a    \n", &l).unwrap();
        assert_eq!(values(&c)[0], [Some(" a ".into()), Some("   ".into())]);
    }

    #[test]
    fn overlong_lines_stop_before_being_buffered() {
        let mut l = layout(&[("a", 1, 3)]);
        l.max_record = 16;
        let long = format!("{}\n", "x".repeat(100));
        let e = run(&long, &l).unwrap_err();
        assert_eq!(e.kind, Kind::FixedLineLength);
    }
}
