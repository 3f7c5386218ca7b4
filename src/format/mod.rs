//! Formats: which parser a file gets, and the interface every parser writes rows into.
//!
//! Detection order (R-formats): the dataset's configured format, else the extension (after an
//! optional `.gz`), else sniffing the first bytes of decoded text. Gzip is recognized by its
//! extension or its magic bytes. Parsers stream: they hand each row to a `RowOut` as they read it.
//! Nothing here knows about SQLite or the spool.

pub mod csv;
pub mod fixed;
pub mod json;
mod rows;
pub mod text;
pub mod xlsx;
pub mod xml;

use crate::reject::Reject;
use std::collections::HashMap;
use std::io::{self, Read};

pub use text::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Json,
    Xml,
    /// Fixed-width columns (only when the dataset says so: nothing in a name or the bytes
    /// tells a fixed-width file from text).
    Fixed,
    /// An Excel (or OpenDocument) workbook.
    Excel,
}

impl Format {
    pub fn id(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Json => "json",
            Format::Xml => "xml",
            Format::Fixed => "fixed",
            Format::Excel => "xlsx",
        }
    }

    /// Whether the parser names every column before the first record (a header row or a
    /// layout), so a missing column is known at once.
    pub fn columns_up_front(self) -> bool {
        matches!(self, Format::Csv | Format::Fixed | Format::Excel)
    }
}

/// The longest record (a CSV line, an NDJSON line, one JSON array element) read by default.
pub const DEFAULT_MAX_RECORD: usize = 16 << 20;
/// The longest column name (header cell, JSON key) accepted, in bytes.
pub const MAX_COLUMN_NAME: usize = 1024;

/// A dataset's format options as configured; `None` means detect.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub format: Option<Format>,
    /// `None`: by extension (`.tsv` → tab) or sniffed among `,` `;` `\t` `|`.
    pub delimiter: Option<u8>,
    pub quote: u8,
    /// Whether the first CSV row names the columns.
    pub header: bool,
    /// Column names for CSV files without a header row.
    pub names: Vec<String>,
    /// JSON pointer to the array of records inside a top-level object (e.g. `/data/items`).
    pub json_pointer: Option<String>,
    /// A declared encoding other than UTF-8.
    pub encoding: Option<Encoding>,
    /// RFC 4180 quoting only (`quotes = "strict"`, the default) or csv-core's lenient reading.
    pub strict_quotes: bool,
    /// The longest record accepted, in bytes (`max_line_bytes`).
    pub max_record: usize,
    /// Whether NUL characters are kept instead of refused.
    pub allow_nul: bool,
    /// What a JSON file's records are: objects, arrays under a header row, or either (`auto`).
    pub json_records: json::Records,
    /// Where an XML file's records are (`record_path`), and whether nested elements are kept
    /// as text (`max_record` is taken from `max_record` above).
    pub xml: xml::XmlOptions,
    /// A fixed-width dataset's layout (set with `format = "fixed"`).
    pub fixed: Option<fixed::Layout>,
    /// Which sheet of a workbook, and its header row.
    pub excel: xlsx::ExcelOptions,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            format: None,
            delimiter: None,
            quote: b'"',
            header: true,
            names: Vec::new(),
            json_pointer: None,
            encoding: None,
            strict_quotes: true,
            max_record: DEFAULT_MAX_RECORD,
            allow_nul: false,
            json_records: json::Records::Auto,
            xml: xml::XmlOptions::default(),
            fixed: None,
            excel: xlsx::ExcelOptions::default(),
        }
    }
}

/// Whether a file is gzip: by name or by its first two bytes.
pub fn is_gzip(name: &str, head: &[u8]) -> bool {
    name.to_ascii_lowercase().ends_with(".gz") || head.starts_with(&[0x1f, 0x8b])
}

