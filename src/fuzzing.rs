//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature; not an
//! API). Each takes arbitrary bytes, runs one parser the way a worker does, and checks what
//! the parser promises the stages: columns announced before rows, every value span inside the
//! row's text and on character boundaries. A content error is a normal outcome; a panic, a
//! hang or a broken promise is a bug.

use crate::format::{self, fixed, json, xlsx, xml, Encoding, FormatOptions, RowOut, Stop};
use std::io::Read;

/// Checks the parser's promises as rows arrive.
#[derive(Default)]
struct Check {
    columns: usize,
    announced: bool,
    rows: u64,
    /// The most text a row may hold (a workbook's `max_cell`), when the parser promises one.
    max_row: Option<usize>,
}

impl RowOut for Check {
    fn columns(&mut self, names: &[String]) -> Result<(), Stop> {
        assert!(names.len() >= self.columns, "the column list never shrinks");
        self.columns = names.len();
        self.announced = true;
        Ok(())
    }

    fn row(
        &mut self,
        _line: u64,
        text: &str,
        spans: &[Option<(usize, usize)>],
    ) -> Result<(), Stop> {
        assert!(self.announced, "columns come before the first row");
        assert!(
            spans.len() <= self.columns,
            "a row has no more values than columns"
        );
        if let Some(max) = self.max_row {
            assert!(
                text.len() <= max,
                "a row of {} bytes past {max}",
                text.len()
            );
        }
        for &(a, b) in spans.iter().flatten() {
            assert!(
                a <= b && b <= text.len(),
                "span {a}..{b} inside {} bytes",
                text.len()
            );
            assert!(text.is_char_boundary(a) && text.is_char_boundary(b));
        }
        self.rows += 1;
        Ok(())
    }

    fn bad_row(&mut self, _: u64, field: &str, _: Option<&str>, why: String) -> Result<(), Stop> {
        assert!(self.announced, "columns come before the first bad row");
        assert!(
            !field.is_empty() && !why.is_empty(),
            "a bad row says where and why"
        );
        Ok(())
    }
}

/// Opens `data` as a file called `name` and parses it; returns the record count or the error.
fn run(data: &[u8], name: &str, opts: &FormatOptions, pointer: &[String]) {
    let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(data.to_vec()));
    let mut check = Check {
        max_row: (opts.format == Some(format::Format::Excel)).then_some(opts.max_record),
        ..Check::default()
    };
    let result = format::open(reader, name, opts, pointer, true).map_err(Stop::Reject);
    if let Ok(opened) = result {
        if let Ok(n) = opened.parse(&mut check) {
            assert_eq!(n, check.rows, "the count returned is the rows handed on");
        }
    }
}

/// The first byte picks options, the rest is the file.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

pub fn csv(data: &[u8]) {
    let (o, body) = split(data);
    let opts = FormatOptions {
        delimiter: [None, Some(b','), Some(b';'), Some(b'\t')][usize::from(o & 3)],
        strict_quotes: o & 4 == 0,
        header: o & 8 == 0,
        names: if o & 8 == 0 {
            Vec::new()
        } else {
            vec!["a".into(), "b".into()]
        },
        max_record: if o & 16 == 0 { 1 << 20 } else { 64 },
        allow_nul: o & 32 != 0,
        ..Default::default()
    };
    run(body, "f.csv", &opts, &[]);
}

fn json_with(data: &[u8], records: json::Records) {
    let (o, body) = split(data);
    let opts = FormatOptions {
        json_records: records,
        max_record: if o & 1 == 0 { 1 << 20 } else { 64 },
        allow_nul: o & 2 != 0,
        ..Default::default()
    };
    let name = if o & 4 == 0 { "f.json" } else { "f.ndjson" };
    let pointer: Vec<String> = if o & 8 == 0 {
        Vec::new()
    } else {
        vec!["data".into()]
    };
    run(body, name, &opts, &pointer);
}

pub fn json(data: &[u8]) {
    json_with(data, json::Records::Auto);
}

pub fn compact_json(data: &[u8]) {
    json_with(data, json::Records::Arrays);
}

