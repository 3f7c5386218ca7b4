//! OpenDocument spreadsheets (`.ods`), read by ferry itself from `content.xml`, streamed.
//!
//! Values are what the file wrote: `office:value` digits for numbers (never a float),
//! `office:date-value` as written, `office:time-value` as a time of day when it is one,
//! booleans `1`/`0`, text from the cell's paragraphs. Sheets whose table style says
//! `table:display="false"` are hidden. Rows and cells repeated (`number-rows-repeated`,
//! `number-columns-repeated`) cost nothing while empty — LibreOffice writes a million of them
//! to the sheet's end — and are expanded only where they hold values, each expansion counted
//! against the part's bound: a small file cannot make ferry write gigabytes of cells.
//!
//! Two passes over `content.xml`: the first lists the sheets (names, which are hidden), so the
//! sheet is chosen as for `.xlsx`; the second reads it.

use super::parts::{self, Package, Use, XmlReader};
use super::values;
use super::{choose, corrupt, others_note, ExcelOptions, Rows, SheetInfo, MAX_COLUMNS, MAX_ROWS};
use crate::format::Stop;
use crate::reject::{Kind, Reject, Stage};
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;
use std::collections::HashSet;

const CONTENT: &str = "content.xml";

/// Whether the package is an OpenDocument document (a `content.xml` and no Excel workbook).
pub(super) fn is_ods(pkg: &Package) -> bool {
    pkg.find(CONTENT).is_some() && pkg.find("xl/workbook.xml").is_none()
}

pub(super) fn read(pkg: &mut Package, opt: &ExcelOptions, rows: &mut Rows) -> Result<(), Stop> {
    let part = pkg
        .find(CONTENT)
        .ok_or_else(|| corrupt(&"no content.xml"))?;
    let sheets = list_sheets(pkg, &part)?;
    let at = choose(&sheets, opt)?;
    if let Some(n) = others_note(&sheets, at) {
        rows.note(n);
    }
    read_sheet(pkg, &part, at, opt.max_cell, rows)
}

fn is(e: &BytesStart, qname: &[u8]) -> bool {
    e.name().as_ref() == qname
}

/// The sheets in order, each hidden or not by its table style.
fn list_sheets(pkg: &mut Package, part: &str) -> Result<Vec<SheetInfo>, Stop> {
    let mut r = parts::xml(pkg.part(part, Use::Streamed)?, parts::HELD_MAX as usize);
    let mut hidden_styles: HashSet<String> = HashSet::new();
    let mut style: Option<String> = None;
    let mut tables: Vec<(String, Option<String>)> = Vec::new();
    let mut depth = 0u32;
    parts::each_event(&mut r, part, |r, ev| {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                if is(e, b"style:style") {
                    style = (parts::attr_q(r, e, "style:family")?.as_deref() == Some("table"))
                        .then(|| parts::attr_q(r, e, "style:name"))
                        .transpose()?
                        .flatten();
                } else if is(e, b"style:table-properties") {
                    if let (Some(s), Some("false")) =
                        (&style, parts::attr_q(r, e, "table:display")?.as_deref())
                    {
                        hidden_styles.insert(s.clone());
                    }
                } else if is(e, b"table:table") {
                    if depth == 0 {
                        tables.push((
                            parts::attr_q(r, e, "table:name")?.unwrap_or_default(),
                            parts::attr_q(r, e, "table:style-name")?,
                        ));
                    }
                    depth += u32::from(matches!(ev, Event::Start(_)));
                }
            }
            Event::End(e) if e.name().as_ref() == b"table:table" => depth -= 1,
            Event::End(e) if e.name().as_ref() == b"style:style" => style = None,
            _ => {}
        }
        Ok::<_, Stop>(false)
    })?;
    Ok(tables
        .into_iter()
        .map(|(name, style)| SheetInfo {
            name,
            hidden: style.is_some_and(|s| hidden_styles.contains(&s)),
        })
        .collect())
}

/// The cell being read.
struct Cell {
    repeat: u32,
    kind: Option<String>,
    value: Option<String>,
    formula: Option<String>,
    /// Text of its paragraphs (joined by line ends) and how many there were.
    text: String,
    paragraphs: u32,
}

/// A row's cells with values (or the first whose value cannot be given), to repeat.
#[derive(Default)]
struct Row {
    repeat: u32,
    col: u32,
    cells: Vec<(u32, String)>,
    bad: Option<(u32, Option<String>, String)>,
    bytes: u64,
}

