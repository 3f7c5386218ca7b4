//! The parts of a zipped workbook (`.xlsx`, `.ods`), each read through a bound on how much it
//! may expand to: a small file that decompresses to gigabytes (a zip bomb) is `xlsx.too_big`
//! after at most the bound, never an exhausted memory or hours of work.

use super::corrupt;
use crate::format::text::reject_io;
use crate::reject::{Kind, Reject, Stage};
use std::io::{self, Cursor, Read};

/// A part streamed (a sheet) may expand to this, or to `STREAM_RATIO` times its compressed
/// size when that is more, up to `STREAM_MAX`.
const STREAM_MIN: u64 = 128 << 20;
const STREAM_RATIO: u64 = 100;
const STREAM_MAX: u64 = 4 << 30;
/// A part held in memory (shared strings, styles, the workbook and its relationships) may
/// expand to this.
pub const HELD_MAX: u64 = 100 << 20;

/// A workbook's zip archive, read from memory.
pub struct Package<'b> {
    zip: zip::ZipArchive<Cursor<&'b [u8]>>,
}

/// One part's decompressed bytes.
pub type Part<'a, 'b> = zip::read::ZipFile<'a, Cursor<&'b [u8]>>;

/// How a part is used, which decides its bound.
#[derive(Debug, Clone, Copy)]
pub enum Use {
    /// Streamed once (a sheet).
    Streamed,
    /// Held in memory while the sheet is read.
    Held,
}

impl<'b> Package<'b> {
    pub fn open(bytes: &'b [u8]) -> Result<Package<'b>, Reject> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(&e))?;
        Ok(Package { zip })
    }

    /// The name of the part called `name` (exactly, else ignoring ASCII case), if there is one.
    pub fn find(&self, name: &str) -> Option<String> {
        let names = || self.zip.file_names();
        names()
            .find(|n| *n == name)
            .or_else(|| names().find(|n| n.eq_ignore_ascii_case(name)))
            .map(str::to_string)
    }

    /// Opens a part (found with `find`) for reading within its bound.
    pub fn part(&mut self, name: &str, usage: Use) -> Result<Bounded<Part<'_, 'b>>, Reject> {
        let f = self.zip.by_name(name).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(m) if m.contains("assword") => Reject::new(
                Kind::XlsxCorrupt,
                Stage::Parse,
                format!(
                    "the workbook part {name} is encrypted; ferry reads no protected workbooks"
                ),
            ),
            other => corrupt(&format!("{name}: {other}")),
        })?;
        let limit = match usage {
            Use::Streamed => {
                (f.compressed_size().saturating_mul(STREAM_RATIO)).clamp(STREAM_MIN, STREAM_MAX)
            }
            Use::Held => HELD_MAX,
        };
        let packed = f.compressed_size();
        Ok(Bounded {
            inner: f,
            read: 0,
            limit,
            packed,
            name: name.to_string(),
        })
    }
}

/// A part's bytes, refusing to expand past `limit`.
pub struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    /// Its compressed size, for the message.
    packed: u64,
    name: String,
}

impl<R> Bounded<R> {
    /// How far the part may expand.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|i| i.is::<Reject>()) {
                e
            } else {
                reject_io(corrupt(&format!("{}: {e}", self.name)))
            }
        })?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(reject_io(Reject::new(
                Kind::XlsxTooBig,
                Stage::Parse,
                format!(
                    "the workbook part {} ({} bytes compressed) expands to more than {} MiB, \
                     the most ferry reads from it (a zip bomb?)",
                    self.name,
                    self.packed,
                    self.limit >> 20
                ),
            )));
        }
        Ok(n)
    }
}

/// A part's XML, read with quick-xml. `max` bounds what may be read between two marks (the
/// parser marks after each cell or string), so one huge text node is refused before quick-xml
/// buffers it whole.
pub fn xml<R: Read>(part: Bounded<R>, max: usize) -> XmlReader<R> {
    let mut r = quick_xml::Reader::from_reader(Marked {
        inner: io::BufReader::with_capacity(64 * 1024, part),
        since: 0,
        // Room for the markup around the value.
        max: max.saturating_add(64 * 1024),
    });
    let c = r.config_mut();
    c.check_end_names = true;
    c.expand_empty_elements = false;
    c.trim_text(false);
    r
}

