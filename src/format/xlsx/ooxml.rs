//! Office Open XML workbooks (`.xlsx`, `.xlsm`), read by ferry itself: the package's
//! relationships lead to the workbook part (its sheets, which are hidden, and its date system),
//! to the styles (which number formats show dates) and to the shared strings; the chosen sheet
//! is streamed cell by cell. Values come from the text the workbook wrote: a number's `<v>`
//! digits, never a float.

use super::parts::{self, Package, Use, XmlReader};
use super::values::{self, Shown};
use super::{choose, corrupt, others_note, ExcelOptions, Rows, SheetInfo};
use crate::format::Stop;
use crate::reject::{Kind, Reject, Stage};
use quick_xml::events::{BytesStart, Event};
use std::collections::HashMap;

/// The workbook part: its sheets (with their relationship ids) and date system.
struct Workbook {
    sheets: Vec<SheetInfo>,
    ids: Vec<String>,
    date1904: bool,
}

/// A part's relationships: id → (type, target part).
type Rels = HashMap<String, (String, String)>;

/// Reads the chosen sheet of an `.xlsx` package into `rows`.
pub(super) fn read(pkg: &mut Package, opt: &ExcelOptions, rows: &mut Rows) -> Result<(), Stop> {
    let wb_path = office_document(pkg)?;
    let wb = workbook(pkg, &wb_path)?;
    let rels = relationships(pkg, &wb_path)?;
    let at = choose(&wb.sheets, opt)?;
    let name = &wb.sheets[at].name;
    let (kind, target) = rels
        .get(&wb.ids[at])
        .ok_or_else(|| corrupt(&format!("sheet {name:?} has no part")))?;
    if !kind.ends_with("/worksheet") {
        return Err(Reject::new(
            Kind::XlsxNoSheet,
            Stage::Parse,
            format!("sheet {name:?} is not a worksheet (a chart or dialog sheet holds no cells)"),
        )
        .into());
    }
    let target = target.clone();
    if let Some(n) = others_note(&wb.sheets, at) {
        rows.note(n);
    }
    let part_of = |suffix: &str| {
        rels.values()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, t)| t.clone())
    };
    let styles = match part_of("/styles") {
        Some(p) => styles(pkg, &p)?,
        None => Vec::new(),
    };
    let shared = match part_of("/sharedStrings") {
        Some(p) => shared_strings(pkg, &p, opt.max_cell)?,
        None => Shared::default(),
    };
    let cx = Context {
        styles: &styles,
        shared: &shared,
        date1904: wb.date1904,
    };
    sheet(pkg, &target, &cx, opt.max_cell, rows)
}

/// Where the workbook part is: the package's `officeDocument` relationship.
fn office_document(pkg: &mut Package) -> Result<String, Reject> {
    let rels = match pkg.find("_rels/.rels") {
        Some(p) => read_rels(pkg, &p, "")?,
        None => Rels::new(),
    };
    let named = rels
        .values()
        .find(|(k, _)| k.ends_with("/officeDocument"))
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| "xl/workbook.xml".into());
    pkg.find(&named).ok_or_else(|| {
        let xlsb = pkg.find("xl/workbook.bin").is_some();
        corrupt(&if xlsb {
            "a binary workbook (.xlsb), which ferry does not read; save it as .xlsx".to_string()
        } else {
            format!("not a spreadsheet package: it has no {named}")
        })
    })
}

/// The folder a part is in (`xl/` for `xl/workbook.xml`).
fn folder(part: &str) -> &str {
    part.rfind('/').map_or("", |i| &part[..=i])
}

