//! CSV (RFC 4180) parsing: the header, row widths and the rows handed to the stages.
//!
//! Generic CSV readers are lenient where a loader must not be: they end a quoted field silently
//! at end of input (a truncated upload would load as if complete), and they keep going after a
//! stray quote (`a,"b"c,d` becomes `bc`). ferry's record reader (`records.rs`) fails with
//! `csv.unterminated_quote` when the input ends inside quotes, and — unless the dataset says
//! `quotes = "lenient"` — with `csv.stray_quote` at text after a closing quote or a quote inside
//! an unquoted field. Records longer than `max_record` bytes fail with `csv.line_too_long` before
//! they are buffered whole, so memory stays flat whatever the input. Row lengths are checked
//! here, for a clear `csv.ragged_row` message.

mod records;

use super::{RowOut, Stop, MAX_COLUMN_NAME};
use crate::reject::{Kind, Reject, Stage};
use records::Records;
use std::io::Read;

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
    let mut recs = Records::new(r, opt);
    let (names, mut first_is_data) = header(&mut recs, opt)?;
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
    if let Some(note) = blank_lines(&recs) {
        out.note(note);
    }
    Ok(rows)
}

/// The column names: the header row's (refused when it is missing, too long or all numbers),
/// the configured names, or `column_N` after the first row — then `true`: that row is data.
fn header<R: Read>(recs: &mut Records<R>, opt: &CsvOptions) -> Result<(Vec<String>, bool), Stop> {
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
    Ok((names, first_is_data))
}

/// A note naming the blank lines skipped between records, if there were any.
fn blank_lines<R: Read>(recs: &Records<R>) -> Option<String> {
    super::blank_note(recs.blank, &recs.blank_at)
}

#[cfg(test)]
mod tests;
