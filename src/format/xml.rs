//! XML, streamed with quick-xml's pull parser.
//!
//! Records are the elements at the dataset's `record_path` (`/orders/order`; `*` matches any
//! name), by default the children of the root element. In a record, each attribute is a column
//! `@name`, each child element a column named after it: its text (entities and CDATA resolved,
//! spaces kept) or, when it holds elements of its own, its inner XML verbatim — refused with
//! `xml.nested_element` when the dataset is typed, since markup is not a value of any type. A
//! child's attributes are columns `child@name`. The record element's own text, if any, is a
//! column named after the record element. Names are matched by local name (`ns:order` is
//! `order`), unless a `record_path` segment is itself prefixed; `xmlns` declarations are not
//! columns.
//!
//! Safe on hostile input: the DTD is never read, so no external entity is fetched; a file that
//! declares entities (a "billion laughs" file) is `xml.entity` at once, as is a reference to any
//! entity but the five XML predefines and character references. A record (or anything outside
//! records) longer than `max_record` bytes is `xml.record_too_long` before it is buffered whole;
//! elements nest at most `MAX_DEPTH` deep. A child element named twice in one record is
//! `xml.repeated_element` rather than a guess at which one is the value.
//!
//! Nothing is passed over silently: elements off the record path (another name, another case,
//! another depth), text between records, and records holding text beside their child elements
//! are counted and noted on the file with their first example. A record's line is the line its
//! start tag begins on.

use super::rows::Builder;
use super::text::{classify, reject_io};
use super::{RowOut, Stop};
use crate::reject::{Kind, Reject, Stage};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::io::{self, BufRead, BufReader, Read};

/// How deep elements may nest.
pub const MAX_DEPTH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlOptions {
    /// The path of record elements from the root; `None`: the root's children.
    pub record_path: Option<Vec<String>>,
    /// Child elements holding elements are kept as their XML text (`false`: refused).
    pub nested_as_text: bool,
    /// The longest record, in bytes.
    pub max_record: usize,
}

impl Default for XmlOptions {
    fn default() -> Self {
        XmlOptions {
            record_path: None,
            nested_as_text: true,
            max_record: super::DEFAULT_MAX_RECORD,
        }
    }
}

/// Splits a `record_path` (`/orders/order`) into its segments.
pub fn path_segments(path: &str) -> Result<Vec<String>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "record_path {path:?} must start at the root element (\"/orders/order\")"
        ));
    };
    let segs: Vec<String> = rest.split('/').map(str::to_string).collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(format!(
            "record_path {path:?} has an empty or spaced segment (write \"/orders/order\")"
        ));
    }
    Ok(segs)
}

/// Parses XML text into `out`; returns the number of records.
pub fn parse(r: impl Read, opt: &XmlOptions, out: &mut dyn RowOut) -> Result<u64, Stop> {
    let path = opt
        .record_path
        .clone()
        .unwrap_or_else(|| vec!["*".into(), "*".into()]);
    let mut reader = Reader::from_reader(Counted {
        inner: BufReader::with_capacity(256 * 1024, r),
        consumed: 0,
        lines: 0,
        since_mark: 0,
        max: opt.max_record,
    });
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut p = Parser {
        opt,
        path,
        rec: Builder::new(out),
        depth: 0,
        on_path: 0,
        skipping: 0,
        root_seen: false,
        record: None,
        passed: Passed::default(),
    };
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        // Text comes as events of its own, so the reader now stands where the next event starts.
        let starts = reader.get_ref().lines + 1;
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => return Err(syntax(e, reader.error_position(), reader.get_ref()).into()),
        };
        let at = Pos {
            offset: reader.buffer_position(),
            line: reader.get_ref().lines + 1,
            starts,
        };
        if matches!(event, Event::Eof) {
            return p.end(at);
        }
        p.event(event, at)?;
        if p.record.is_none() && p.skipping == 0 {
            reader.get_mut().since_mark = 0;
        }
    }
}

/// Where the parser is: the byte just after the last event, its line, and the line the event
/// started on.
#[derive(Debug, Clone, Copy)]
struct Pos {
    offset: u64,
    line: u64,
    starts: u64,
}

