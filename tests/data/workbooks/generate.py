#!/usr/bin/env python3
"""Writes the hostile workbook cases of tests/data/workbooks/: each folder holds input.xlsx
or input.ods (raw parts, written the way Excel and LibreOffice write them), the dataset's
options (dataset.toml) and what ferry must make of it (expected.json). Run it again after
changing a case: the files are deterministic."""

import json
import os
import shutil
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG = "http://schemas.openxmlformats.org/package/2006/relationships"


def zip_parts(path, parts):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=(2026, 12, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))


def inline(ref, text):
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def header(*names):
    cols = "ABCDEFGH"
    return '<row r="1">' + "".join(inline(f"{cols[i]}1", n) for i, n in enumerate(names)) + "</row>"


def xlsx(path, sheets, strings=(), num_fmts="", xfs=(), date1904=False):
    """sheets: [(name, state, sheetData XML)]; xfs: numFmtIds of styles 1, 2, ..."""
    parts = [("[Content_Types].xml",
              '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
              '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
              '<Default Extension="xml" ContentType="application/xml"/></Types>'),
             ("_rels/.rels", f'<Relationships xmlns="{PKG}"><Relationship Id="r1" '
              f'Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>')]
    listed = "".join(
        f'<sheet name="{n}" sheetId="{i}"{f" state={chr(34)}{s}{chr(34)}" if s else ""} r:id="rId{i}"/>'
        for i, (n, s, _) in enumerate(sheets, start=1))
    pr = '<workbookPr date1904="1"/>' if date1904 else ""
    parts.append(("xl/workbook.xml",
                  f'<workbook xmlns="{MAIN}" xmlns:r="{REL}">{pr}<sheets>{listed}</sheets></workbook>'))
    rels = "".join(f'<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
                   for i in range(1, len(sheets) + 1))
    rels += (f'<Relationship Id="rS" Type="{REL}/styles" Target="styles.xml"/>'
             f'<Relationship Id="rT" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/>')
    parts.append(("xl/_rels/workbook.xml.rels", f'<Relationships xmlns="{PKG}">{rels}</Relationships>'))
    cell_xfs = "".join(f'<xf numFmtId="{i}" applyNumberFormat="1"/>' for i in (0, *xfs))
    parts.append(("xl/styles.xml", f'<styleSheet xmlns="{MAIN}"><numFmts>{num_fmts}</numFmts>'
                  f'<cellXfs>{cell_xfs}</cellXfs></styleSheet>'))
    sst = "".join(f"<si>{s}</si>" for s in strings)
    parts.append(("xl/sharedStrings.xml", f'<sst xmlns="{MAIN}">{sst}</sst>'))
    for i, (_, _, data) in enumerate(sheets, start=1):
        parts.append((f"xl/worksheets/sheet{i}.xml",
                      f'<worksheet xmlns="{MAIN}"><sheetData>{data}</sheetData></worksheet>'))
    zip_parts(path, parts)


ODS_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
          'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2"')