pub type XmlReader<R> = quick_xml::Reader<Marked<Bounded<R>>>;

/// Reads a part's events until `f` says stop (`true`) or the part ends.
pub fn each_event<R: Read, E: From<Reject>>(
    r: &mut XmlReader<R>,
    part: &str,
    mut f: impl FnMut(&mut XmlReader<R>, &quick_xml::events::Event) -> Result<bool, E>,
) -> Result<(), E> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| E::from(xml_error(part, e)))?;
        if matches!(ev, quick_xml::events::Event::Eof) || f(r, &ev)? {
            return Ok(());
        }
    }
}

/// Starts counting afresh: what was read so far belongs to finished values.
pub fn mark<R>(r: &mut XmlReader<R>) {
    r.get_mut().since = 0;
}

/// A part's bytes as quick-xml reads them, refusing more than `max` between marks.
pub struct Marked<R> {
    inner: io::BufReader<R>,
    since: usize,
    max: usize,
}

impl<R: Read> Read for Marked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
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

impl<R: Read> io::BufRead for Marked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since > self.max {
            return Err(reject_io(Reject::new(
                Kind::XlsxCellTooBig,
                Stage::Parse,
                format!(
                    "a cell (or shared string) is longer than max_line_bytes ({} bytes); the \
                     rest of it was not read",
                    self.max - 64 * 1024
                ),
            )));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.since += n;
        self.inner.consume(n);
    }
}

/// Why an XML part cannot be read: a bound or a content error carried through the reader, or
/// the part's XML itself.
pub fn xml_error(part: &str, e: quick_xml::Error) -> Reject {
    match e {
        quick_xml::Error::Io(io) => {
            let owned = std::sync::Arc::try_unwrap(io)
                .unwrap_or_else(|shared| io::Error::new(shared.kind(), shared.to_string()));
            crate::format::text::classify(owned)
        }
        other => corrupt(&format!("{part}: {other}")),
    }
}

/// An attribute's value by its qualified name as OpenDocument writes it (`office:value`),
/// unescaped.
pub fn attr_q<R>(
    r: &XmlReader<R>,
    e: &quick_xml::events::BytesStart<'_>,
    qname: &str,
) -> Result<Option<String>, Reject> {
    match e.try_get_attribute(qname).map_err(|err| corrupt(&err))? {
        Some(a) => Ok(Some(
            a.decode_and_unescape_value(r.decoder())
                .map_err(|err| corrupt(&err))?
                .into_owned(),
        )),
        None => Ok(None),
    }
}

/// An attribute's value by its local name (`r:id` is `id`), unescaped.
pub fn attr<R>(
    r: &XmlReader<R>,
    e: &quick_xml::events::BytesStart<'_>,
    local: &str,
) -> Result<Option<String>, Reject> {
    for a in e.attributes() {
        let a = a.map_err(|err| corrupt(&err))?;
        if a.key.local_name().as_ref() == local.as_bytes() {
            let v = a
                .decode_and_unescape_value(r.decoder())
                .map_err(|err| corrupt(&err))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// The text an event carries (text, CDATA, a character or predefined entity reference), with
/// XML's line ends (CRLF and CR are LF); `None` for any other event.
pub fn text<'e>(
    ev: &'e quick_xml::events::Event<'e>,
) -> Result<Option<std::borrow::Cow<'e, str>>, Reject> {
    use quick_xml::events::Event;
    use std::borrow::Cow;
    Ok(Some(match ev {
        Event::Text(t) => t.xml10_content().map_err(|e| corrupt(&e))?,
        Event::CData(c) => c.xml10_content().map_err(|e| corrupt(&e))?,
        Event::GeneralRef(g) => {
            if let Some(c) = g.resolve_char_ref().map_err(|e| corrupt(&e))? {
                return Ok(Some(Cow::Owned(c.to_string())));
            }
            let name = g.decode().map_err(|e| corrupt(&e))?;
            let c = match name.as_ref() {
                "lt" => "<",
                "gt" => ">",
                "amp" => "&",
                "apos" => "'",
                "quot" => "\"",
                other => return Err(corrupt(&format!("the entity &{other}; is not XML's"))),
            };
            Cow::Borrowed(c)
        }
        _ => return Ok(None),
    }))
}