/// What the parser passed over that was not records: how many, and the first of each.
#[derive(Default)]
struct Passed {
    /// Elements off the record path (each counted once, with what it holds).
    elements: u64,
    first_element: Option<(String, u64)>,
    /// Non-blank text outside records (between or around them).
    text: u64,
    first_text: Option<(String, u64)>,
    /// Records holding text of their own beside child elements.
    mixed: u64,
    first_mixed: Option<u64>,
}

impl Passed {
    /// The notes for the file's ledger row.
    fn notes(&self, path: &str, out: &mut Builder<'_>) {
        if let Some((name, line)) = &self.first_element {
            out.note(format!(
                "{} element{} off {path} passed over with everything in them (first: <{name}> \
                 on line {line}); point record_path at them to load them",
                self.elements,
                crate::reject::plural(self.elements as usize)
            ));
        }
        if let Some((text, line)) = &self.first_text {
            out.note(format!(
                "text outside records passed over {} time{} (first on line {line}: {text:?})",
                self.text,
                crate::reject::plural(self.text as usize)
            ));
        }
        if let Some(line) = self.first_mixed {
            out.note(format!(
                "{} record{} text beside {} child elements (first on line {line}); it is \
                 stored joined in the column named after the record element",
                self.mixed,
                if self.mixed == 1 { " holds" } else { "s hold" },
                if self.mixed == 1 { "its" } else { "their" },
            ));
        }
    }
}

/// The record being read.
struct Record {
    line: u64,
    /// The record element's local name (names the column of its own text).
    name: String,
    own_text: String,
    /// Whether it had child elements (own text beside them is mixed content).
    children: bool,
    /// The child element being read: its column name, its text, its XML, whether it nests.
    child: Option<Child>,
}

struct Child {
    name: String,
    text: String,
    xml: Vec<u8>,
    nested: bool,
    empty: bool,
}

struct Parser<'o, 'p> {
    opt: &'p XmlOptions,
    path: Vec<String>,
    rec: Builder<'o>,
    /// Elements open now.
    depth: usize,
    /// How many of the open elements lie on the record path.
    on_path: usize,
    /// The depth of an element off the record path being passed over (0: none).
    skipping: usize,
    root_seen: bool,
    record: Option<Record>,
    passed: Passed,
}

