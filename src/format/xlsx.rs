//! Excel workbooks: `.xlsx` streamed cell by cell with calamine's cell reader; `.xls` and
//! `.ods` (which calamine reads a sheet at a time) through the same row builder.
//!
//! The first sheet, or the dataset's `sheet`; the row `header_row` (1-based, default 1) names
//! the columns and rows above it are passed over. Values are written as the sheet stores them:
//! numbers in their shortest exact decimal form (`0.1` stays `0.1`, `5.0` is `5`), dates and
//! times as ISO 8601 (`2026-11-05`, `2026-11-05T14:30:00`, `14:30:00`), formulas as their
//! cached results, errors as Excel shows them (`#DIV/0!`), booleans as `true`/`false`. Each
//! record's line is its row number in the sheet; empty rows are skipped with a note.
//!
//! Memory: a workbook is a zip archive that has to be read at random, so the file is held in
//! memory (at most `MAX_WORKBOOK` bytes, else `xlsx.too_big`), and so are its shared strings
//! (the text cells' distinct values); the sheet itself is decompressed and parsed as a stream
//! for `.xlsx`, and read whole for `.xls`/`.ods`.

use super::text::classify;
use super::{RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use calamine::{DataType, Ods, Reader, Xls, Xlsx};
use std::borrow::Cow;
use std::io::{Cursor, Read};

/// The biggest workbook file read, in bytes.
pub const MAX_WORKBOOK: u64 = 512 << 20;
/// Excel's last column is XFD, the 16,384th.
const MAX_COLUMNS: u32 = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcelOptions {
    /// The sheet to read; `None`: the first.
    pub sheet: Option<String>,
    /// The 1-based row that names the columns.
    pub header_row: u32,
}

impl Default for ExcelOptions {
    fn default() -> Self {
        ExcelOptions {
            sheet: None,
            header_row: 1,
        }
    }
}

/// The first bytes of a zip (xlsx, ods) and of an OLE (xls) container.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0];

/// Whether the first bytes are a zip (xlsx, ods) or OLE (xls) container.
pub fn is_workbook(head: &[u8]) -> bool {
    head.starts_with(ZIP_MAGIC) || head.starts_with(OLE_MAGIC)
}

/// Parses a workbook's sheet into `out`; returns the number of records.
pub fn parse(r: impl Read, opt: &ExcelOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let mut bytes = Vec::new();
    r.take(MAX_WORKBOOK + 1)
        .read_to_end(&mut bytes)
        .map_err(classify)?;
    if bytes.len() as u64 > MAX_WORKBOOK {
        return Err(Reject::new(
            Kind::XlsxTooBig,
            Stage::Parse,
            format!(
                "the workbook is bigger than {} MiB, the most ferry reads into memory (export \
                 the sheet as CSV)",
                MAX_WORKBOOK >> 20
            ),
        )
        .into());
    }
    let mut rows = Rows::new(opt.header_row, out);
    if bytes.starts_with(OLE_MAGIC) {
        let wb = Xls::new(Cursor::new(&bytes[..])).map_err(|e| corrupt(&e))?;
        return by_range(wb, opt, rows);
    }
    let mut wb = match Xlsx::new(Cursor::new(&bytes[..])) {
        Ok(wb) => wb,
        Err(xlsx_err) => {
            return match Ods::new(Cursor::new(&bytes[..])) {
                Ok(ods) => by_range(ods, opt, rows),
                Err(_) => Err(corrupt(&xlsx_err).into()),
            };
        }
    };
    let name = sheet_name(&wb.sheet_names(), opt)?;
    let mut cells = wb.worksheet_cells_reader(&name).map_err(|e| match e {
        calamine::XlsxError::WorksheetNotFound(_) => no_sheet(&name, &[]),
        other => corrupt(&other),
    })?;
    while let Some(cell) = cells.next_cell().map_err(|e| corrupt(&e))? {
        let (row, col) = cell.get_position();
        rows.cell(row, col, text(cell.get_value()))?;
    }
    rows.finish()
}

/// Reads a whole sheet of an `.xls`/`.ods` workbook into the row builder.
fn by_range<'b, W, E>(mut wb: W, opt: &ExcelOptions, mut rows: Rows<'_>) -> Result<u64, Stop>
where
    W: Reader<Cursor<&'b [u8]>, Error = E>,
    E: std::fmt::Display,
{
    let name = sheet_name(&wb.sheet_names(), opt)?;
    let range = wb.worksheet_range(&name).map_err(|e| corrupt(&e))?;
    let Some((top, left)) = range.start() else {
        return rows.finish();
    };
    for (i, row) in range.rows().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let at = |base: u32, k: usize| u32::try_from(k).ok().and_then(|k| base.checked_add(k));
            let (Some(r), Some(c)) = (at(top, i), at(left, j)) else {
                return Err(corrupt(&"a cell beyond the last row or column").into());
            };
            rows.cell(r, c, text(v))?;
        }
    }
    rows.finish()
}

