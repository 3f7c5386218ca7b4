use super::*;
use crate::format::Collect;

fn run_with(text: &str, opt: &XmlOptions) -> Result<Collect, Reject> {
    let mut c = Collect::default();
    match parse(text.as_bytes(), opt, &mut c) {
        Ok(n) => {
            assert_eq!(n as usize, c.rows.len());
            Ok(c)
        }
        Err(Stop::Reject(r)) => Err(r),
        Err(Stop::Cancelled) => unreachable!(),
    }
}

fn run(text: &str) -> Result<Collect, Reject> {
    run_with(text, &XmlOptions::default())
}

/// Column → value of record `i`.
fn record(c: &Collect, i: usize) -> Vec<(String, Option<String>)> {
    c.cols
        .iter()
        .cloned()
        .zip(c.rows[i].1.iter().cloned().chain(std::iter::repeat(None)))
        .filter(|(_, v)| v.is_some())
        .collect()
}

fn s(k: &str, v: &str) -> (String, Option<String>) {
    (k.to_string(), Some(v.to_string()))
}

#[test]
fn children_and_attributes_become_columns() {
    let c = run(r#"<?xml version="1.0" encoding="UTF-8"?>
<orders xmlns="urn:x" xmlns:p="urn:p">
  <order id="1" p:region="EU">
    <sku>A&amp;B &#x263A;</sku>
    <qty>2</qty>
    <price currency="EUR">12.50</price>
    <note><![CDATA[<b>fragile</b>]]></note>
    <empty/>
  </order>
  <!-- a comment -->
  <p:order id="2"><sku> spaced </sku><extra>x</extra></p:order>
</orders>"#)
    .unwrap();
    assert_eq!(
        record(&c, 0),
        [
            s("@id", "1"),
            s("@region", "EU"),
            s("sku", "A&B ☺"),
            s("qty", "2"),
            s("price@currency", "EUR"),
            s("price", "12.50"),
            s("note", "<b>fragile</b>"),
        ]
    );
    assert_eq!(
        record(&c, 1),
        [s("@id", "2"), s("sku", " spaced "), s("extra", "x")]
    );
    assert_eq!(c.rows[0].0, 3);
    assert_eq!(c.rows[1].0, 11);
}

#[test]
fn nested_children_keep_their_xml_or_are_refused_when_typed() {
    let text = "<r><o><id>1</id><addr kind=\"home\"><city>Köln</city><zip/><!--x--></addr></o></r>";
    let c = run(text).unwrap();
    assert_eq!(
        record(&c, 0),
        [
            s("id", "1"),
            s("addr@kind", "home"),
            s("addr", "<city>Köln</city><zip/><!--x-->")
        ]
    );
    let typed = XmlOptions {
        nested_as_text: false,
        ..Default::default()
    };
    let e = run_with(text, &typed).unwrap_err();
    assert_eq!(e.kind, Kind::XmlNestedElement);
    assert_eq!(e.field.as_deref(), Some("addr"));
}

#[test]
fn record_path_picks_deeper_records_by_local_or_prefixed_name() {
    let text = "<feed><meta><n>1</n></meta><items><a:item x='1'/><b:item x='2'/></items></feed>";
    let opt = |p: &str| XmlOptions {
        record_path: Some(path_segments(p).unwrap()),
        ..Default::default()
    };
    let c = run_with(text, &opt("/feed/items/item")).unwrap();
    assert_eq!(c.rows.len(), 2);
    let c = run_with(text, &opt("/feed/items/b:item")).unwrap();
    assert_eq!(record(&c, 0), [s("@x", "2")]);
    let c = run_with(text, &opt("/*/items/*")).unwrap();
    assert_eq!(c.rows.len(), 2);
    let e = run_with(text, &opt("/orders/order")).unwrap_err();
    assert_eq!(e.kind, Kind::XmlNoRecords);
    let e = run_with(text, &opt("/feed/items/order")).unwrap_err();
    assert_eq!(e.kind, Kind::XmlNoRecords);
    assert!(path_segments("feed/items").is_err());
    assert!(path_segments("/feed//items").is_err());
}

#[test]
fn broken_files_are_syntax_errors_with_an_offset() {
    for bad in [
        "<r><o><a>1</b></o></r>",
        "<r><o><a>1</a></o>",
        "<r><o a='1' a='2'/></r>",
        "<r><o/></r><r2/>",
        "<r><o/></r>tail",
        "<r><o><a>1</a></o></r",
        "<r><o x=1/></r>",
    ] {
        let e = run(bad).unwrap_err();
        assert_eq!(e.kind, Kind::XmlSyntax, "{bad}: {e}");
    }
    let e = run("<r><o><a>1</b></o></r>").unwrap_err();
    assert!(e.offset.is_some());
    assert_eq!(run("   ").unwrap_err().kind, Kind::Empty);
    assert_eq!(run("<r/>").unwrap_err().kind, Kind::XmlNoRecords);
    assert_eq!(run("<r>\n</r>").unwrap_err().kind, Kind::XmlNoRecords);
}

#[test]
fn entities_beyond_the_predefined_are_refused() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
]>
<lolz><r><a>&lol2;</a></r></lolz>"#;
    assert_eq!(run(laughs).unwrap_err().kind, Kind::XmlEntity);
    let external = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><o>&x;</o></r>"#;
    assert_eq!(run(external).unwrap_err().kind, Kind::XmlEntity);
    assert_eq!(run("<r><o>&x;</o></r>").unwrap_err().kind, Kind::XmlEntity);
    assert_eq!(
        run("<r><o a='&x;'/></r>").unwrap_err().kind,
        Kind::XmlEntity
    );
    // A DOCTYPE that declares nothing is passed over (and never fetched).
    let c = run(r#"<!DOCTYPE r SYSTEM "http://example.com/r.dtd"><r><o>1</o></r>"#).unwrap();
    assert_eq!(c.rows.len(), 1);
}