pub fn xml(data: &[u8]) {
    let (o, body) = split(data);
    let opts = FormatOptions {
        xml: xml::XmlOptions {
            record_path: match o & 3 {
                0 => None,
                1 => Some(vec!["*".into(), "*".into(), "*".into()]),
                2 => Some(vec!["r".into(), "o".into()]),
                _ => Some(vec!["*".into()]),
            },
            nested_as_text: o & 4 == 0,
            max_record: 0,
        },
        max_record: if o & 8 == 0 { 1 << 20 } else { 128 },
        ..Default::default()
    };
    run(body, "f.xml", &opts, &[]);
}

pub fn fixed(data: &[u8]) {
    let (o, body) = split(data);
    let (w, body) = split(body);
    let widths = [
        1 + usize::from(w & 7),
        1 + usize::from(w >> 3 & 7),
        1 + usize::from(w >> 6),
    ];
    let mut start = usize::from(o >> 6);
    let fields: Vec<fixed::Field> = widths
        .iter()
        .enumerate()
        .map(|(i, &width)| {
            let f = fixed::Field {
                name: format!("c{i}"),
                start,
                width,
            };
            start += width;
            f
        })
        .collect();
    let end = fixed::Layout::end(&fields);
    let layout = fixed::Layout {
        fields,
        bytes: o & 1 != 0,
        line_length: end + usize::from(o & 2),
        pad: o & 4 != 0,
        trim: o & 8 != 0,
        skip_header: usize::from(o >> 4 & 1),
        skip_trailer: usize::from(o >> 5 & 1),
        trailer_prefix: (o >> 6 & 1 == 1 && o >> 5 & 1 == 1).then(|| "T".to_string()),
        trailer_count: (o >> 5 & 1 == 1).then_some((0, 3)),
        max_record: 256,
    };
    let opts = FormatOptions {
        format: Some(format::Format::Fixed),
        fixed: Some(layout),
        ..Default::default()
    };
    run(body, "f.txt", &opts, &[]);
}