impl Parser<'_, '_> {
    fn event(&mut self, event: Event<'_>, at: Pos) -> Result<(), Stop> {
        match event {
            Event::Start(e) => {
                self.open(&e, at)?;
                self.depth += 1;
            }
            Event::Empty(e) => {
                self.open(&e, at)?;
                self.depth += 1;
                self.close(at, None)?;
            }
            Event::End(e) => self.close(at, Some(e.name().as_ref()))?,
            Event::Text(t) => {
                let text = utf8(&t, at)?;
                let text = normalize_eols(text);
                self.text(&text, &t, at)?;
            }
            Event::CData(c) => {
                let text = normalize_eols(utf8(&c, at)?);
                let raw = [b"<![CDATA[".as_slice(), &c, b"]]>"].concat();
                self.text(&text, &raw, at)?;
            }
            Event::GeneralRef(r) => {
                let name = utf8(&r, at)?.to_string();
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => predefined(&name)
                        .ok_or_else(|| entity(format!("the entity &{name}; is not defined"), at))?
                        .to_string(),
                    Err(e) => return Err(syntax_at(format!("{e}"), at).into()),
                };
                let raw = format!("&{name};");
                self.text(&ch, raw.as_bytes(), at)?;
            }
            Event::DocType(d) => {
                if memchr::memmem::find(&d, b"<!ENTITY").is_some() {
                    return Err(entity(
                        "the file declares entities in its DTD; ferry never expands them \
                         (an entity-expansion attack such as \"billion laughs\" looks like this)"
                            .into(),
                        at,
                    )
                    .into());
                }
            }
            Event::Comment(c) => self.markup(&[b"<!--".as_slice(), &c, b"-->"].concat()),
            Event::PI(pi) => self.markup(&[b"<?".as_slice(), &pi, b"?>"].concat()),
            Event::Decl(_) | Event::Eof => {}
        }
        Ok(())
    }

    /// An element starts (`e`, at depth `self.depth + 1`).
    fn open(&mut self, e: &BytesStart<'_>, at: Pos) -> Result<(), Stop> {
        if self.depth >= MAX_DEPTH {
            return Err(syntax_at(format!("elements nest deeper than {MAX_DEPTH}"), at).into());
        }
        if self.depth == 0 {
            if self.root_seen {
                return Err(syntax_at("a second root element".into(), at).into());
            }
            self.root_seen = true;
        }
        let k = self.path.len();
        let d = self.depth + 1;
        if let Some(rec) = &mut self.record {
            match &mut rec.child {
                None => {
                    rec.children = true;
                    let name = local(e, at)?;
                    self.attributes(e, &name, at)?;
                    self.record.as_mut().expect("in a record").child = Some(Child {
                        name,
                        text: String::new(),
                        xml: Vec::new(),
                        nested: false,
                        empty: true,
                    });
                }
                Some(child) => {
                    child.nested = true;
                    child.empty = false;
                    child.xml.push(b'<');
                    child.xml.extend_from_slice(e);
                    child.xml.push(b'>');
                }
            }
            return Ok(());
        }
        if self.skipping > 0 {
            return Ok(());
        }
        if self.on_path + 1 == d && matches(&self.path[d - 1], e) {
            if d == k {
                let name = local(e, at)?;
                self.attributes(e, "", at)?;
                self.record = Some(Record {
                    line: at.starts,
                    name,
                    own_text: String::new(),
                    children: false,
                    child: None,
                });
            } else {
                self.on_path = d;
            }
        } else if d == 1 {
            let root = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            return Err(Reject::new(
                Kind::XmlNoRecords,
                Stage::Parse,
                format!(
                    "the root element is <{root}>; record_path starts with /{}",
                    self.path[0]
                ),
            )
            .at_line(at.line)
            .at_offset(at.offset)
            .into());
        } else {
            self.skipping = d;
            self.passed.elements += 1;
            if self.passed.first_element.is_none() {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                self.passed.first_element = Some((name, at.starts));
            }
        }
        Ok(())
    }

    /// An element ends (the one at `self.depth`): its end tag's name, or `None` for `<x/>`.
    fn close(&mut self, at: Pos, end: Option<&[u8]>) -> Result<(), Stop> {
        let d = self.depth;
        self.depth -= 1;
        let k = self.path.len();
        if let Some(rec) = &mut self.record {
            if d == k {
                return self.finish_record(at);
            }
            if d == k + 1 {
                return self.finish_child(at);
            }
            if let Some(child) = &mut rec.child {
                match end {
                    Some(name) => {
                        child.xml.extend_from_slice(b"</");
                        child.xml.extend_from_slice(name);
                        child.xml.push(b'>');
                    }
                    None => {
                        // `open` wrote `<x/>` as `<x>`: make it `<x/>` again.
                        child.xml.pop();
                        child.xml.extend_from_slice(b"/>");
                    }
                }
            }
            return Ok(());
        }
        if self.skipping == d {
            self.skipping = 0;
        }
        if self.on_path >= d {
            self.on_path = d - 1;
        }
        Ok(())
    }

    /// Text (or a CDATA section or an entity, `raw` as written) at the current depth.
    fn text(&mut self, text: &str, raw: &[u8], at: Pos) -> Result<(), Stop> {
        let k = self.path.len();
        match &mut self.record {
            Some(rec) => match &mut rec.child {
                Some(child) => {
                    if self.depth == k + 1 {
                        child.text.push_str(text);
                    }
                    if !text.is_empty() {
                        child.empty = false;
                    }
                    child.xml.extend_from_slice(raw);
                }
                None => rec.own_text.push_str(text),
            },
            None if self.depth == 0 && !text.trim().is_empty() => {
                return Err(syntax_at("text outside the root element".into(), at).into());
            }
            // Inside an element passed over: noted with that element.
            None if self.skipping > 0 || text.trim().is_empty() => {}
            None => {
                self.passed.text += 1;
                if self.passed.first_text.is_none() {
                    let shown: String = text.trim().chars().take(40).collect();
                    let lead = &text[..text.len() - text.trim_start().len()];
                    let line = at.starts + lead.matches('\n').count() as u64;
                    self.passed.first_text = Some((shown, line));
                }
            }
        }
        Ok(())
    }

    /// A comment or processing instruction: kept only inside a nested child's XML.
    fn markup(&mut self, raw: &[u8]) {
        if let Some(child) = self.record.as_mut().and_then(|r| r.child.as_mut()) {
            child.xml.extend_from_slice(raw);
        }
    }

    /// The attributes of the record element (`prefix` "") or of one of its children.
    fn attributes(&mut self, e: &BytesStart<'_>, prefix: &str, at: Pos) -> Result<(), Stop> {
        for a in e.attributes() {
            let a = a.map_err(|err| syntax_at(format!("{err}"), at))?;
            let key = a.key;
            if key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:") {
                continue;
            }
            let name = format!(
                "{prefix}@{}",
                std::str::from_utf8(key.local_name().as_ref())
                    .map_err(|err| syntax_at(format!("{err}"), at))?
            );
            let value =
                quick_xml::escape::unescape(utf8(&a.value, at)?).map_err(|err| match err {
                    quick_xml::escape::EscapeError::UnrecognizedEntity(..) => {
                        entity(format!("{err}"), at)
                    }
                    other => syntax_at(format!("{other}"), at),
                })?;
            self.put(&name, Some(&value), at)?;
        }
        Ok(())
    }

    fn finish_child(&mut self, at: Pos) -> Result<(), Stop> {
        let rec = self.record.as_mut().expect("in a record");
        let child = rec.child.take().expect("in a child");
        if child.nested && !self.opt.nested_as_text {
            return Err(Reject::new(
                Kind::XmlNestedElement,
                Stage::Parse,
                format!(
                    "<{}> in the record starting on line {} holds elements of its own; a typed \
                     dataset takes values, not markup (point record_path deeper, or leave the \
                     dataset untyped to keep the XML text)",
                    child.name, rec.line
                ),
            )
            .at_line(at.line)
            .at_offset(at.offset)
            .in_field(child.name)
            .into());
        }
        let value = if child.empty {
            None
        } else if child.nested {
            Some(std::str::from_utf8(&child.xml).map_err(|e| syntax_at(format!("{e}"), at))?)
        } else {
            Some(child.text.as_str())
        };
        let value = value.map(str::to_string);
        self.put(&child.name, value.as_deref(), at)
    }

    fn finish_record(&mut self, at: Pos) -> Result<(), Stop> {
        let rec = self.record.take().expect("in a record");
        if !rec.own_text.trim().is_empty() {
            if rec.children {
                self.passed.mixed += 1;
                self.passed.first_mixed.get_or_insert(rec.line);
            }
            self.put(&rec.name, Some(&rec.own_text), at)?;
        }
        self.rec.finish(rec.line)
    }

    /// Sets a column of the current record, refusing a name set twice.
    fn put(&mut self, name: &str, value: Option<&str>, at: Pos) -> Result<(), Stop> {
        match self.rec.column(name) {
            Ok(Some(col)) => {
                self.rec.set(col, value);
                Ok(())
            }
            Ok(None) => {
                let line = self.record.as_ref().map_or(at.line, |r| r.line);
                Err(Reject::new(
                    Kind::XmlRepeatedElement,
                    Stage::Parse,
                    format!(
                        "the record starting on line {line} has {name:?} twice; which one is the \
                         column's value would be a guess (point record_path at the repeated \
                         element to load each as a record)"
                    ),
                )
                .at_line(at.line)
                .at_offset(at.offset)
                .in_field(name)
                .into())
            }
            Err(r) => Err(r.at_line(at.line).at_offset(at.offset).into()),
        }
    }

    fn end(mut self, at: Pos) -> Result<u64, Stop> {
        if self.depth > 0 {
            return Err(Reject::new(
                Kind::XmlSyntax,
                Stage::Parse,
                format!(
                    "the file ends (byte {}) inside {} open element(s): it may have been cut short",
                    at.offset, self.depth
                ),
            )
            .at_line(at.line)
            .at_offset(at.offset)
            .into());
        }
        if !self.root_seen {
            return Err(
                Reject::new(Kind::Empty, Stage::Parse, "the file holds no XML element").into(),
            );
        }
        if self.rec.records == 0 {
            let path = self
                .opt
                .record_path
                .as_ref()
                .map_or("the root element's children".to_string(), |p| {
                    format!("record_path /{}", p.join("/"))
                });
            return Err(Reject::new(
                Kind::XmlNoRecords,
                Stage::Parse,
                format!("no element at {path}: the file holds no records"),
            )
            .into());
        }
        let path = self
            .opt
            .record_path
            .as_ref()
            .map_or("the root's children".to_string(), |p| {
                format!("record_path /{}", p.join("/"))
            });
        self.passed.notes(&path, &mut self.rec);
        self.rec.close()?;
        Ok(self.rec.records)
    }
}

