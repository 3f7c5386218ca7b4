use super::*;
use crate::format::Collect;
use std::io::Write;

const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
const PKG: &str = "http://schemas.openxmlformats.org/package/2006/relationships";

/// A zip of `parts` (name, text).
fn zip_of(parts: &[(&str, String)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in parts {
        w.start_file(*name, opts).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An `.xlsx` with sheets (name, state, sheetData XML), shared strings, number formats
/// (`<numFmts>` XML and the numFmtId of styles 1, 2, …) and a date system.
#[derive(Default)]
struct Book<'a> {
    sheets: Vec<(&'a str, &'a str, String)>,
    strings: Vec<&'a str>,
    num_fmts: &'a str,
    xfs: Vec<u32>,
    date1904: bool,
}

impl Book<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut parts = vec![(
            "_rels/.rels",
            format!(
                r#"<Relationships xmlns="{PKG}"><Relationship Id="r1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
            ),
        )];
        let sheets: String = self
            .sheets
            .iter()
            .enumerate()
            .map(|(i, (name, state, _))| {
                let state = if state.is_empty() {
                    String::new()
                } else {
                    format!(r#" state="{state}""#)
                };
                format!(
                    r#"<sheet name="{name}" sheetId="{}"{state} r:id="rId{}"/>"#,
                    i + 1,
                    i + 1
                )
            })
            .collect();
        let pr = if self.date1904 {
            r#"<workbookPr date1904="1"/>"#
        } else {
            ""
        };
        parts.push((
            "xl/workbook.xml",
            format!(r#"<workbook xmlns="{MAIN}" xmlns:r="{REL}">{pr}<sheets>{sheets}</sheets></workbook>"#),
        ));
        let mut rels: String = (1..=self.sheets.len())
            .map(|i| {
                format!(r#"<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>"#)
            })
            .collect();
        rels += &format!(
            r#"<Relationship Id="rS" Type="{REL}/styles" Target="styles.xml"/><Relationship Id="rT" Type="{REL}/sharedStrings" Target="/xl/sharedStrings.xml"/>"#
        );
        parts.push((
            "xl/_rels/workbook.xml.rels",
            format!(r#"<Relationships xmlns="{PKG}">{rels}</Relationships>"#),
        ));
        let xfs: String = std::iter::once(0)
            .chain(self.xfs.iter().copied())
            .map(|id| format!(r#"<xf numFmtId="{id}"/>"#))
            .collect();
        parts.push((
            "xl/styles.xml",
            format!(
                r#"<styleSheet xmlns="{MAIN}"><numFmts>{}</numFmts><cellStyleXfs><xf numFmtId="14"/></cellStyleXfs><cellXfs>{xfs}</cellXfs></styleSheet>"#,
                self.num_fmts
            ),
        ));
        let sst: String = self
            .strings
            .iter()
            .map(|s| format!("<si>{s}</si>"))
            .collect();
        parts.push((
            "xl/sharedStrings.xml",
            format!(r#"<sst xmlns="{MAIN}">{sst}</sst>"#),
        ));
        let names: Vec<String> = (1..=self.sheets.len())
            .map(|i| format!("xl/worksheets/sheet{i}.xml"))
            .collect();
        for (i, (_, _, data)) in self.sheets.iter().enumerate() {
            parts.push((
                names[i].as_str(),
                format!(r#"<worksheet xmlns="{MAIN}"><sheetData>{data}</sheetData></worksheet>"#),
            ));
        }
        zip_of(&parts)
    }
}

fn read(bytes: &[u8], opt: &ExcelOptions) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    match parse(bytes, opt, &mut c) {
        Ok(n) => {
            assert_eq!(n as usize, c.rows.len());
            Ok(c)
        }
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

fn one_sheet(data: &str) -> Book<'_> {
    Book {
        sheets: vec![("Data", "", data.to_string())],
        ..Book::default()
    }
}

fn values(c: &Collect) -> Vec<Vec<Option<String>>> {
    c.rows.iter().map(|r| r.1.clone()).collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn numbers_keep_every_written_digit() {
    let book = one_sheet(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>a</t></is></c><c r="B1" t="inlineStr"><is><t>b</t></is></c><c r="C1" t="inlineStr"><is><t>c</t></is></c><c r="D1" t="inlineStr"><is><t>d</t></is></c></row>
           <row r="2"><c r="A2"><v>12345678901234567890</v></c><c r="B2"><v>0.1234567890123456789</v></c><c r="C2"><v>9007199254740993</v></c><c r="D2"><v>5.0</v></c></row>"#,
    );
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(c.cols, ["a", "b", "c", "d"]);
    assert_eq!(
        values(&c)[0],
        [
            s("12345678901234567890"),
            s("0.1234567890123456789"),
            s("9007199254740993"),
            s("5")
        ]
    );
}

#[test]
fn booleans_are_one_and_zero_and_anything_else_is_a_bad_value() {
    let book = one_sheet(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>ok</t></is></c></row>
           <row r="2"><c r="A2" t="b"><v>1</v></c></row>
           <row r="3"><c r="A3" t="b"><v>0</v></c></row>
           <row r="4"><c r="A4" t="b"><v>2</v></c></row>"#,
    );
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(values(&c), [[s("1")], [s("0")]]);
    assert_eq!(c.bad.len(), 1);
    assert_eq!((c.bad[0].0, c.bad[0].1.as_str()), (4, "ok"));
}

#[test]
fn dates_follow_the_date_system_and_never_invent_a_day() {
    let data = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>d</t></is></c></row>
        <row r="2"><c r="A2" s="1"><v>0</v></c></row>
        <row r="3"><c r="A3" s="1"><v>0.5</v></c></row>
        <row r="4"><c r="A4" s="1"><v>60</v></c></row>
        <row r="5"><c r="A5" s="2"><v>46331.999999995</v></c></row>
        <row r="6"><c r="A6" s="3"><v>0.75</v></c></row>
        <row r="7"><c r="A7" s="4"><v>1.25</v></c></row>"#;
    let mut book = one_sheet(data);
    book.num_fmts = r#"<numFmt numFmtId="164" formatCode="yyyy\-mm\-dd\ hh:mm:ss"/>"#;
    book.xfs = vec![14, 164, 21, 46];
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    // 1900 system: day 0 is a time; 60 is the day that never was.
    assert_eq!(
        values(&c),
        [
            [s("00:00:00")],
            [s("12:00:00")],
            [s("2026-11-06")],
            [s("18:00:00")],
            [s("1.25")]
        ]
    );
    assert_eq!(c.bad.len(), 1);
    assert!(c.bad[0].2.contains("1900-02-29"), "{:?}", c.bad);
    book.date1904 = true;
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(values(&c)[0], [s("1904-01-01")]);
    assert_eq!(values(&c)[1], [s("1904-01-01T12:00:00")]);
    assert_eq!(values(&c)[2], [s("1904-03-01")], "no phantom day in 1904");
}

#[test]
fn a_formula_without_a_saved_result_is_a_bad_value() {
    let book = one_sheet(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>f</t></is></c></row>
           <row r="2"><c r="A2"><f>SUM(B1:B9)</f></c></row>
           <row r="3"><c r="A3"><f>1+1</f><v>2</v></c></row>
           <row r="4"><c r="A4" t="str"><f>""</f><v></v></c><c r="B4"><v>1</v></c></row>"#,
    );
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(c.bad.len(), 1);
    assert_eq!(c.bad[0].0, 2);
    assert!(c.bad[0].2.contains("SUM(B1:B9)"), "{:?}", c.bad);
    assert_eq!(values(&c)[0], [s("2")]);
    assert_eq!(
        values(&c)[1],
        [None, s("1")],
        "an empty text result is empty"
    );
}

#[test]
fn the_first_visible_sheet_is_read_and_the_others_are_noted() {
    let data = |v: &str| {
        format!(
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>h</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>{v}</t></is></c></row>"#
        )
    };
    let book = Book {
        sheets: vec![
            ("Secret", "hidden", data("hidden")),
            ("Orders", "", data("visible")),
            ("Notes", "veryHidden", data("notes")),
        ],
        ..Book::default()
    };
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(values(&c), [[s("visible")]]);
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].contains("\"Secret\" (hidden)"), "{:?}", c.notes);
    let named = ExcelOptions {
        sheet: Some("secret".into()),
        ..ExcelOptions::default()
    };
    assert_eq!(
        values(&read(&book.bytes(), &named).unwrap()),
        [[s("hidden")]]
    );
    let only_hidden = Book {
        sheets: vec![("Secret", "hidden", data("hidden"))],
        ..Book::default()
    };
    let e = read(&only_hidden.bytes(), &ExcelOptions::default()).unwrap_err();
    assert_eq!(e.kind, Kind::XlsxNoSheet);
}

#[test]
fn shared_strings_read_as_written() {
    let mut book = one_sheet(
        r#"<row r="1"><c r="A1" t="s"><v>0</v></c></row><row r="2"><c r="A2" t="s"><v>1</v></c></row><row r="3"><c r="A3" t="s"><v>2</v></c></row>"#,
    );
    book.strings = vec![
        "<t>name</t>",
        r#"<r><rPr/><t xml:space="preserve">Tōkyō </t></r><r><t>line_x000D_two</t></r><rPh><t>トウキョウ</t></rPh>"#,
        "<t>a &amp; b&#x20AC;</t>",
    ];
    let c = read(&book.bytes(), &ExcelOptions::default()).unwrap();
    assert_eq!(values(&c), [[s("Tōkyō line\rtwo")], [s("a & b€")]]);
}

#[test]
fn cells_and_strings_over_max_line_bytes_are_refused() {
    let opt = ExcelOptions {
        max_cell: 100,
        ..ExcelOptions::default()
    };
    let long = "x".repeat(101);
    let mut book = one_sheet(r#"<row r="1"><c r="A1" t="s"><v>0</v></c></row>"#);
    book.strings = vec!["<t>ok</t>", &long];
    let shared = format!("<t>{long}</t>");
    book.strings[1] = &shared;
    assert_eq!(
        read(&book.bytes(), &opt).unwrap_err().kind,
        Kind::XlsxCellTooBig
    );
    let inline = one_sheet(&format!(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>h</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>{long}</t></is></c></row>"#
    ))
    .bytes();
    assert_eq!(read(&inline, &opt).unwrap_err().kind, Kind::XlsxCellTooBig);
    // A text node far longer than the limit is refused before it is held whole.
    let huge = one_sheet(&format!(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>{}</t></is></c></row>"#,
        "y".repeat(1 << 20)
    ))
    .bytes();
    assert_eq!(read(&huge, &opt).unwrap_err().kind, Kind::XlsxCellTooBig);
}

#[test]
fn a_small_workbook_that_expands_to_gigabytes_is_too_big() {
    // 140 MiB of the same rows compresses to well under a megabyte.
    let cell = r#"<c t="inlineStr"><is><t>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</t></is></c>"#;
    let row = format!("<row>{}</row>", cell.repeat(2000));
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in one_sheet("").bytes_parts_without_sheet() {
        w.start_file(name, opts).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
    w.write_all(format!(r#"<worksheet xmlns="{MAIN}"><sheetData>"#).as_bytes())
        .unwrap();
    let block = row.repeat(10);
    for _ in 0..(140 << 20) / block.len() {
        w.write_all(block.as_bytes()).unwrap();
    }
    let bytes = w.finish().unwrap().into_inner();
    assert!(bytes.len() < 4 << 20, "{}", bytes.len());
    let e = read(&bytes, &ExcelOptions::default()).unwrap_err();
    assert_eq!(e.kind, Kind::XlsxTooBig, "{e:?}");
}

impl Book<'_> {
    /// Every part but the first sheet's (for writing a sheet by hand).
    fn bytes_parts_without_sheet(&self) -> Vec<(String, String)> {
        let bytes = self.bytes();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        for i in 0..z.len() {
            let mut f = z.by_index(i).unwrap();
            if f.name() == "xl/worksheets/sheet1.xml" {
                continue;
            }
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            out.push((f.name().to_string(), text));
        }
        out
    }
}

const ODS_NS: &str = r#"xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0""#;

fn ods(body: &str) -> Vec<u8> {
    zip_of(&[
        (
            "mimetype",
            "application/vnd.oasis.opendocument.spreadsheet".into(),
        ),
        (
            "content.xml",
            format!(
                r#"<office:document-content {ODS_NS}><office:automatic-styles><style:style style:name="ta1" style:family="table"><style:table-properties table:display="true"/></style:style><style:style style:name="ta2" style:family="table"><style:table-properties table:display="false"/></style:style></office:automatic-styles><office:body><office:spreadsheet>{body}</office:spreadsheet></office:body></office:document-content>"#
            ),
        ),
    ])
}

#[test]
fn ods_values_are_read_as_written() {
    let body = r#"<table:table table:name="Hidden" table:style-name="ta2"><table:table-row><table:table-cell office:value-type="string"><text:p>no</text:p></table:table-cell></table:table-row></table:table>
      <table:table table:name="Data" table:style-name="ta1">
        <table:table-row><table:table-cell office:value-type="string"><text:p>n</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>t</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>b</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>s</text:p></table:table-cell></table:table-row>
        <table:table-row><table:table-cell office:value-type="float" office:value="12345678901234567890.5"><text:p>1.23E+19</text:p></table:table-cell><table:table-cell office:value-type="time" office:time-value="PT14H30M05S"/><table:table-cell office:value-type="boolean" office:boolean-value="true"/><table:table-cell office:value-type="string"><office:annotation><text:p>a comment</text:p></office:annotation><text:p>two<text:s text:c="2"/>spaces</text:p><text:p>next</text:p></table:table-cell></table:table-row>
        <table:table-row table:number-rows-repeated="3"><table:table-cell office:value-type="date" office:date-value="2026-11-05"/><table:table-cell table:number-columns-repeated="3"/></table:table-row>
        <table:table-row><table:table-cell table:formula="of:=[.A1]+1"/></table:table-row>
        <table:table-row table:number-rows-repeated="1048560"><table:table-cell table:number-columns-repeated="16384"/></table:table-row>
      </table:table>"#;
    let c = read(&ods(body), &ExcelOptions::default()).unwrap();
    assert_eq!(c.cols, ["n", "t", "b", "s"]);
    assert_eq!(
        values(&c)[0],
        [
            s("12345678901234567890.5"),
            s("14:30:05"),
            s("1"),
            s("two  spaces\nnext")
        ]
    );
    for r in &values(&c)[1..] {
        assert_eq!(r[0], s("2026-11-05"));
    }
    assert_eq!(c.rows[3].0, 5);
    assert_eq!(c.bad.len(), 1, "the formula with no saved result");
    assert_eq!(c.bad[0].0, 6);
    assert!(
        c.notes.iter().any(|n| n.contains("\"Hidden\" (hidden)")),
        "{:?}",
        c.notes
    );
}

#[test]
fn ods_repetitions_that_expand_to_gigabytes_are_refused() {
    let cell = format!(
        r#"<table:table-cell office:value-type="string" table:number-columns-repeated="16000"><text:p>{}</text:p></table:table-cell>"#,
        "z".repeat(900)
    );
    let body = format!(
        r#"<table:table table:name="S"><table:table-row table:number-rows-repeated="1000000">{cell}</table:table-row></table:table>"#
    );
    let e = read(&ods(&body), &ExcelOptions::default()).unwrap_err();
    assert!(
        matches!(e.kind, Kind::XlsxTooBig | Kind::XlsxCellTooBig),
        "{e:?}"
    );
}

#[test]
fn broken_sheets_are_refused() {
    let bad = |data: &str| read(&one_sheet(data).bytes(), &ExcelOptions::default()).unwrap_err();
    let h = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>a</t></is></c></row>"#;
    // Rows out of order, a cell given twice, a column past XFD, a number that is none.
    let e = bad(&format!(
        r#"{h}<row r="3"><c r="A3"><v>1</v></c></row><row r="2"><c r="A2"><v>2</v></c></row>"#
    ));
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = bad(&format!(
        r#"{h}<row r="2"><c r="A2"><v>1</v></c><c r="A2"><v>2</v></c></row>"#
    ));
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = bad(&format!(r#"{h}<row r="2"><c r="XFE2"><v>1</v></c></row>"#));
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = bad(&format!(r#"{h}<row r="2"><c r="A2"><v>1,5</v></c></row>"#));
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    assert_eq!(bad("").kind, Kind::Empty);
    assert_eq!(
        bad(r#"<row r="4"><c r="A4"><v>1</v></c></row>"#).kind,
        Kind::Empty
    );
}

#[test]
fn not_a_workbook_is_corrupt() {
    let e = read(
        &b"PK\x03\x04 not really a zip"[..],
        &ExcelOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, Kind::XlsxCorrupt);
    let e = read(
        &zip_of(&[("hello.txt", "hi".into())]),
        &ExcelOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, Kind::XlsxCorrupt);
}