/// Where the reader is in the chosen sheet.
#[derive(Default)]
struct State {
    /// Top-level tables seen so far; the chosen one is being read while `reading`.
    tables: usize,
    depth: u32,
    reading: bool,
    next_row: u32,
    row: Option<Row>,
    cell: Option<Cell>,
    /// Inside a paragraph of the cell, inside a comment (not the value).
    in_p: u32,
    annotation: u32,
    /// Cell bytes written out by repetitions so far, and how many are allowed.
    expanded: u64,
    limit: u64,
}

fn read_sheet(
    pkg: &mut Package,
    part: &str,
    at: usize,
    max: usize,
    rows: &mut Rows,
) -> Result<(), Stop> {
    let bounded = pkg.part(part, Use::Streamed)?;
    let mut st = State {
        limit: bounded.limit(),
        ..State::default()
    };
    let mut r = parts::xml(bounded, max);
    parts::each_event(&mut r, part, |r, ev| {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let empty = matches!(ev, Event::Empty(_));
                if is(e, b"table:table") {
                    if st.depth == 0 {
                        st.reading = st.tables == at;
                        st.tables += 1;
                    }
                    st.depth += u32::from(!empty);
                } else if st.reading && st.depth == 1 {
                    start(r, e, empty, &mut st, max, rows)?;
                }
            }
            Event::End(e) => {
                let name = e.name();
                if name.as_ref() == b"table:table" {
                    st.depth -= 1;
                    if st.depth == 0 && st.reading {
                        return Ok(true);
                    }
                } else if st.reading && st.depth == 1 {
                    end(name.as_ref(), &mut st, rows)?;
                    if name.as_ref() == b"table:table-cell" {
                        parts::mark(r);
                    }
                }
            }
            ev if st.reading && st.in_p > 0 && st.annotation == 0 => {
                if let (Some(c), Some(t)) = (st.cell.as_mut(), parts::text(ev)?) {
                    push_text(c, &t, max)?;
                }
            }
            _ => {}
        }
        Ok(false)
    })
}

fn push_text(c: &mut Cell, t: &str, max: usize) -> Result<(), Reject> {
    if c.text.len() + t.len() > max {
        return Err(super::too_big("a cell's text".into(), max));
    }
    c.text.push_str(t);
    Ok(())
}

/// How many times a row or cell repeats.
fn repeated<R>(r: &XmlReader<R>, e: &BytesStart, attr: &str) -> Result<u32, Reject> {
    match parts::attr_q(r, e, attr)? {
        None => Ok(1),
        Some(n) => n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| corrupt(&format!("{attr} = {n:?}"))),
    }
}

fn start<R>(
    r: &XmlReader<R>,
    e: &BytesStart,
    empty: bool,
    st: &mut State,
    max: usize,
    rows: &mut Rows,
) -> Result<(), Stop> {
    match e.name().as_ref() {
        b"table:table-row" => {
            st.row = Some(Row {
                repeat: repeated(r, e, "table:number-rows-repeated")?,
                ..Row::default()
            });
            if empty {
                end(b"table:table-row", st, rows)?;
            }
        }
        b"table:table-cell" | b"table:covered-table-cell" => {
            st.cell = Some(Cell {
                repeat: repeated(r, e, "table:number-columns-repeated")?,
                kind: parts::attr_q(r, e, "office:value-type")?,
                value: match parts::attr_q(r, e, "office:value-type")?.as_deref() {
                    Some("float" | "percentage" | "currency") => {
                        parts::attr_q(r, e, "office:value")?
                    }
                    Some("date") => parts::attr_q(r, e, "office:date-value")?,
                    Some("time") => parts::attr_q(r, e, "office:time-value")?,
                    Some("boolean") => parts::attr_q(r, e, "office:boolean-value")?,
                    Some("string") => parts::attr_q(r, e, "office:string-value")?,
                    _ => None,
                },
                formula: parts::attr_q(r, e, "table:formula")?,
                text: String::new(),
                paragraphs: 0,
            });
            if empty {
                end(b"table:table-cell", st, rows)?;
            }
        }
        b"office:annotation" if !empty => st.annotation += 1,
        name if st.annotation > 0 || st.cell.is_none() => {
            let _ = name;
        }
        b"text:p" | b"text:h" => {
            let c = st.cell.as_mut().expect("checked");
            if c.paragraphs > 0 {
                push_text(c, "\n", max)?;
            }
            c.paragraphs += 1;
            st.in_p += u32::from(!empty);
        }
        b"text:s" if st.in_p > 0 => {
            let n = repeated(r, e, "text:c")? as usize;
            if n > max {
                return Err(super::too_big("a cell's text".into(), max).into());
            }
            push_text(st.cell.as_mut().expect("checked"), &" ".repeat(n), max)?;
        }
        b"text:tab" if st.in_p > 0 => push_text(st.cell.as_mut().expect("checked"), "\t", max)?,
        b"text:line-break" if st.in_p > 0 => {
            push_text(st.cell.as_mut().expect("checked"), "\n", max)?
        }
        _ => {}
    }
    Ok(())
}

