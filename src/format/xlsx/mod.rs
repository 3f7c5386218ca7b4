//! Excel and OpenDocument workbooks: `.xlsx` and `.ods` read by ferry's own streaming readers
//! (`ooxml`, `ods`) over the zip archive, `.xls` through calamine; all three through the same row
//! builder.
//!
//! The first visible sheet, or the dataset's `sheet` (hidden or not); the row `header_row`
//! (1-based, default 1) names the columns and rows above it are passed over; the sheets not read
//! are noted on the file. Values are what the workbook wrote, never through a float: `.xlsx`
//! numbers from the digits of their `<v>`, `.ods` from `office:value` (exactly normalised:
//! `5.0` is `5`, `1E+3` is `1000`, a 20-digit number keeps its 20 digits); dates and times as
//! ISO 8601 in the workbook's date system (1900 or 1904; Excel's phantom 1900-02-29 is a bad
//! value, a time that rounds to 24:00 the next day's 00:00); booleans `1`/`0`; errors as Excel
//! shows them (`#DIV/0!`); formulas as their saved results — a formula saved without one is a
//! bad value, never an empty cell. `.xls` (BIFF) stores numbers as 64-bit floats: they are
//! written as the shortest text that reads back as the same float. Each record's line is its
//! row in the sheet; empty rows are skipped with a note; a cell the parser cannot give exactly
//! rejects its record (counted against `max_bad_records`).
//!
//! Memory: a workbook is a zip archive that has to be read at random, so the file is held in
//! memory (at most `MAX_WORKBOOK` bytes, else `xlsx.too_big`), and so are its shared strings
//! (the text cells' distinct values, at most `parts::HELD_MAX`); the sheet is decompressed and
//! parsed as a stream, bounded in how far it may expand (`parts`). A cell longer than
//! `max_line_bytes` is `xlsx.cell_too_big`. OpenDocument's repeated rows and cells are expanded
//! only where they hold values, and count against the same bounds.

mod ods;
mod ooxml;
mod parts;
mod values;