/// The sheet to read: the configured one (exact name, then ignoring case), or the first.
fn sheet_name(names: &[String], opt: &ExcelOptions) -> Result<String, Reject> {
    match &opt.sheet {
        None => names.first().cloned().ok_or_else(|| no_sheet("", names)),
        Some(want) => names
            .iter()
            .find(|n| *n == want)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(want)))
            .cloned()
            .ok_or_else(|| no_sheet(want, names)),
    }
}

fn no_sheet(want: &str, names: &[String]) -> Reject {
    let msg = if want.is_empty() {
        "the workbook has no sheet".to_string()
    } else {
        format!(
            "the workbook has no sheet {want:?} (its sheets: {})",
            names.join(", ")
        )
    };
    Reject::new(Kind::XlsxNoSheet, Stage::Parse, msg)
}

fn corrupt(e: &dyn std::fmt::Display) -> Reject {
    Reject::new(
        Kind::XlsxCorrupt,
        Stage::Parse,
        format!("the workbook cannot be read: {e}"),
    )
}

/// A cell's value as text, as the sheet stores it; `None` for an empty cell.
fn text<T: DataType>(v: &T) -> Option<Cow<'_, str>> {
    if let Some(s) = v.get_string() {
        return (!s.is_empty()).then_some(Cow::Borrowed(s));
    }
    if let Some(i) = v.get_int() {
        return Some(i.to_string().into());
    }
    if let Some(f) = v.get_float() {
        return Some(f.to_string().into());
    }
    if let Some(b) = v.get_bool() {
        return Some(Cow::Borrowed(if b { "true" } else { "false" }));
    }
    if let Some(dt) = v.get_datetime() {
        return Some(datetime(&dt).into());
    }
    if let Some(s) = v.get_datetime_iso().or_else(|| v.get_duration_iso()) {
        return Some(Cow::Borrowed(s));
    }
    if let Some(e) = v.get_error() {
        return Some(e.to_string().into());
    }
    None
}

/// An Excel date, time or duration as ISO 8601.
fn datetime(dt: &calamine::ExcelDateTime) -> String {
    let serial = dt.as_f64();
    if dt.is_duration() || !(0.0..2_958_466.0).contains(&serial) {
        // A duration, or a "date" outside 1900..9999: the number of days as stored.
        return serial.to_string();
    }
    let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
    let time = if ms > 0 {
        format!("{h:02}:{mi:02}:{s:02}.{ms:03}")
    } else {
        format!("{h:02}:{mi:02}:{s:02}")
    };
    if serial < 1.0 {
        time
    } else if (h, mi, s, ms) == (0, 0, 0, 0) {
        format!("{y:04}-{mo:02}-{d:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{time}")
    }
}

/// Turns cells (in row order) into records under the header row.
struct Rows<'o> {
    header_row: u32,
    names: Vec<String>,
    announced: bool,
    /// The row being gathered (0-based), and its cells.
    row: Option<u32>,
    cells: Vec<Option<String>>,
    /// Rows between records that held nothing.
    blank: u64,
    last_data_row: Option<u32>,
    records: u64,
    text: String,
    spans: Vec<Option<(usize, usize)>>,
    out: &'o mut dyn RowOut,
}