fn end(name: &[u8], st: &mut State, rows: &mut Rows) -> Result<(), Stop> {
    match name {
        b"office:annotation" => st.annotation = st.annotation.saturating_sub(1),
        b"text:p" | b"text:h" if st.annotation == 0 => st.in_p = st.in_p.saturating_sub(1),
        b"table:table-cell" | b"table:covered-table-cell" => {
            let (Some(c), Some(row)) = (st.cell.take(), st.row.as_mut()) else {
                return Ok(());
            };
            cell_into_row(c, row)?;
        }
        b"table:table-row" => {
            if let Some(row) = st.row.take() {
                emit(row, st, rows)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A finished cell's value (or why it has none) into its row, once per repetition that holds
/// something; empty repetitions only move the column on.
fn cell_into_row(c: Cell, row: &mut Row) -> Result<(), Stop> {
    let col = row.col;
    row.col = col.saturating_add(c.repeat);
    let value: Result<Option<String>, (Option<String>, String)> = match c.kind.as_deref() {
        Some("float" | "percentage" | "currency") => match c.value.as_deref() {
            Some(v) => Ok(Some(values::number(v).ok_or_else(|| {
                corrupt(&format!("a number cell holds office:value {v:?}"))
            })?)),
            None => Err((None, "a number cell without its office:value".into())),
        },
        Some("date") => Ok(c.value),
        Some("time") => Ok(c.value.as_deref().map(values::ods_time)),
        Some("boolean") => match c.value.as_deref() {
            Some("true") => Ok(Some("1".into())),
            Some("false") => Ok(Some("0".into())),
            other => Err((
                other.map(str::to_string),
                format!("a boolean cell holds {other:?}, which is neither true nor false"),
            )),
        },
        Some("string") if c.paragraphs > 0 => Ok(Some(c.text)),
        Some("string") => Ok(c.value),
        Some(other) => return Err(corrupt(&format!("a cell of value type {other:?}")).into()),
        // A formula whose result was not saved is no value, never an empty cell.
        None => match c.formula {
            Some(f) => Err((
                Some(f.clone()),
                format!("the cell holds the formula {f} but no saved result"),
            )),
            None => Ok((!c.text.is_empty()).then_some(c.text)),
        },
    };
    match value {
        Ok(Some(v)) if !v.is_empty() => {
            if col.saturating_add(c.repeat) > MAX_COLUMNS {
                return Err(
                    corrupt(&format!("a value repeated past column {MAX_COLUMNS} (XFD)")).into(),
                );
            }
            row.bytes += (v.len() as u64 + 1) * u64::from(c.repeat);
            for k in 0..c.repeat {
                row.cells.push((col + k, v.clone()));
            }
        }
        Ok(_) => {}
        Err((value, why)) => {
            row.bad.get_or_insert((col, value, why));
        }
    }
    Ok(())
}

/// A finished row into the builder, once per repetition when it holds anything.
fn emit(row: Row, st: &mut State, rows: &mut Rows) -> Result<(), Stop> {
    let first = st.next_row;
    st.next_row = first.saturating_add(row.repeat);
    if row.cells.is_empty() && row.bad.is_none() {
        return Ok(());
    }
    if first.saturating_add(row.repeat) > MAX_ROWS {
        return Err(corrupt(&format!("a row repeated past row {MAX_ROWS}")).into());
    }
    st.expanded += row.bytes * u64::from(row.repeat);
    if st.expanded > st.limit {
        return Err(Reject::new(
            Kind::XlsxTooBig,
            Stage::Parse,
            format!(
                "the sheet's repeated rows and cells expand to more than {} MiB, the most ferry \
                 reads from it",
                st.limit >> 20
            ),
        )
        .into());
    }
    for k in 0..row.repeat {
        for (col, v) in &row.cells {
            rows.cell(first + k, *col, Some(Cow::Borrowed(v.as_str())))?;
        }
        if let Some((col, value, why)) = &row.bad {
            rows.bad(first + k, *col, value.clone(), why.clone())?;
        }
    }
    Ok(())
}