def ods(path, tables):
    styles = ('<office:automatic-styles>'
              '<style:style style:name="ta1" style:family="table"><style:table-properties table:display="true"/></style:style>'
              '<style:style style:name="ta2" style:family="table"><style:table-properties table:display="false"/></style:style>'
              '</office:automatic-styles>')
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODS_NS}>{styles}'
               f'<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body></office:document-content>')
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("mimetype", date_time=(2026, 12, 1, 0, 0, 0))
        z.writestr(info, "application/vnd.oasis.opendocument.spreadsheet")
        info = zipfile.ZipInfo("content.xml", date_time=(2026, 12, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, content.encode("utf-8"))


def s_cell(text, extra=""):
    return f'<table:table-cell office:value-type="string"{extra}><text:p>{text}</text:p></table:table-cell>'


def case(name, expected, toml=None, ext="xlsx"):
    d = os.path.join(HERE, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2, ensure_ascii=False)
        f.write("\n")
    if toml:
        with open(os.path.join(d, "dataset.toml"), "w", encoding="utf-8") as f:
            f.write(toml + "\n")
    return os.path.join(d, f"input.{ext}")


def main():
    # Numbers beyond a float's 53 bits, 20 digits, 19 decimals: every digit kept.
    p = case("xlsx_numbers_keep_every_digit", {"columns": ["big", "odd", "fraction", "float"], "rows": [
        [2, "12345678901234567890", "9007199254740993", "0.1234567890123456789", "5"]]})
    xlsx(p, [("Data", "", header("big", "odd", "fraction", "float") +
              '<row r="2"><c r="A2"><v>12345678901234567890</v></c><c r="B2"><v>9007199254740993</v></c>'
              '<c r="C2"><v>0.1234567890123456789</v></c><c r="D2"><v>5.0</v></c></row>')])

    # The same digits into a typed decimal column and a typed int column.
    p = case("xlsx_typed_decimal_gets_the_written_digits",
             {"columns": ["amount", "id"], "rows": [[2, "0.1234567890123456789", "9007199254740993"]]},
             'columns = [{ name = "amount", type = "decimal" }, { name = "id", type = "int" }]')
    xlsx(p, [("Data", "", header("amount", "id") +
              '<row r="2"><c r="A2"><v>0.1234567890123456789</v></c><c r="B2"><v>9007199254740993</v></c></row>')])

    # Booleans are 1 and 0; anything else is a bad value (one bad record allowed here).
    p = case("xlsx_booleans_one_and_zero", {"columns": ["ok"], "rows": [[2, "1"], [3, "0"]], "rejected": 1},
             'max_bad_records = 1')
    xlsx(p, [("Data", "", header("ok") + '<row r="2"><c r="A2" t="b"><v>1</v></c></row>'
              '<row r="3"><c r="A3" t="b"><v>0</v></c></row><row r="4"><c r="A4" t="b"><v>TRUE</v></c></row>')])

    # The 1904 date system: day 0 is 1904-01-01, a date, and there is no phantom leap day.
    p = case("xlsx_1904_dates", {"columns": ["day"], "rows": [
        [2, "1904-01-01"], [3, "1904-01-01T12:00:00"], [4, "1904-03-01"], [5, "2026-11-05"]]})
    xlsx(p, [("Data", "", header("day") + "".join(
        f'<row r="{r}"><c r="A{r}" s="1"><v>{v}</v></c></row>' for r, v in [(2, "0"), (3, "0.5"), (4, "60"), (5, "44869")]))],
        xfs=(14,), date1904=True)

    # Excel's 1900-02-29 never existed: a bad value, never a day made up.
    p = case("xlsx_phantom_leap_day", {"error_kind": "record.invalid", "line": 3})
    xlsx(p, [("Data", "", header("day") + '<row r="2"><c r="A2" s="1"><v>59</v></c></row>'
              '<row r="3"><c r="A3" s="1"><v>60</v></c></row><row r="4"><c r="A4" s="1"><v>61</v></c></row>')],
         xfs=(14,))

    # 23:59:59.9996 is the next day's midnight; a custom date-time format; a time of day.
    p = case("xlsx_times_round_to_the_next_day", {"columns": ["at", "clock"], "rows": [
        [2, "2026-11-06", "18:00:00"], [3, "2026-11-05T00:00:01.500", "00:00:00"]]})
    xlsx(p, [("Data", "", header("at", "clock") +
              '<row r="2"><c r="A2" s="1"><v>46331.999999995</v></c><c r="B2" s="2"><v>0.75</v></c></row>'
              '<row r="3"><c r="A3" s="1"><v>46331.0000173611</v></c><c r="B3" s="2"><v>0.9999999999</v></c></row>')],
         num_fmts='<numFmt numFmtId="164" formatCode="yyyy\\-mm\\-dd\\ hh:mm:ss"/>', xfs=(164, 21))

    # A formula saved without its result: no value, never an empty cell.
    p = case("xlsx_formula_without_saved_result", {"error_kind": "record.invalid", "line": 2})
    xlsx(p, [("Data", "", header("total", "n") +
              '<row r="2"><c r="A2"><f>SUM(B2:B9)</f></c><c r="B2"><v>1</v></c></row>')])

    # The first sheet is hidden: the first visible one is read, and the others are noted.
    p = case("xlsx_hidden_first_sheet", {"columns": ["v"], "rows": [[2, "visible"]],
                                         "warnings": ['other sheets were not: "Lookup" (hidden), "Macro" (hidden)']})
    xlsx(p, [("Lookup", "hidden", header("v") + '<row r="2">' + inline("A2", "hidden") + "</row>"),
             ("Orders", "", header("v") + '<row r="2">' + inline("A2", "visible") + "</row>"),
             ("Macro", "veryHidden", header("v") + '<row r="2">' + inline("A2", "macro") + "</row>")])

    # A hidden sheet is read when the dataset names it.
    p = case("xlsx_named_hidden_sheet", {"columns": ["v"], "rows": [[2, "hidden"]]}, 'sheet = "Lookup"')
    xlsx(p, [("Orders", "", header("v") + '<row r="2">' + inline("A2", "visible") + "</row>"),
             ("Lookup", "hidden", header("v") + '<row r="2">' + inline("A2", "hidden") + "</row>")])

    # Shared strings as written: rich runs joined, phonetic runs left out, _xHHHH_ decoded.
    p = case("xlsx_shared_strings_as_written", {"columns": ["name"], "rows": [[2, "Tōkyō \rline"], [3, "a & b"]]})
    xlsx(p, [("Data", "", '<row r="1"><c r="A1" t="s"><v>0</v></c></row><row r="2"><c r="A2" t="s"><v>1</v></c></row>'
              '<row r="3"><c r="A3" t="s"><v>2</v></c></row>')],
         strings=["<t>name</t>",
                  '<r><t xml:space="preserve">Tōkyō </t></r><r><t>_x000D_line</t></r><rPh sb="0" eb="2"><t>トウキョウ</t></rPh>',
                  "<t>a &amp; b</t>"])

    # A shared string longer than max_line_bytes.
    p = case("xlsx_shared_string_too_big", {"error_kind": "xlsx.cell_too_big"}, 'max_line_bytes = "1KiB"')
    xlsx(p, [("Data", "", '<row r="1"><c r="A1" t="s"><v>0</v></c></row><row r="2"><c r="A2" t="s"><v>1</v></c></row>')],
         strings=["<t>h</t>", "<t>" + "x" * 5000 + "</t>"])

    # OpenDocument: digits of office:value, times of day, booleans, the first visible table,
    # values in repeated rows and cells, and LibreOffice's million empty rows at the end.
    p = case("ods_values_and_repetitions", {"columns": ["n", "t", "b"], "rows": [
        [2, "12345678901234567890.5", "14:30:05", "1"],
        [3, "7", None, "0"], [4, "7", None, "0"]],
        "warnings": ['"Hidden" (hidden)']}, ext="ods")
    ods(p, '<table:table table:name="Hidden" table:style-name="ta2"><table:table-row>'
        + s_cell("n") + '</table:table-row></table:table>'
        '<table:table table:name="Data" table:style-name="ta1">'
        '<table:table-row>' + s_cell("n") + s_cell("t") + s_cell("b") + '</table:table-row>'
        '<table:table-row><table:table-cell office:value-type="float" office:value="12345678901234567890.5"><text:p>1.2E+19</text:p></table:table-cell>'
        '<table:table-cell office:value-type="time" office:time-value="PT14H30M05S"><text:p>14:30</text:p></table:table-cell>'
        '<table:table-cell office:value-type="boolean" office:boolean-value="true"><text:p>TRUE</text:p></table:table-cell></table:table-row>'
        '<table:table-row table:number-rows-repeated="2"><table:table-cell office:value-type="float" office:value="7"/>'
        '<table:table-cell/><table:table-cell office:value-type="boolean" office:boolean-value="false"/>'
        '<table:table-cell table:number-columns-repeated="16381"/></table:table-row>'
        '<table:table-row table:number-rows-repeated="1048572"><table:table-cell table:number-columns-repeated="16384"/></table:table-row>'
        '</table:table>')

    # OpenDocument formula without a saved result.
    p = case("ods_formula_without_saved_result", {"error_kind": "record.invalid", "line": 2}, ext="ods")
    ods(p, '<table:table table:name="Data"><table:table-row>' + s_cell("n") + '</table:table-row>'
        '<table:table-row><table:table-cell table:formula="of:=[.A1]*2"/></table:table-row></table:table>')


if __name__ == "__main__":
    main()
