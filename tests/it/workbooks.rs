//! Workbooks that expand: small files whose parts decompress to gigabytes are set aside as
//! `xlsx.too_big` with memory flat, never an abort and never a poison loop. (The values a
//! workbook holds are the data-driven table `tests/data/workbooks`.)

use crate::harness::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Writes zip bombs shaped as workbooks into `dir` with Python's zipfile, streaming.
fn write_bombs(dir: &Path) {
    const SCRIPT: &str = r#"
import sys, zipfile
d = sys.argv[1]
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
def book(path, big_part, head, piece, tail, total):
    parts = {
      "_rels/.rels": f'<Relationships xmlns="{PKG}"><Relationship Id="r1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
      "xl/workbook.xml": f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
      "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rT" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
      "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{MAIN}"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row></sheetData></worksheet>',
      "xl/sharedStrings.xml": f'<sst xmlns="{MAIN}"><si><t>h</t></si></sst>',
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, text in parts.items():
            if name != big_part:
                z.writestr(name, text)
        with z.open(big_part, "w", force_zip64=True) as f:
            f.write(head.encode())
            block = (piece * (1 << 20 // len(piece) + 1)).encode()
            for _ in range(total // len(block)):
                f.write(block)
            f.write(tail.encode())
# Just past what ferry reads from each part (100 MiB of shared strings, 128 MiB of sheet):
# a bigger bomb is refused at the same point.
MiB = 1 << 20
book(f"{d}/strings.xlsx", "xl/sharedStrings.xml", f'<sst xmlns="{MAIN}">', "<si><t>aaaaaaaaaaaaaaaaaaaaaaaa</t></si>", "</sst>", 120 * MiB)
book(f"{d}/sheet.xlsx", "xl/worksheets/sheet1.xml", f'<worksheet xmlns="{MAIN}"><sheetData>',
     '<row><c t="inlineStr"><is><t>b</t></is></c>' + '<c s="0"/>' * 300 + '</row>', "</sheetData></worksheet>", 150 * MiB)
ODS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
       'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
       'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')
cell = '<table:table-cell office:value-type="string" table:number-columns-repeated="16000"><text:p>' + "z" * 500 + '</text:p></table:table-cell>'
content = (f'<office:document-content {ODS}><office:body><office:spreadsheet><table:table table:name="S">'
           f'<table:table-row><table:table-cell office:value-type="string"><text:p>h</text:p></table:table-cell></table:table-row>'
           + ''.join(f'<table:table-row table:number-rows-repeated="1000000">{cell}</table:table-row>' for _ in range(3))
           + '</table:table></office:spreadsheet></office:body></office:document-content>')
with zipfile.ZipFile(f"{d}/repeated.ods", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
    z.writestr("content.xml", content)
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir)
        .status()
        .expect("python3 runs");
    assert!(st.success());
}

#[test]
fn workbooks_that_expand_to_gigabytes_are_set_aside_with_memory_flat() {
    let s = Spool::new();
    let made = s.scratch("bombs");
    write_bombs(&made);
    for name in ["strings.xlsx", "sheet.xlsx", "repeated.ods"] {
        let size = fs::metadata(made.join(name)).unwrap().len();
        assert!(
            size < 8 << 20,
            "{name} is {size} bytes: small, as a bomb is"
        );
        s.drop_file(
            &format!("books/{name}"),
            &fs::read(made.join(name)).unwrap(),
        );
    }
    let mut cmd = s.cmd();
    cmd.arg("run");
    let (code, peak_mib) = run_measuring_rss(cmd);
    assert_eq!(code, Some(3));
    assert!(peak_mib < 200.0, "peak RSS {peak_mib:.0} MiB");
    for f in s.files() {
        assert_eq!(f["state"], "quarantined", "{f}");
        assert!(
            matches!(
                f["error_kind"].as_str(),
                Some("xlsx.too_big" | "xlsx.cell_too_big")
            ),
            "{f}"
        );
    }
    assert_eq!(s.files().len(), 3);
    // Nothing is left to be tried again: a second run has nothing to do.
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.files().len(), 3);
}