/// The format named by a file's extension, ignoring a trailing `.gz`.
pub fn format_from_name(name: &str) -> Option<(Format, Option<u8>)> {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    let ext = base.rsplit_once('.').map(|(_, e)| e)?;
    match ext {
        "csv" => Some((Format::Csv, None)),
        "tsv" | "tab" => Some((Format::Csv, Some(b'\t'))),
        "psv" => Some((Format::Csv, Some(b'|'))),
        "ndjson" | "jsonl" => Some((Format::Ndjson, None)),
        "json" => Some((Format::Json, None)),
        "xml" => Some((Format::Xml, None)),
        "xlsx" | "xlsm" | "xls" | "ods" => Some((Format::Excel, None)),
        _ => None,
    }
}

/// Guesses the format of decoded text from its first bytes: `[` is a JSON array, `{` a stream of
/// JSON objects, `<` XML, anything else CSV.
pub fn sniff_format(head: &[u8]) -> Format {
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Format::Json,
        Some(b'{') => Format::Json,
        Some(b'<') => Format::Xml,
        _ => Format::Csv,
    }
}

/// Picks the delimiter among `,` `;` `\t` `|` from the first lines: the one that splits the
/// header most often and the same number of times on the next line. Defaults to `,`.
pub fn sniff_delimiter(head: &[u8], quote: u8) -> u8 {
    const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];
    let mut lines = head.split(|&b| b == b'\n');
    let count = |line: &[u8]| -> [usize; 4] {
        let mut counts = [0; 4];
        let mut quoted = false;
        for &b in line {
            if b == quote {
                quoted = !quoted;
            } else if !quoted {
                if let Some(i) = CANDIDATES.iter().position(|&c| c == b) {
                    counts[i] += 1;
                }
            }
        }
        counts
    };
    let Some(first) = lines.next() else {
        return b',';
    };
    let h = count(first);
    let next = lines.find(|l| !l.iter().all(|b| b.is_ascii_whitespace()));
    let n = next.map(count);
    let mut best: Option<(usize, bool, usize)> = None; // (count, consistent, index)
    for i in 0..CANDIDATES.len() {
        if h[i] == 0 {
            continue;
        }
        let consistent = n.is_none_or(|n| n[i] == h[i]);
        let better = match best {
            None => true,
            Some((bc, bcons, _)) => (consistent, h[i]) > (bcons, bc),
        };
        if better {
            best = Some((h[i], consistent, i));
        }
    }
    best.map_or(b',', |(_, _, i)| CANDIDATES[i])
}

/// Reads up to `n` bytes without losing them: returns them and a reader that yields them again
/// followed by the rest.
pub fn peek<'a>(
    mut r: Box<dyn Read + Send + 'a>,
    n: usize,
) -> io::Result<(Vec<u8>, Box<dyn Read + Send + 'a>)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    let again = io::Cursor::new(head.clone()).chain(r);
    Ok((head, Box::new(again)))
}

/// Why a parser stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The file is bad (or could not be read).
    Reject(Reject),
    /// The consumer no longer wants rows (the file turned out to be a duplicate).
    Cancelled,
}

impl From<Reject> for Stop {
    fn from(r: Reject) -> Stop {
        Stop::Reject(r)
    }
}

/// Where parsers put what they read.
pub trait RowOut {
    /// All of the file's columns so far. Called before the first row, and again (with the list
    /// grown) before a row that has a new column.
    fn columns(&mut self, names: &[String]) -> Result<(), Stop>;
    /// One record: `spans` index into `text`, one per column (`None` = null/empty).
    fn row(&mut self, line: u64, text: &str, spans: &[Option<(usize, usize)>]) -> Result<(), Stop>;
    /// Something the parser passed over that a reader of the ledger should know about (blank
    /// lines skipped): recorded as a warning on the file.
    fn note(&mut self, _note: String) {}
    /// A record the parser read but cannot give faithfully (a workbook cell with no saved
    /// value, a date that never existed): rejected as a bad record, in `field`, with `why`.
    fn bad_row(
        &mut self,
        line: u64,
        field: &str,
        value: Option<&str>,
        why: String,
    ) -> Result<(), Stop>;
}

/// How many blank lines a note names by number (the rest are counted).
pub const BLANK_LINES_NAMED: usize = 5;