use super::text::classify;
use super::{RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use calamine::{DataType, Reader, SheetVisible, Xls};
use std::borrow::Cow;
use std::io::{Cursor, Read};
use values::Shown;

/// The biggest workbook file read, in bytes.
pub const MAX_WORKBOOK: u64 = 512 << 20;
/// Excel's last column is XFD, the 16,384th.
const MAX_COLUMNS: u32 = 16_384;
/// Excel's last row (and LibreOffice's).
const MAX_ROWS: u32 = 1_048_576;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcelOptions {
    /// The sheet to read; `None`: the first visible one.
    pub sheet: Option<String>,
    /// The 1-based row that names the columns.
    pub header_row: u32,
    /// The longest cell (and row), in bytes (`max_line_bytes`).
    pub max_cell: usize,
}

impl Default for ExcelOptions {
    fn default() -> Self {
        ExcelOptions {
            sheet: None,
            header_row: 1,
            max_cell: super::DEFAULT_MAX_RECORD,
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
    let mut rows = Rows::new(opt, out);
    if bytes.starts_with(OLE_MAGIC) {
        return xls(&bytes, opt, rows);
    }
    let mut pkg = parts::Package::open(&bytes)?;
    if ods::is_ods(&pkg) {
        ods::read(&mut pkg, opt, &mut rows)?;
    } else {
        ooxml::read(&mut pkg, opt, &mut rows)?;
    }
    rows.finish()
}

/// A sheet of a workbook as its list of sheets shows it.
#[derive(Debug, Clone)]
pub(super) struct SheetInfo {
    pub name: String,
    pub hidden: bool,
}

/// The sheet to read: the configured one (exact name, then ignoring case; hidden or not), or
/// the first visible one.
fn choose(sheets: &[SheetInfo], opt: &ExcelOptions) -> Result<usize, Reject> {
    let names = || {
        sheets
            .iter()
            .map(|s| {
                if s.hidden {
                    format!("{} (hidden)", s.name)
                } else {
                    s.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match &opt.sheet {
        None => sheets.iter().position(|s| !s.hidden),
        Some(want) => sheets.iter().position(|s| s.name == *want).or_else(|| {
            sheets
                .iter()
                .position(|s| s.name.eq_ignore_ascii_case(want))
        }),
    };
    found.ok_or_else(|| {
        let msg = match (&opt.sheet, sheets.is_empty()) {
            (_, true) => "the workbook has no sheet".to_string(),
            (None, false) => format!(
                "the workbook has no visible sheet (its sheets: {}); name the one to read with \
                 sheet = \"…\"",
                names()
            ),
            (Some(want), false) => {
                format!(
                    "the workbook has no sheet {want:?} (its sheets: {})",
                    names()
                )
            }
        };
        Reject::new(Kind::XlsxNoSheet, Stage::Parse, msg)
    })
}

/// The note naming the sheets a workbook has besides the one read.
fn others_note(sheets: &[SheetInfo], read: usize) -> Option<String> {
    let others: Vec<String> = sheets
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != read)
        .map(|(_, s)| {
            if s.hidden {
                format!("{:?} (hidden)", s.name)
            } else {
                format!("{:?}", s.name)
            }
        })
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "sheet {:?} was read; the workbook's other sheet{} {} not: {}",
            sheets[read].name,
            crate::reject::plural(others.len()),
            if others.len() == 1 { "was" } else { "were" },
            others.join(", ")
        )
    })
}

pub(super) fn corrupt(e: &dyn std::fmt::Display) -> Reject {
    Reject::new(
        Kind::XlsxCorrupt,
        Stage::Parse,
        format!("the workbook cannot be read: {e}"),
    )
}

/// A cell (or a row's cells together) longer than `max_line_bytes`.
fn too_big(what: String, max: usize) -> Reject {
    Reject::new(
        Kind::XlsxCellTooBig,
        Stage::Parse,
        format!("{what} is longer than max_line_bytes ({max} bytes); the rest was not read"),
    )
}

/// Reads a whole sheet of an `.xls` workbook (through calamine) into the row builder.
fn xls(bytes: &[u8], opt: &ExcelOptions, mut rows: Rows<'_>) -> Result<u64, Stop> {
    let mut wb = Xls::new(Cursor::new(bytes)).map_err(|e| corrupt(&e))?;
    let sheets: Vec<SheetInfo> = wb
        .sheets_metadata()
        .iter()
        .map(|s| SheetInfo {
            name: s.name.clone(),
            hidden: s.visible != SheetVisible::Visible,
        })
        .collect();
    let at = choose(&sheets, opt)?;
    if let Some(n) = others_note(&sheets, at) {
        rows.note(n);
    }
    let date1904 = wb.has_1904_epoch();
    let range = wb
        .worksheet_range(&sheets[at].name)
        .map_err(|e| corrupt(&e))?;
    let Some((top, left)) = range.start() else {
        return rows.finish();
    };
    for (i, row) in range.rows().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let at = |base: u32, k: usize| u32::try_from(k).ok().and_then(|k| base.checked_add(k));
            let (Some(r), Some(c)) = (at(top, i), at(left, j)) else {
                return Err(corrupt(&"a cell beyond the last row or column").into());
            };
            match xls_text(v, date1904) {
                Ok(t) => rows.cell(r, c, t)?,
                Err(why) => rows.bad(r, c, None, why)?,
            }
        }
    }
    rows.finish()
}

/// An `.xls` cell's value as text; `None` for an empty cell, `Err` for a value that is no
/// value (a date serial that is no date).
fn xls_text<T: DataType>(v: &T, date1904: bool) -> Result<Option<Cow<'_, str>>, String> {
    if let Some(s) = v.get_string() {
        return Ok((!s.is_empty()).then_some(Cow::Borrowed(s)));
    }
    if let Some(i) = v.get_int() {
        return Ok(Some(i.to_string().into()));
    }
    if let Some(f) = v.get_float() {
        return Ok(Some(f.to_string().into()));
    }
    if let Some(b) = v.get_bool() {
        return Ok(Some(Cow::Borrowed(if b { "1" } else { "0" })));
    }
    if let Some(dt) = v.get_datetime() {
        let shown = if dt.is_duration() {
            Shown::Duration
        } else {
            Shown::Date
        };
        return values::serial(&dt.as_f64().to_string(), shown, date1904).map(|t| Some(t.into()));
    }
    if let Some(s) = v.get_datetime_iso().or_else(|| v.get_duration_iso()) {
        return Ok(Some(Cow::Borrowed(s)));
    }
    if let Some(e) = v.get_error() {
        return Ok(Some(e.to_string().into()));
    }
    Ok(None)
}