/// Whether a path segment names the element: `*`, a prefixed name (matched exactly), or a
/// local name.
fn matches(seg: &str, e: &BytesStart<'_>) -> bool {
    seg == "*"
        || if seg.contains(':') {
            e.name().as_ref() == seg.as_bytes()
        } else {
            e.local_name().as_ref() == seg.as_bytes()
        }
}

fn local(e: &BytesStart<'_>, at: Pos) -> Result<String, Stop> {
    std::str::from_utf8(e.local_name().as_ref())
        .map(str::to_string)
        .map_err(|err| syntax_at(format!("{err}"), at).into())
}

/// Text as UTF-8: ferry decodes the file before parsing (the XML declaration's encoding is
/// applied then), so quick-xml's own decoding is never used.
fn utf8(b: &[u8], at: Pos) -> Result<&str, Reject> {
    std::str::from_utf8(b).map_err(|e| syntax_at(format!("{e}"), at))
}

/// Line ends as XML 1.0 reads them: CRLF and a lone CR are LF.
fn normalize_eols(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        text.into()
    }
}

/// The five entities XML predefines.
fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

fn syntax_at(msg: String, at: Pos) -> Reject {
    Reject::new(
        Kind::XmlSyntax,
        Stage::Parse,
        format!("the XML is not well-formed near byte {}: {msg}", at.offset),
    )
    .at_line(at.line)
    .at_offset(at.offset)
}