/// The note for `count` blank lines skipped between records, the first of them at `at`.
pub fn blank_note(count: u64, at: &[u64]) -> Option<String> {
    if count == 0 {
        return None;
    }
    let at: Vec<String> = at.iter().map(u64::to_string).collect();
    Some(format!(
        "{count} blank line{} skipped (line{} {}{})",
        crate::reject::plural(count as usize),
        crate::reject::plural(at.len()),
        at.join(", "),
        if count > at.len() as u64 { ", …" } else { "" }
    ))
}

/// The columns ferry adds to every dataset table.
pub const SYSTEM_COLUMNS: [&str; 4] = ["_id", "_file_id", "_line", "_key"];

/// How a file names one of its columns, as ferry recognizes it across files: the name without
/// surrounding spaces and, when one CSV header repeats a name, which occurrence it is. The same
/// key always lands in the same table column of a dataset (the writer keeps the map); names that
/// differ in anything else (case included) are different columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnKey {
    pub name: String,
    /// 1 for the first column of that name in the file, 2 for the second, …
    pub occurrence: u32,
    /// 1-based position in the file that shows it (names blank headers `column_N`).
    pub position: u32,
}

impl ColumnKey {
    /// Keys for a header row: trimmed names, repeats numbered by occurrence.
    pub fn for_header(names: &[String]) -> Vec<ColumnKey> {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        names
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let name = raw.trim();
                let n = seen.entry(name).or_insert(0);
                *n += 1;
                ColumnKey {
                    name: name.to_string(),
                    occurrence: *n,
                    position: i as u32 + 1,
                }
            })
            .collect()
    }

    /// The column name this key gets when nothing else holds it: the name itself, `column_N`
    /// for a blank one; repeats and clashes are numbered by the writer.
    pub fn stem(&self) -> String {
        if self.name.is_empty() {
            format!("column_{}", self.position)
        } else {
            self.name.clone()
        }
    }

    /// How the key reads in a message: `"name"`, `"name" (2nd)`, `blank header 3`.
    pub fn describe(&self) -> String {
        let base = if self.name.is_empty() {
            format!("blank header {}", self.position)
        } else {
            format!("{:?}", self.name)
        };
        match self.occurrence {
            1 => base,
            2 => format!("{base} (2nd)"),
            3 => format!("{base} (3rd)"),
            n => format!("{base} ({n}th)"),
        }
    }
}

/// A file opened for parsing: decompressed, decoded, its format decided.
pub struct Opened<'a> {
    pub format: Format,
    reader: Box<dyn Read + Send + 'a>,
    csv: csv::CsvOptions,
    json: json::JsonOptions,
    xml: xml::XmlOptions,
    fixed: Option<fixed::Layout>,
    excel: xlsx::ExcelOptions,
    pointer: Vec<String>,
    /// A `.json` file that is a stream of arrays, one per line, starting with a header row of
    /// names (`["a","b"]` then `[1,2]`): read line by line like NDJSON. (As one JSON document,
    /// an array of strings could not be records, so nothing else is read differently.)
    compact_lines: bool,
}

/// Whether decoded text (a BOM already dropped) starts with `[` then `"`: a header row of a
/// compact JSON stream.
fn starts_with_names(head: &[u8]) -> bool {
    let mut b = head.iter().filter(|c| !c.is_ascii_whitespace());
    b.next() == Some(&b'[') && b.next() == Some(&b'"')
}