#[test]
fn a_child_named_twice_is_refused() {
    let e = run("<r><o><a>1</a><a>2</a></o></r>").unwrap_err();
    assert_eq!(e.kind, Kind::XmlRepeatedElement);
    let e = run("<r><o a='1'><x/><x/></o></r>").unwrap_err();
    assert_eq!(e.kind, Kind::XmlRepeatedElement);
}

#[test]
fn records_and_depth_are_bounded() {
    let opt = XmlOptions {
        max_record: 1024,
        ..Default::default()
    };
    let big = format!("<r><o><a>{}</a></o></r>", "x".repeat(10_000));
    assert_eq!(
        run_with(&big, &opt).unwrap_err().kind,
        Kind::XmlRecordTooLong
    );
    let many = format!("<r>{}</r>", "<o><a>1</a></o>".repeat(1000));
    assert_eq!(run_with(&many, &opt).unwrap().rows.len(), 1000);
    let deep = format!("<r>{}", "<a>".repeat(MAX_DEPTH + 5));
    assert_eq!(run(&deep).unwrap_err().kind, Kind::XmlSyntax);
}

#[test]
fn own_text_of_a_record_is_a_column_named_after_it() {
    let c = run("<list><item>a</item><item>b</item></list>").unwrap();
    assert_eq!(c.cols, ["item"]);
    assert_eq!(record(&c, 1), [s("item", "b")]);
}

#[test]
fn elements_off_the_record_path_and_stray_text_are_noted_never_dropped_silently() {
    let opt = XmlOptions {
        record_path: Some(vec!["orders".into(), "order".into()]),
        ..XmlOptions::default()
    };
    // Another case, another depth, another name, text between records, mixed content.
    let text = "<orders>\n<Order><id>1</id></Order>\n<batch><order><id>2</id></order></batch>\n\
                stray words\n<order>\n  <id>3</id>\n</order>\n<order>note <id>4</id></order>\n</orders>";
    let c = run_with(text, &opt).unwrap();
    assert_eq!(c.rows.len(), 2);
    assert_eq!(c.notes.len(), 3, "{:?}", c.notes);
    assert!(
        c.notes[0].starts_with("2 elements off record_path /orders/order"),
        "{:?}",
        c.notes
    );
    assert!(c.notes[0].contains("<Order> on line 2"), "{:?}", c.notes);
    assert!(
        c.notes[1].contains("1 time (first on line 4: \"stray words\")"),
        "{:?}",
        c.notes
    );
    assert!(
        c.notes[2].starts_with("1 record holds text beside its child"),
        "{:?}",
        c.notes
    );
    // Whitespace between records is not content.
    let c = run_with("<orders>\n  <order><id>1</id></order>\n</orders>\n", &opt).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn a_record_line_is_where_its_start_tag_begins() {
    let c =
        run("<list>\n<item\n  id=\"1\"\n  kind=\"a\">x</item>\n<item id=\"2\"/>\n</list>").unwrap();
    assert_eq!(c.rows[0].0, 2);
    assert_eq!(c.rows[1].0, 5);
}