fn entity(msg: String, at: Pos) -> Reject {
    Reject::new(Kind::XmlEntity, Stage::Parse, msg)
        .at_line(at.line)
        .at_offset(at.offset)
}

/// A parse error from quick-xml: ours (a content error carried through io), a read failure, or
/// a syntax error at `offset`.
fn syntax<R>(e: quick_xml::Error, offset: u64, src: &Counted<R>) -> Reject {
    let at = Pos {
        offset,
        line: src.lines + 1,
        starts: src.lines + 1,
    };
    match e {
        quick_xml::Error::Io(io) => {
            let owned = std::sync::Arc::try_unwrap(io)
                .unwrap_or_else(|shared| io::Error::new(shared.kind(), shared.to_string()));
            classify(owned)
        }
        quick_xml::Error::Escape(esc) => entity(format!("{esc}"), at),
        other => syntax_at(format!("{other}"), at),
    }
}

/// The input, counting consumed bytes and lines, refusing to pass `max` bytes since the last
/// mark (the parser marks between records).
struct Counted<R> {
    inner: BufReader<R>,
    consumed: u64,
    lines: u64,
    since_mark: usize,
    max: usize,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let got = self.fill_buf()?;
            let n = got.len().min(buf.len());
            buf[..n].copy_from_slice(&got[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_mark > self.max {
            return Err(reject_io(
                Reject::new(
                    Kind::XmlRecordTooLong,
                    Stage::Parse,
                    format!(
                        "a record (or the text between records) is longer than max_line_bytes \
                         ({} bytes); the rest of it was not read",
                        self.max
                    ),
                )
                .at_line(self.lines + 1)
                .at_offset(self.consumed),
            ));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        let done = &self.inner.buffer()[..n];
        self.lines += memchr::memchr_iter(b'\n', done).count() as u64;
        self.consumed += n as u64;
        self.since_mark += n;
        self.inner.consume(n);
    }
}

#[cfg(test)]
mod tests;