/// The encoding an XML declaration at the start of the bytes names (`<?xml version="1.0"
/// encoding="ISO-8859-1"?>`), when it is not UTF-8: such a file is decoded with it unless the
/// dataset declares an encoding. A label ferry cannot decode faithfully is an error: reading
/// the file as UTF-8 anyway could store text the partner never wrote (ISO-2022 escapes pass as
/// ASCII).
fn xml_declared_encoding(raw: &[u8]) -> Result<Option<Encoding>, Reject> {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let label = (|| {
        let decl = raw.strip_prefix(b"<?xml")?;
        let decl = &decl[..memchr::memmem::find(decl, b"?>")?];
        let at = memchr::memmem::find(decl, b"encoding")?;
        let rest = decl[at + 8..]
            .trim_ascii_start()
            .strip_prefix(b"=")?
            .trim_ascii_start();
        let quote = *rest.first().filter(|q| **q == b'"' || **q == b'\'')?;
        let value = &rest[1..];
        Some(String::from_utf8_lossy(&value[..memchr::memchr(quote, value)?]).into_owned())
    })();
    let Some(label) = label else { return Ok(None) };
    let refuse = |why: String| {
        Reject::new(
            crate::reject::Kind::EncodingInvalid,
            crate::reject::Stage::Decode,
            format!("the XML declaration names an encoding ferry cannot read: {why}; declare `encoding` on the dataset if the file is really in another one"),
        )
    };
    match Encoding::for_label(&label) {
        Ok(e) if e.is_utf8() => Ok(None),
        // UTF-16 files announce themselves with a byte-order mark; a UTF-16 declaration in
        // ASCII bytes contradicts itself.
        Ok(e) if !e.is_ascii_compatible() => Err(refuse(format!(
            "{label:?} in a declaration written in ASCII bytes"
        ))),
        Ok(e) => Ok(Some(e)),
        Err(why) => Err(refuse(why)),
    }
}

/// How much decoded text detection looks at.
const SNIFF_BYTES: usize = 16 * 1024;

/// Prepares `raw` (a file's bytes) for parsing: gzip by name or magic, text decoding, then the
/// format and CSV delimiter from the options, the name, or the text itself.
/// `numeric_header_check`: refuse a CSV header of numbers (datasets that take their columns from
/// the files; a typed dataset's drift rules catch it already).
pub fn open<'a>(
    raw: Box<dyn Read + Send + 'a>,
    name: &str,
    opts: &FormatOptions,
    pointer: &[String],
    numeric_header_check: bool,
) -> Result<Opened<'a>, Reject> {
    let (magic, raw) = peek(raw, 2).map_err(text::classify)?;
    let gzip = is_gzip(name, &magic);
    let raw: Box<dyn Read + Send + 'a> = if gzip {
        Box::new(text::Gunzip::new(raw))
    } else {
        raw
    };
    // Binary formats are recognized before any text decoding.
    let (raw_head, raw) = peek(raw, 1024).map_err(text::classify)?;
    let by_name = format_from_name(name);
    let declared = opts.format.or(by_name.map(|(f, _)| f));
    let excel = declared.map_or(xlsx::is_workbook(&raw_head), |f| f == Format::Excel);
    let encoding = match opts.encoding {
        Some(e) => Some(e),
        None if excel => None,
        None => xml_declared_encoding(&raw_head)?,
    };
    let decoded: Box<dyn Read + Send + 'a> = if excel {
        raw
    } else {
        text::decoded(raw, encoding, opts.allow_nul).map_err(text::classify)?
    };
    let (head, reader) = peek(decoded, SNIFF_BYTES).map_err(text::classify)?;
    let format = if excel {
        Format::Excel
    } else {
        declared.unwrap_or_else(|| sniff_format(&head))
    };
    let delimiter = opts
        .delimiter
        .or(by_name.and_then(|(_, d)| d))
        .unwrap_or_else(|| sniff_delimiter(&head, opts.quote));
    Ok(Opened {
        format,
        reader,
        csv: csv::CsvOptions {
            delimiter,
            quote: opts.quote,
            header: opts.header,
            names: opts.names.clone(),
            strict_quotes: opts.strict_quotes,
            max_record: opts.max_record,
            numeric_header_check: numeric_header_check && opts.header,
        },
        json: json::JsonOptions {
            max_record: opts.max_record,
            allow_nul: opts.allow_nul,
            records: opts.json_records,
        },
        xml: xml::XmlOptions {
            max_record: opts.max_record,
            ..opts.xml.clone()
        },
        fixed: opts.fixed.clone(),
        excel: xlsx::ExcelOptions {
            max_cell: opts.max_record,
            ..opts.excel.clone()
        },
        compact_lines: format == Format::Json
            && pointer.is_empty()
            && opts.json_records != json::Records::Objects
            && starts_with_names(&head),
        pointer: pointer.to_vec(),
    })
}

