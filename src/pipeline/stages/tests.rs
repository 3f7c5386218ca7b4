//! Unit tests of the record stages.
use super::*;
use crate::config::{BadLimit, DatasetSpec, Policy};
use crate::typed::{ColType, ColumnSpec};
use crossbeam_channel::unbounded;

fn typed() -> DatasetSpec {
    let mut d = DatasetSpec::implied("t");
    let mut id = ColumnSpec::new("id", ColType::Int);
    id.required = true;
    d.columns = vec![id, ColumnSpec::new("amount", ColType::Decimal)];
    d.key = vec!["id".into()];
    d.on_new_column = Policy::Fail;
    d.on_missing_column = Policy::Fail;
    d
}

fn feed(
    spec: &DatasetSpec,
    cols: &[&str],
    rows: &[&[&str]],
) -> (Vec<Msg>, Result<(u64, u64), Stop>) {
    let (tx, rx) = unbounded();
    let mut s = Stages::new(&tx, spec, true);
    let names: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    let r = s.columns(&names).and_then(|_| {
        for (i, row) in rows.iter().enumerate() {
            let text = row.concat();
            let mut spans = Vec::new();
            let mut at = 0;
            for v in *row {
                spans.push(if v.is_empty() {
                    None
                } else {
                    Some((at, at + v.len()))
                });
                at += v.len();
            }
            s.row(i as u64 + 2, &text, &spans)?;
        }
        s.finish()
    });
    drop(s);
    drop(tx);
    (rx.into_iter().collect(), r)
}

#[test]
fn typed_rows_are_converted_and_keyed() {
    let spec = typed();
    let (msgs, r) = feed(&spec, &["ID", "amount"], &[&["1", "2.50"], &["2", ""]]);
    assert_eq!(r.unwrap(), (2, 0));
    let chunk = msgs
        .iter()
        .find_map(|m| match m {
            Msg::Rows(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(chunk.row(0)[0], Cell::Int(1));
    assert_eq!(chunk.text(chunk.row(0)[1]), Some("2.5"));
    assert_eq!(chunk.row(1)[1], Cell::Null);
    assert_eq!(chunk.keys.len(), 2);
    assert_ne!(chunk.keys[0], chunk.keys[1]);
}

#[test]
fn drift_and_bad_records_reject_the_file() {
    let spec = typed();
    let (_, r) = feed(&spec, &["id", "amount", "colour"], &[]);
    match r {
        Err(Stop::Reject(r)) => {
            assert_eq!(r.kind, Kind::SchemaNewColumn);
            assert_eq!(r.field.as_deref(), Some("colour"));
        }
        _ => panic!("expected a reject"),
    }
    let (_, r) = feed(&spec, &["amount"], &[]);
    assert!(matches!(r, Err(Stop::Reject(r)) if r.kind == Kind::SchemaMissingColumn));
    let (_, r) = feed(&spec, &["id", "amount"], &[&["1", "x"], &["2", "3"]]);
    match r {
        Err(Stop::Reject(r)) => {
            assert_eq!(r.kind, Kind::RecordInvalid);
            assert_eq!(r.line, Some(2));
            assert_eq!(r.field.as_deref(), Some("amount"));
        }
        _ => panic!("expected a reject"),
    }
}

#[test]
fn bad_records_within_a_percentage_are_set_aside() {
    let mut spec = typed();
    spec.max_bad = BadLimit::Percent(10.0);
    let rows: Vec<Vec<String>> = (0..20)
        .map(|i| vec![if i == 5 { "x".into() } else { i.to_string() }, "1".into()])
        .collect();
    let refs: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    let (msgs, r) = feed(&spec, &["id", "amount"], &slices);
    assert_eq!(r.unwrap(), (19, 1));
    let rejects: Vec<&RecordReject> = msgs
        .iter()
        .filter_map(|m| match m {
            Msg::Rejects(r) => Some(r.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].line, 7);
    assert_eq!(rejects[0].value.as_deref(), Some("x"));
    // Three bad in twenty is over 10%.
    let slices3: Vec<&[&str]> = slices
        .iter()
        .enumerate()
        .map(|(i, r)| if i < 3 { &["bad", "1"][..] } else { *r })
        .collect();
    let (_, r) = feed(&spec, &["id", "amount"], &slices3);
    assert!(matches!(r, Err(Stop::Reject(r)) if r.kind == Kind::TooManyBadRecords));
}