impl<'o> Rows<'o> {
    fn new(header_row: u32, out: &'o mut dyn RowOut) -> Self {
        Rows {
            header_row,
            names: Vec::new(),
            announced: false,
            row: None,
            cells: Vec::new(),
            blank: 0,
            last_data_row: None,
            records: 0,
            text: String::new(),
            spans: Vec::new(),
            out,
        }
    }

    fn cell(&mut self, row: u32, col: u32, value: Option<Cow<'_, str>>) -> Result<(), Stop> {
        if col >= MAX_COLUMNS {
            return Err(corrupt(&format!("a cell in column {} (past XFD)", col + 1)).into());
        }
        match self.row {
            Some(r) if r == row => {}
            Some(r) if r > row => {
                return Err(corrupt(&format!(
                    "row {} comes after row {} (rows out of order)",
                    row + 1,
                    r + 1
                ))
                .into())
            }
            _ => {
                self.end_row()?;
                self.row = Some(row);
            }
        }
        let Some(v) = value else { return Ok(()) };
        let col = col as usize;
        if self.cells.len() <= col {
            self.cells.resize(col + 1, None);
        }
        if self.cells[col].is_some() {
            return Err(corrupt(&format!("row {} names column {} twice", row + 1, col + 1)).into());
        }
        self.cells[col] = Some(v.into_owned());
        Ok(())
    }

    /// The gathered row is complete: it is the header, skipped, or a record.
    fn end_row(&mut self) -> Result<(), Stop> {
        let Some(row) = self.row.take() else {
            return Ok(());
        };
        // Excel's rows end at 1,048,576; a sheet claiming row 4,294,967,296 is corrupt.
        let Some(line) = row.checked_add(1) else {
            return Err(corrupt(&"a row number past the last row").into());
        };
        let cells = std::mem::take(&mut self.cells);
        // Rows above the header, and empty rows (an empty header row is no header).
        if line < self.header_row || cells.iter().all(Option::is_none) {
            return Ok(());
        }
        if line == self.header_row {
            self.names = cells.into_iter().map(Option::unwrap_or_default).collect();
            return self.announce();
        }
        if !self.announced {
            return Err(Reject::new(
                Kind::Empty,
                Stage::Parse,
                format!(
                    "the sheet's header row {} is empty (set header_row to the row that names \
                     the columns)",
                    self.header_row
                ),
            )
            .into());
        }
        let gap = self
            .last_data_row
            .map_or(line - self.header_row - 1, |l| line - l - 1);
        self.blank += u64::from(gap);
        self.last_data_row = Some(line);
        if cells.len() > self.names.len() {
            // Values under no header: columns named by position (`column_N`).
            self.names.resize(cells.len(), String::new());
            self.announce()?;
        }
        self.text.clear();
        self.spans.clear();
        for i in 0..self.names.len() {
            self.spans
                .push(cells.get(i).and_then(Option::as_ref).map(|v| {
                    let a = self.text.len();
                    self.text.push_str(v);
                    (a, self.text.len())
                }));
        }
        self.records += 1;
        self.out.row(u64::from(line), &self.text, &self.spans)
    }

    fn announce(&mut self) -> Result<(), Stop> {
        while self.names.last().is_some_and(String::is_empty) && !self.announced {
            self.names.pop();
        }
        self.announced = true;
        self.out.columns(&self.names)
    }

    fn finish(mut self) -> Result<u64, Stop> {
        self.end_row()?;
        if !self.announced {
            return Err(Reject::new(
                Kind::Empty,
                Stage::Parse,
                format!("the sheet has no header row {}", self.header_row),
            )
            .into());
        }
        if self.blank > 0 {
            self.out.note(format!(
                "{} empty row(s) between records skipped",
                self.blank
            ));
        }
        Ok(self.records)
    }
}

#[cfg(test)]
mod tests;