impl Opened<'_> {
    /// Parses every record into `out`; returns how many records were read.
    pub fn parse(self, out: &mut dyn RowOut) -> Result<u64, Stop> {
        match self.format {
            Format::Csv => csv::parse(self.reader, &self.csv, out),
            Format::Ndjson => json::parse_ndjson(self.reader, &self.json, out),
            Format::Json if self.compact_lines => json::parse_ndjson(self.reader, &self.json, out),
            Format::Json => json::parse_json(self.reader, &self.pointer, &self.json, out),
            Format::Xml => xml::parse(self.reader, &self.xml, out),
            Format::Excel => xlsx::parse(self.reader, &self.excel, out),
            Format::Fixed => match &self.fixed {
                Some(layout) => fixed::parse(self.reader, layout, out),
                None => Err(Reject::new(
                    crate::reject::Kind::Internal,
                    crate::reject::Stage::Parse,
                    "format = \"fixed\" without a layout",
                )
                .into()),
            },
        }
    }
}

/// A `RowOut` that keeps everything, for parser tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Collect {
    pub cols: Vec<String>,
    pub rows: Vec<(u64, Vec<Option<String>>)>,
    pub notes: Vec<String>,
    /// Bad rows: line, field, why.
    pub bad: Vec<(u64, String, String)>,
}

#[cfg(test)]
impl RowOut for Collect {
    fn columns(&mut self, names: &[String]) -> Result<(), Stop> {
        self.cols = names.to_vec();
        Ok(())
    }
    fn row(&mut self, line: u64, text: &str, spans: &[Option<(usize, usize)>]) -> Result<(), Stop> {
        self.rows.push((
            line,
            spans
                .iter()
                .map(|s| s.map(|(a, b)| text[a..b].to_string()))
                .collect(),
        ));
        Ok(())
    }
    fn note(&mut self, note: String) {
        self.notes.push(note);
    }
    fn bad_row(
        &mut self,
        line: u64,
        field: &str,
        _: Option<&str>,
        why: String,
    ) -> Result<(), Stop> {
        self.bad.push((line, field.to_string(), why));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions() {
        assert_eq!(format_from_name("a.CSV"), Some((Format::Csv, None)));
        assert_eq!(
            format_from_name("a.tsv.gz"),
            Some((Format::Csv, Some(b'\t')))
        );
        assert_eq!(format_from_name("a.jsonl"), Some((Format::Ndjson, None)));
        assert_eq!(format_from_name("a.json"), Some((Format::Json, None)));
        assert_eq!(format_from_name("README"), None);
        assert!(is_gzip("x.csv.gz", b""));
        assert!(is_gzip("x.csv", &[0x1f, 0x8b, 8]));
    }

    #[test]
    fn delimiters_are_sniffed() {
        assert_eq!(sniff_delimiter(b"a;b;c\n1;2;3\n", b'"'), b';');
        assert_eq!(sniff_delimiter(b"a,b\n1,2\n", b'"'), b',');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n1\t2\t3", b'"'), b'\t');
        assert_eq!(sniff_delimiter(b"\"x;y\",b,c\n1,2,3\n", b'"'), b',');
        // The header alone has more commas, but only the semicolon is consistent.
        assert_eq!(sniff_delimiter(b"a,b;c,d;e\n1;2;3\n", b'"'), b';');
        assert_eq!(sniff_delimiter(b"single\n1\n", b'"'), b',');
    }

    #[test]
    fn header_keys_depend_on_the_text_only() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keys = ColumnKey::for_header(&names(&[" id ", "ID", "", "id", ""]));
        let short: Vec<(&str, u32)> = keys
            .iter()
            .map(|k| (k.name.as_str(), k.occurrence))
            .collect();
        assert_eq!(short, [("id", 1), ("ID", 1), ("", 1), ("id", 2), ("", 2)]);
        assert_eq!(keys[2].stem(), "column_3");
        assert_eq!(keys[3].describe(), "\"id\" (2nd)");
        // The same names in another order are the same keys.
        let again = ColumnKey::for_header(&names(&["ID", "id", "id"]));
        assert_eq!((again[0].name.as_str(), again[0].occurrence), ("ID", 1));
        assert_eq!((again[2].name.as_str(), again[2].occurrence), ("id", 2));
    }
}