/// A cell the workbook holds no faithful value for: its column, what it held, and why.
struct BadCell {
    col: u32,
    value: Option<String>,
    why: String,
}

/// Turns cells (in row order) into records under the header row.
pub(super) struct Rows<'o> {
    header_row: u32,
    max_cell: usize,
    names: Vec<String>,
    announced: bool,
    /// The row being gathered (0-based), its cells, their bytes, and its first bad cell.
    row: Option<u32>,
    cells: Vec<Option<String>>,
    row_bytes: usize,
    bad: Option<BadCell>,
    /// Rows between records that held nothing.
    blank: u64,
    last_data_row: Option<u32>,
    records: u64,
    text: String,
    spans: Vec<Option<(usize, usize)>>,
    out: &'o mut dyn RowOut,
}

impl<'o> Rows<'o> {
    fn new(opt: &ExcelOptions, out: &'o mut dyn RowOut) -> Self {
        Rows {
            header_row: opt.header_row,
            max_cell: opt.max_cell,
            names: Vec::new(),
            announced: false,
            row: None,
            cells: Vec::new(),
            row_bytes: 0,
            bad: None,
            blank: 0,
            last_data_row: None,
            records: 0,
            text: String::new(),
            spans: Vec::new(),
            out,
        }
    }

    fn note(&mut self, note: String) {
        self.out.note(note);
    }

    /// Moves to cell (`row`, `col`), both 0-based, ending the row before it.
    fn at(&mut self, row: u32, col: u32) -> Result<(), Stop> {
        if col >= MAX_COLUMNS {
            return Err(corrupt(&format!("a cell in column {} (past XFD)", col + 1)).into());
        }
        if row >= MAX_ROWS {
            return Err(corrupt(&format!("a cell in row {} (past the last row)", row + 1)).into());
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
        Ok(())
    }

    fn cell(&mut self, row: u32, col: u32, value: Option<Cow<'_, str>>) -> Result<(), Stop> {
        self.at(row, col)?;
        let Some(v) = value else { return Ok(()) };
        let col = col as usize;
        if v.len() > self.max_cell {
            let what = format!("the cell in row {}, column {}", row + 1, col + 1);
            return Err(too_big(what, self.max_cell).into());
        }
        self.row_bytes += v.len();
        if self.row_bytes > self.max_cell {
            let what = format!("row {} (its cells together)", row + 1);
            return Err(too_big(what, self.max_cell).into());
        }
        if self.cells.len() <= col {
            self.cells.resize(col + 1, None);
        }
        if self.cells[col].is_some() {
            return Err(corrupt(&format!("row {} names column {} twice", row + 1, col + 1)).into());
        }
        self.cells[col] = Some(v.into_owned());
        Ok(())
    }

    /// A cell whose value the workbook cannot give faithfully: its record is rejected (the
    /// first such cell of a row says why).
    fn bad(&mut self, row: u32, col: u32, value: Option<String>, why: String) -> Result<(), Stop> {
        self.at(row, col)?;
        if self.bad.is_none() {
            self.bad = Some(BadCell { col, value, why });
        }
        Ok(())
    }

    /// The gathered row is complete: it is the header, skipped, or a record.
    fn end_row(&mut self) -> Result<(), Stop> {
        let Some(row) = self.row.take() else {
            return Ok(());
        };
        let line = row + 1;
        let cells = std::mem::take(&mut self.cells);
        let bad = self.bad.take();
        self.row_bytes = 0;
        // Rows above the header, and empty rows (an empty header row is no header).
        if line < self.header_row || (bad.is_none() && cells.iter().all(Option::is_none)) {
            return Ok(());
        }
        if line == self.header_row {
            if let Some(b) = bad {
                return Err(corrupt(&format!(
                    "the header row's column {} has no name: {}",
                    b.col + 1,
                    b.why
                ))
                .into());
            }
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
        if let Some(b) = bad {
            let field = self
                .names
                .get(b.col as usize)
                .filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("column_{}", b.col + 1));
            return self
                .out
                .bad_row(u64::from(line), &field, b.value.as_deref(), b.why);
        }
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