/// A relationship's target as a part name: absolute (`/xl/x.xml`) or relative to `base`, with
/// `..` resolved; never above the package root.
fn resolve(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if let Some(abs) = target.strip_prefix('/') {
        return normalize(abs.split('/').collect());
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    parts.extend(target.split('/'));
    normalize(parts)
}

fn normalize(parts: Vec<&str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for p in parts {
        match p {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

/// The relationships of `part` (its `_rels/<name>.rels`).
fn relationships(pkg: &mut Package, part: &str) -> Result<Rels, Reject> {
    let name = part.rsplit('/').next().unwrap_or(part);
    let rels = format!("{}_rels/{name}.rels", folder(part));
    match pkg.find(&rels) {
        Some(p) => read_rels(pkg, &p, folder(part)),
        None => Ok(Rels::new()),
    }
}

fn read_rels(pkg: &mut Package, rels_part: &str, base: &str) -> Result<Rels, Reject> {
    let mut out = read_rels_as_written(pkg, rels_part, base)?;
    // Part names as the archive spells them (writers differ in case).
    for (_, target) in out.values_mut() {
        if let Some(found) = pkg.find(target) {
            *target = found;
        }
    }
    Ok(out)
}

fn read_rels_as_written(pkg: &mut Package, rels_part: &str, base: &str) -> Result<Rels, Reject> {
    let mut r = parts::xml(pkg.part(rels_part, Use::Held)?, parts::HELD_MAX as usize);
    let mut out = Rels::new();
    parts::each_event(&mut r, rels_part, |r, ev| {
        if let Event::Start(e) | Event::Empty(e) = ev {
            if e.local_name().as_ref() == b"Relationship"
                && parts::attr(r, e, "TargetMode")?.as_deref() != Some("External")
            {
                if let (Some(id), Some(kind), Some(target)) = (
                    parts::attr(r, e, "Id")?,
                    parts::attr(r, e, "Type")?,
                    parts::attr(r, e, "Target")?,
                ) {
                    out.insert(id, (kind, resolve(base, &target)));
                }
            }
        }
        Ok::<_, Reject>(false)
    })?;
    Ok(out)
}

fn workbook(pkg: &mut Package, part: &str) -> Result<Workbook, Reject> {
    let mut r = parts::xml(pkg.part(part, Use::Held)?, parts::HELD_MAX as usize);
    let mut wb = Workbook {
        sheets: Vec::new(),
        ids: Vec::new(),
        date1904: false,
    };
    parts::each_event(&mut r, part, |r, ev| {
        let (Event::Start(e) | Event::Empty(e)) = ev else {
            return Ok::<_, Reject>(false);
        };
        match e.local_name().as_ref() {
            b"workbookPr" => {
                let v = parts::attr(r, e, "date1904")?;
                wb.date1904 = matches!(v.as_deref(), Some("1" | "true"));
            }
            b"sheet" => {
                let name =
                    parts::attr(r, e, "name")?.ok_or_else(|| corrupt(&"a sheet without a name"))?;
                let state = parts::attr(r, e, "state")?;
                let id = parts::attr(r, e, "id")?
                    .ok_or_else(|| corrupt(&format!("sheet {name:?} has no part")))?;
                wb.sheets.push(SheetInfo {
                    name,
                    hidden: matches!(state.as_deref(), Some("hidden" | "veryHidden")),
                });
                wb.ids.push(id);
            }
            _ => {}
        }
        Ok(false)
    })?;
    Ok(wb)
}

/// What each cell style (`s`) shows its number as, by the style's number format.
fn styles(pkg: &mut Package, part: &str) -> Result<Vec<Shown>, Reject> {
    let mut r = parts::xml(pkg.part(part, Use::Held)?, parts::HELD_MAX as usize);
    let mut custom: HashMap<u32, Shown> = HashMap::new();
    let mut out = Vec::new();
    let mut in_cell_xfs = false;
    let id_of = |r: &XmlReader<_>, e: &BytesStart| -> Result<u32, Reject> {
        parts::attr(r, e, "numFmtId")?
            .unwrap_or_else(|| "0".into())
            .trim()
            .parse()
            .map_err(|_| corrupt(&"a number format id that is not a number"))
    };
    parts::each_event(&mut r, part, |r, ev| {
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"numFmt" => {
                    let id = id_of(r, e)?;
                    let code = parts::attr(r, e, "formatCode")?.unwrap_or_default();
                    custom.insert(id, values::format_shows(&code));
                }
                b"cellXfs" => in_cell_xfs = matches!(ev, Event::Start(_)),
                b"xf" if in_cell_xfs => {
                    let id = id_of(r, e)?;
                    out.push(
                        custom
                            .get(&id)
                            .copied()
                            .unwrap_or_else(|| values::builtin_shows(id)),
                    );
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == b"cellXfs" => in_cell_xfs = false,
            _ => {}
        }
        Ok::<_, Reject>(false)
    })?;
    Ok(out)
}

/// The shared strings, in one buffer.
#[derive(Default)]
struct Shared {
    text: String,
    ends: Vec<u32>,
}

impl Shared {
    fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }
}

fn shared_strings(pkg: &mut Package, part: &str, max: usize) -> Result<Shared, Reject> {
    let mut r = parts::xml(pkg.part(part, Use::Held)?, max);
    let mut out = Shared::default();
    let mut cur = String::new();
    // Inside <si>, inside a <t> that counts, inside a phonetic run (<rPh>, not the value).
    let (mut in_si, mut in_t, mut phonetic) = (false, false, 0u32);
    parts::each_event(&mut r, part, |r, ev| {
        match ev {
            Event::Start(e) => match e.local_name().as_ref() {
                b"si" => {
                    in_si = true;
                    cur.clear();
                }
                b"rPh" => phonetic += 1,
                b"t" => in_t = in_si && phonetic == 0,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"si" => {
                    in_si = false;
                    let v = values::unescape_ooxml(&cur);
                    if v.len() > max {
                        return Err(super::too_big(
                            format!("shared string {}", out.ends.len()),
                            max,
                        ));
                    }
                    out.text.push_str(&v);
                    out.ends.push(
                        u32::try_from(out.text.len())
                            .map_err(|_| corrupt(&"shared strings past 4 GiB"))?,
                    );
                    parts::mark(r);
                }
                b"rPh" => phonetic = phonetic.saturating_sub(1),
                b"t" => in_t = false,
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == b"si" => {
                out.ends.push(out.text.len() as u32);
            }
            ev => {
                if in_t {
                    if let Some(t) = parts::text(ev)? {
                        cur.push_str(&t);
                    }
                }
            }
        }
        Ok::<_, Reject>(false)
    })?;
    Ok(out)
}

/// What reading a sheet needs from the rest of the workbook.
struct Context<'a> {
    styles: &'a [Shown],
    shared: &'a Shared,
    date1904: bool,
}

/// The cell being read.
#[derive(Default)]
struct Cell {
    row: u32,
    col: u32,
    kind: String,
    style: usize,
    /// `<v>`: the saved value (of a formula, its result).
    v: Option<String>,
    /// `<f>`: the formula, when there is one.
    formula: Option<String>,
    /// An inline string's text.
    inline: String,
}

/// Where text goes while a cell is read.
#[derive(Clone, Copy, PartialEq)]
enum In {
    Nothing,
    V,
    F,
    InlineT,
}

/// `A1` → (row 0, column 0).
fn cell_ref(r: &str) -> Option<(u32, u32)> {
    let letters = r.bytes().take_while(u8::is_ascii_alphabetic).count();
    if letters == 0 || letters > 3 {
        return None;
    }
    let col = r[..letters].bytes().fold(0u32, |acc, b| {
        acc * 26 + u32::from(b.to_ascii_uppercase() - b'A' + 1)
    });
    let row: u32 = r[letters..].parse().ok()?;
    (row >= 1).then(|| (row - 1, col - 1))
}

fn sheet(
    pkg: &mut Package,
    part: &str,
    cx: &Context,
    max: usize,
    rows: &mut Rows,
) -> Result<(), Stop> {
    let mut r = parts::xml(pkg.part(part, Use::Streamed)?, max);
    let (mut next_row, mut next_col) = (0u32, 0u32);
    let mut cell: Option<Cell> = None;
    let mut into = In::Nothing;
    let mut phonetic = 0u32;
    parts::each_event(&mut r, part, |r, ev| {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let empty = matches!(ev, Event::Empty(_));
                match e.local_name().as_ref() {
                    b"row" => {
                        let row = match parts::attr(r, e, "r")? {
                            Some(n) => {
                                n.trim()
                                    .parse::<u32>()
                                    .ok()
                                    .filter(|&n| n >= 1)
                                    .ok_or_else(|| corrupt(&format!("a row numbered {n:?}")))?
                                    - 1
                            }
                            None => next_row,
                        };
                        next_row = if empty { row + 1 } else { row };
                        next_col = 0;
                    }
                    b"c" => {
                        // One pass over the attributes: this runs for every cell.
                        let (mut at_ref, mut style, mut kind) = (None, 0usize, String::new());
                        for a in e.attributes().with_checks(false) {
                            let a = a.map_err(|err| corrupt(&err))?;
                            let v = std::str::from_utf8(&a.value)
                                .map_err(|_| corrupt(&"a cell attribute that is not UTF-8"))?;
                            match a.key.local_name().as_ref() {
                                b"r" => at_ref = Some(v.trim().to_string()),
                                b"s" => {
                                    style = v
                                        .trim()
                                        .parse()
                                        .map_err(|_| corrupt(&format!("a cell style {v:?}")))?
                                }
                                b"t" => kind = v.trim().to_string(),
                                _ => {}
                            }
                        }
                        let (row, col) = match at_ref {
                            Some(a) => cell_ref(&a)
                                .ok_or_else(|| corrupt(&format!("a cell named {a:?}")))?,
                            None => (next_row, next_col),
                        };
                        next_col = col + 1;
                        if !empty {
                            cell = Some(Cell {
                                row,
                                col,
                                kind,
                                style,
                                ..Cell::default()
                            });
                        }
                    }
                    b"v" if cell.is_some() => {
                        into = In::V;
                        cell.as_mut().expect("checked").v = Some(String::new());
                    }
                    b"f" if cell.is_some() => {
                        into = In::F;
                        cell.as_mut().expect("checked").formula = Some(String::new());
                    }
                    b"rPh" => phonetic += u32::from(!empty),
                    b"t" if cell.is_some() && phonetic == 0 => into = In::InlineT,
                    _ => {}
                }
                if empty && into != In::Nothing {
                    into = In::Nothing;
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"c" => {
                    if let Some(c) = cell.take() {
                        put(cx, c, rows)?;
                    }
                    parts::mark(r);
                }
                b"row" => next_row += 1,
                b"rPh" => phonetic = phonetic.saturating_sub(1),
                b"v" | b"f" | b"t" => into = In::Nothing,
                _ => {}
            },
            ev => {
                if let (Some(c), Some(t)) = (cell.as_mut(), parts::text(ev)?) {
                    match into {
                        In::V => c.v.get_or_insert_with(String::new).push_str(&t),
                        In::F => c.formula.get_or_insert_with(String::new).push_str(&t),
                        In::InlineT => c.inline.push_str(&t),
                        In::Nothing => {}
                    }
                }
            }
        }
        Ok::<_, Stop>(false)
    })
}

/// A finished cell into the row builder: its value as the workbook wrote it, or why it has
/// none that ferry can give.
fn put(cx: &Context, c: Cell, rows: &mut Rows) -> Result<(), Stop> {
    let (row, col) = (c.row, c.col);
    let unsaved = |f: &str| {
        let shown: String = f.chars().take(80).collect();
        format!(
            "the cell holds the formula ={shown} but no saved result (the workbook was saved \
             without calculating it: recalculate and save it, or export the values)"
        )
    };
    // A formula with no saved value is no value, never an empty cell.
    if let (Some(f), true) = (&c.formula, c.v_missing()) {
        return rows.bad(row, col, Some(format!("={f}")), unsaved(f));
    }
    let value: Option<String> = match (c.kind.as_str(), c.v) {
        ("s", Some(v)) => {
            let i: usize = v
                .trim()
                .parse()
                .map_err(|_| corrupt(&format!("a shared string index {v:?}")))?;
            let s = cx
                .shared
                .get(i)
                .ok_or_else(|| corrupt(&format!("shared string {i} does not exist")))?;
            Some(s.to_string())
        }
        ("inlineStr", _) => Some(values::unescape_ooxml(&c.inline).into_owned()),
        ("str", Some(v)) => Some(values::unescape_ooxml(&v).into_owned()),
        ("b", Some(v)) => match v.trim() {
            "1" => Some("1".into()),
            "0" => Some("0".into()),
            other => {
                let why = format!("a boolean cell holds {other:?}, which is neither 1 nor 0");
                return rows.bad(row, col, Some(other.to_string()), why);
            }
        },
        ("e" | "d", Some(v)) => Some(v),
        ("n" | "", Some(v)) => {
            let n = values::number(&v)
                .ok_or_else(|| corrupt(&format!("the number cell {} holds {v:?}", at(row, col))))?;
            let shown = cx.styles.get(c.style).copied().unwrap_or(Shown::Number);
            match values::serial(&n, shown, cx.date1904) {
                Ok(t) => Some(t),
                Err(why) => return rows.bad(row, col, Some(n), why),
            }
        }
        (_, None) => None,
        (other, Some(_)) => {
            return Err(corrupt(&format!(
                "cell {} has the unknown type {other:?}",
                at(row, col)
            ))
            .into())
        }
    };
    rows.cell(row, col, value.filter(|v| !v.is_empty()).map(Into::into))
}

impl Cell {
    /// Whether the cell has no saved value (`<v>` absent, or empty where a value is needed).
    fn v_missing(&self) -> bool {
        match &self.v {
            None => self.kind != "inlineStr",
            // An empty string is a formula's legitimate text result.
            Some(v) => v.is_empty() && !matches!(self.kind.as_str(), "str" | "inlineStr"),
        }
    }
}

/// A cell's name for messages: `B7`.
fn at(row: u32, col: u32) -> String {
    let mut name = String::new();
    let mut c = col + 1;
    while c > 0 {
        let r = (c - 1) % 26;
        name.insert(0, char::from(b'A' + r as u8));
        c = (c - 1) / 26;
    }
    format!("{name}{}", row + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_names_and_targets() {
        assert_eq!(cell_ref("A1"), Some((0, 0)));
        assert_eq!(cell_ref("XFD1048576"), Some((1_048_575, 16_383)));
        assert_eq!(cell_ref("AA10"), Some((9, 26)));
        assert_eq!(cell_ref("A0"), None);
        assert_eq!(cell_ref("ABCD1"), None);
        assert_eq!(at(6, 1), "B7");
        assert_eq!(at(0, 26), "AA1");
        assert_eq!(
            resolve("xl/", "worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve("xl/", "/xl/worksheets/s.xml"),
            "xl/worksheets/s.xml"
        );
        assert_eq!(resolve("xl/", "../../../etc/x.xml"), "etc/x.xml");
        assert_eq!(resolve("", "xl/workbook.xml"), "xl/workbook.xml");
    }
}