/// Workbook options from the first byte: the sheet, the header row, a small cell bound.
fn workbook_options(o: u8) -> FormatOptions {
    FormatOptions {
        format: Some(format::Format::Excel),
        max_record: if o & 8 == 0 { 1 << 20 } else { 64 },
        excel: xlsx::ExcelOptions {
            sheet: (o & 1 != 0).then(|| "Ledger".to_string()),
            header_row: 1 + u32::from(o >> 1 & 3),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn xlsx(data: &[u8]) {
    let (o, body) = split(data);
    run(body, "f.xlsx", &workbook_options(o), &[]);
}

/// A zip of `parts`, stored (not compressed), so the fuzzer's bytes reach the XML readers as
/// they are.
fn stored_zip(parts: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in parts {
        w.start_file(*name, opts).expect("in memory");
        w.write_all(bytes).expect("in memory");
    }
    w.finish().expect("in memory").into_inner()
}

/// The parts of an `.xlsx` from the fuzzer's bytes, split at NUL bytes: the sheet, the shared
/// strings, the styles and the workbook (defaults where missing).
pub fn ooxml(data: &[u8]) {
    const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let (o, body) = split(data);
    let mut given = body.split(|&b| b == 0);
    let mut next = |default: String| {
        given
            .next()
            .map_or_else(|| default.into_bytes(), <[u8]>::to_vec)
    };
    let sheet = next(format!(
        r#"<worksheet xmlns="{MAIN}"><sheetData/></worksheet>"#
    ));
    let strings = next(format!(r#"<sst xmlns="{MAIN}"/>"#));
    let styles = next(format!(r#"<styleSheet xmlns="{MAIN}"/>"#));
    let workbook = next(format!(
        r#"<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets><sheet name="Ledger" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    ));
    let rels = format!(
        r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rS" Type="{REL}/styles" Target="styles.xml"/><Relationship Id="rT" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#
    );
    let zip = stored_zip(&[
        ("xl/workbook.xml", &workbook),
        ("xl/_rels/workbook.xml.rels", rels.as_bytes()),
        ("xl/styles.xml", &styles),
        ("xl/sharedStrings.xml", &strings),
        ("xl/worksheets/sheet1.xml", &sheet),
    ]);
    run(&zip, "f.xlsx", &workbook_options(o), &[]);
}

/// An `.ods` whose `content.xml` is the fuzzer's bytes.
pub fn ods(data: &[u8]) {
    let (o, body) = split(data);
    let zip = stored_zip(&[
        (
            "mimetype",
            b"application/vnd.oasis.opendocument.spreadsheet",
        ),
        ("content.xml", body),
    ]);
    run(&zip, "f.ods", &workbook_options(o), &[]);
}

/// Text decoding: gzip (by name or magic), byte-order marks, declared encodings, NUL checks.
pub fn text(data: &[u8]) {
    let (o, body) = split(data);
    let encoding = [
        None,
        Encoding::for_label("latin1").ok(),
        Some(Encoding::whatwg(encoding_rs::UTF_16LE)),
        Some(Encoding::whatwg(encoding_rs::SHIFT_JIS)),
    ][usize::from(o & 3)];
    let opts = FormatOptions {
        encoding,
        allow_nul: o & 4 != 0,
        ..Default::default()
    };
    let name = if o & 8 == 0 { "f.csv.gz" } else { "f.csv" };
    run(body, name, &opts, &[]);
}

/// The TOML config loader, datasets and columns included.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_text(text);
    }
}

/// Archives: the bytes as a zip, tar or tar.gz (the first byte picks), unpacked within small
/// bounds. Every member handed over is a plain relative path, written inside the unpack folder,
/// exactly as long as its hash says, and all of them together within the bound; anything else
/// is a reject with a reason.
pub fn archive(data: &[u8]) {
    use crate::container::Wrap;
    let (o, body) = split(data);
    let wrap = [Wrap::Zip, Wrap::Tar, Wrap::TarGz][usize::from(o % 3)];
    unpack_checked(wrap, body);
}

/// OpenPGP files as ferry reads them (no keys: encrypted ones stop at `pgp.no_key`; literal,
/// compressed and signed messages are read whole) while a reader follows the plaintext: the
/// reader gets exactly the bytes whose hash the end gives, and never more than the bound.
pub fn pgp(data: &[u8]) {
    use crate::container::{decrypt_following, Follow, Growing};
    use std::io::Read;
    let (dir, file) = scratch_input(data);
    let u = crate::config::Unpack {
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let out = dir.join("out");
    let growing = std::sync::Arc::new(Growing::default());
    std::thread::scope(|scope| {
        let t = scope.spawn(|| decrypt_following(&file, &u, &out, &growing));
        growing.wait_for(1);
        let mut read = Vec::new();
        let followed = std::fs::File::open(out.join("1")).map(|f| {
            let mut r = Follow {
                file: f,
                pos: 0,
                growing: growing.clone(),
            };
            r.read_to_end(&mut read)
        });
        let end = t.join().unwrap();
        if let (Ok(_), Ok(Ok(_))) = (&end, &followed) {
            let (hash, len) = growing.end().unwrap();
            assert_eq!(read.len() as u64, len);
            assert_eq!(crate::hash::FileHash::of_bytes(&read).hex(), hash.hex());
            assert!(len <= u.max_bytes, "plaintext past the bound");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn unpack_checked(wrap: crate::container::Wrap, body: &[u8]) {
    use crate::container::{unpack, Flow};
    use std::path::Component;
    let (dir, file) = scratch_input(body);
    let u = crate::config::Unpack {
        max_bytes: 1 << 20,
        max_members: 64,
        ..Default::default()
    };
    let out = dir.join("out");
    let mut total = 0u64;
    let _ = unpack(wrap, &file, &u, &out, &mut |m| {
        assert!(
            m.spill.starts_with(&out),
            "a member written outside its folder"
        );
        assert!(
            m.path
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "member path {:?}",
            m.path
        );
        let bytes = std::fs::read(&m.spill).unwrap();
        assert_eq!(bytes.len() as u64, m.len);
        assert_eq!(crate::hash::FileHash::of_bytes(&bytes).hex(), m.hash.hex());
        total += m.len;
        assert!(total <= u.max_bytes, "members past the bound");
        Flow::Next
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder in the temp folder holding `data` as a file, and that file opened (the
/// caller removes the folder).
fn scratch_input(data: &[u8]) -> (std::path::PathBuf, std::fs::File) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input");
    std::fs::write(&input, data).unwrap();
    let file = std::fs::File::open(&input).unwrap();
    (dir, file)
}
