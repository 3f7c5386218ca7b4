//! What each record of a chunk does, given the stored record with its key (if any): the
//! dataset's `on_key` applied as if the records came one after another — a later record of the
//! same file sees the earlier one as stored. Both stores and the dry run decide here.

use super::map::IdMap;
use crate::config::OnKey;
use crate::record::{Cell, Chunk};
use crate::reject::{truncate_value, Kind, RecordReject};
use crate::typed::ColType;
use std::cmp::Ordering;

/// How a dataset's records meet their keys.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub on_key: OnKey,
    /// With `version`: the chunk cell holding it (`None`: the file lacks the column) and its type.
    pub version: Option<(Option<usize>, ColType)>,
    /// The dataset's key columns, for messages.
    pub key_names: Vec<String>,
}

impl Rule {
    pub fn skip(key_names: Vec<String>) -> Rule {
        Rule {
            on_key: OnKey::Skip,
            version: None,
            key_names,
        }
    }

    /// What the stored record must be compared on besides its key.
    pub fn wants(&self) -> Wants {
        match (self.on_key, self.version) {
            (OnKey::Update, Some(_)) => Wants::Version,
            (OnKey::Update, None) => Wants::Content,
            _ => Wants::Key,
        }
    }
}

/// What a comparison with a stored record must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Key,
    /// Whether the chunk row's version is greater than the stored record's.
    Version,
    /// Whether the chunk row holds exactly the stored record's values.
    Content,
}

/// A stored record, as compared with a chunk row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No record has this id (any more).
    Gone,
    /// Its key is another one (the hashes only matched).
    Other,
    /// The same key: `newer` is how the row's version compares with the stored one (a stored
    /// record without a version is older than any), `equal` whether all values are the same.
    Same {
        newer: Option<Ordering>,
        equal: Option<bool>,
    },
}

/// What a chunk stores.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The chunk rows to store, in order.
    pub insert: Vec<u32>,
    /// (position in `insert`, stored record it replaces).
    pub replaces: Vec<(usize, i64)>,
    /// Records with a key not stored before.
    pub new: u64,
    /// Records that replaced a stored one (`on_key = "update"`).
    pub updated: u64,
    /// Records whose key was stored and that changed nothing.
    pub duplicates: u64,
    /// Records refused because their key was stored (`on_key = "reject"`).
    pub rejects: Vec<RecordReject>,
    /// Per row of `insert`: whether its hash is new to the index (no stored record had it when
    /// looked up, and no earlier row of the chunk) — set by `plan_chunk`.
    pub absent: Vec<bool>,
}

/// Decides each row of a chunk. `stored[r]`: the live stored record with row `r`'s key, with
/// how it compares (only `Seen::Same`).
pub fn decide(
    chunk: &Chunk,
    key_cells: &[Option<usize>],
    rule: &Rule,
    stored: &[Option<(i64, Seen)>],
) -> Plan {
    let n = chunk.rows();
    // The common case of a load: no stored key met, no key twice in the chunk — every record is
    // new, whatever `on_key` says. Told apart by sorting the hashes (in cache), not a map.
    if stored.iter().all(Option::is_none) {
        let mut hashes = chunk.keys.clone();
        hashes.sort_unstable();
        if hashes.windows(2).all(|w| w[0] != w[1]) {
            return Plan {
                insert: (0..n as u32).collect(),
                absent: vec![true; n],
                new: n as u64,
                ..Plan::default()
            };
        }
    }
    let mut plan = Plan {
        insert: Vec::with_capacity(n),
        absent: Vec::with_capacity(n),
        ..Plan::default()
    };
    // Rows of this chunk that hold a key now, by hash: their positions in `insert`.
    let mut holding = Holding::with_capacity(chunk.rows());
    for (r, found) in stored.iter().enumerate().take(chunk.rows()) {
        let h = chunk.keys[r];
        let earlier = holding
            .slots(h)
            .find(|&s| same_key(chunk, key_cells, plan.insert[s] as usize, r));
        if let Some(slot) = earlier {
            let p = plan.insert[slot] as usize;
            match rule.on_key {
                OnKey::Skip => plan.duplicates += 1,
                OnKey::Reject => plan.rejects.push(key_exists(
                    chunk,
                    key_cells,
                    rule,
                    r,
                    format!("line {} of this file has the same key", chunk.lines[p]),
                )),
                OnKey::Update => {
                    if supersedes(chunk, rule, r, p) {
                        plan.insert[slot] = r as u32;
                        plan.updated += 1;
                    } else {
                        plan.duplicates += 1;
                    }
                }
            }
            continue;
        }
        match *found {
            Some((id, Seen::Same { newer, equal })) => match rule.on_key {
                OnKey::Skip => plan.duplicates += 1,
                OnKey::Reject => plan.rejects.push(key_exists(
                    chunk,
                    key_cells,
                    rule,
                    r,
                    if id < 0 {
                        "an earlier file of this run has it".to_string()
                    } else {
                        format!("record {id} has it")
                    },
                )),
                OnKey::Update => {
                    let wins = match rule.version {
                        Some(_) => newer == Some(Ordering::Greater),
                        None => equal == Some(false),
                    };
                    if wins {
                        plan.replaces.push((plan.insert.len(), id));
                        holding.add(h, plan.insert.len());
                        plan.insert.push(r as u32);
                        plan.absent.push(false);
                        plan.updated += 1;
                    } else {
                        plan.duplicates += 1;
                    }
                }
            },
            _ => {
                // Whether no earlier row of the chunk stored this hash (`plan_chunk` adds
                // whether the index held it).
                plan.absent.push(holding.add(h, plan.insert.len()));
                plan.insert.push(r as u32);
                plan.new += 1;
            }
        }
    }
    plan
}

/// The rows of a chunk stored so far, by hash: the first position in `insert` of each hash,
/// further ones (other keys of the same hash) beside.
struct Holding {
    first: IdMap<usize>,
    more: IdMap<Vec<usize>>,
}

impl Holding {
    fn with_capacity(n: usize) -> Holding {
        Holding {
            first: IdMap::with_capacity_and_hasher(n, Default::default()),
            more: IdMap::default(),
        }
    }

    fn slots(&self, h: i64) -> impl Iterator<Item = usize> + '_ {
        let first = self.first.get(&h).copied();
        let more = first.and_then(|_| self.more.get(&h));
        first.into_iter().chain(more.into_iter().flatten().copied())
    }

    /// Adds a slot; whether it is the hash's first.
    fn add(&mut self, h: i64, slot: usize) -> bool {
        match self.first.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(slot);
                false
            }
        }
    }
}

/// Chunk row `row`'s cell of a column (`None`: the column is not in the file: NULL).
pub fn cell_at(chunk: &Chunk, row: usize, col: Option<usize>) -> Cell {
    col.map_or(Cell::Null, |c| chunk.row(row)[c])
}

fn same_cell(chunk: &Chunk, x: Cell, y: Cell) -> bool {
    match (x, y) {
        (Cell::Text { .. }, Cell::Text { .. }) => chunk.text(x) == chunk.text(y),
        (Cell::Real(p), Cell::Real(q)) => p == q,
        _ => x == y,
    }
}

/// Whether two rows of a chunk have the same key.
pub fn same_key(chunk: &Chunk, key_cells: &[Option<usize>], a: usize, b: usize) -> bool {
    key_cells
        .iter()
        .all(|&c| same_cell(chunk, cell_at(chunk, a, c), cell_at(chunk, b, c)))
}

/// Whether row `r` wins over the earlier row `p` of the same key.
fn supersedes(chunk: &Chunk, rule: &Rule, r: usize, p: usize) -> bool {
    match rule.version {
        Some((cell, ty)) => {
            let v = |row| version_of(chunk, cell_at(chunk, row, cell));
            compare_versions(ty, v(r), v(p)) == Ordering::Greater
        }
        None => !(0..chunk.width).all(|c| same_cell(chunk, chunk.row(r)[c], chunk.row(p)[c])),
    }
}

/// A version value: an integer, or the canonical text of a decimal, date or datetime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Version<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

pub fn version_of(chunk: &Chunk, c: Cell) -> Version<'_> {
    match c {
        Cell::Int(i) => Version::Int(i),
        Cell::Text { .. } => chunk.text(c).map_or(Version::Null, Version::Text),
        _ => Version::Null,
    }
}

/// Orders two versions of a column of type `ty` (NULL below everything).
pub fn compare_versions(ty: ColType, a: Version, b: Version) -> Ordering {
    match (a, b) {
        (Version::Null, Version::Null) => Ordering::Equal,
        (Version::Null, _) => Ordering::Less,
        (_, Version::Null) => Ordering::Greater,
        (Version::Int(x), Version::Int(y)) => x.cmp(&y),
        (Version::Text(x), Version::Text(y)) => match ty {
            ColType::Decimal => compare_decimals(x, y),
            ColType::Date => match (
                x.parse::<chrono::NaiveDate>(),
                y.parse::<chrono::NaiveDate>(),
            ) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => x.cmp(y),
            },
            ColType::DateTime => match (
                chrono::DateTime::parse_from_rfc3339(x),
                chrono::DateTime::parse_from_rfc3339(y),
            ) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => x.cmp(y),
            },
            _ => x.cmp(y),
        },
        (Version::Int(x), Version::Text(y)) => compare_decimals(&x.to_string(), y),
        (Version::Text(x), Version::Int(y)) => compare_decimals(x, &y.to_string()),
    }
}

/// Orders two decimals written as plain digits (`-12.50`, `7`), exactly.
pub fn compare_decimals(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let (neg, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let zero = int.is_empty() && frac.is_empty();
        (neg && !zero, int.to_string(), frac.to_string())
    };
    let (na, ia, fa) = split(a);
    let (nb, ib, fb) = split(b);
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(&ib))
        .then_with(|| fa.cmp(&fb));
    match (na, nb) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
    }
}

/// A row's key as text, for messages: `a=1, b=x`.
pub fn key_text(chunk: &Chunk, key_cells: &[Option<usize>], names: &[String], r: usize) -> String {
    names
        .iter()
        .zip(key_cells)
        .map(|(n, &c)| {
            let v = match cell_at(chunk, r, c) {
                Cell::Null => "NULL".to_string(),
                Cell::Int(i) => i.to_string(),
                Cell::Real(x) => x.to_string(),
                t => chunk.text(t).unwrap_or_default().to_string(),
            };
            format!("{n}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_exists(
    chunk: &Chunk,
    key_cells: &[Option<usize>],
    rule: &Rule,
    r: usize,
    holder: String,
) -> RecordReject {
    RecordReject {
        kind: Kind::RecordKeyExists,
        line: chunk.lines[r],
        field: Some(rule.key_names.join(", ")),
        value: Some(truncate_value(&key_text(
            chunk,
            key_cells,
            &rule.key_names,
            r,
        ))),
        reason: format!(
            "the key is already stored ({holder}) and the dataset takes new keys only \
             (on_key = \"reject\")"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of (key, version, other) text cells; the key hash is the key's first byte.
    fn chunk(rows: &[(&str, &str, &str)]) -> Chunk {
        let mut c = Chunk::new(3);
        for (i, (k, v, o)) in rows.iter().enumerate() {
            let src = format!("{k}{v}{o}");
            let (a, b) = (k.len(), k.len() + v.len());
            c.push_row(
                i as u64 + 2,
                &src,
                &[Some((0, a)), Some((a, b)), Some((b, src.len()))],
            );
            c.keys.push(k.as_bytes()[0] as i64);
        }
        c
    }

    fn rule(on_key: OnKey, version: bool) -> Rule {
        Rule {
            on_key,
            version: version.then_some((Some(1), ColType::Decimal)),
            key_names: vec!["k".into()],
        }
    }

    const SAME_NEWER: Seen = Seen::Same {
        newer: Some(Ordering::Greater),
        equal: Some(false),
    };
    const SAME_EQUAL: Seen = Seen::Same {
        newer: Some(Ordering::Equal),
        equal: Some(true),
    };

    #[test]
    fn skip_keeps_the_first_and_counts_the_rest() {
        let c = chunk(&[
            ("a", "1", "x"),
            ("b", "1", "x"),
            ("a", "2", "y"),
            ("c", "1", "x"),
        ]);
        let stored = [None, Some((9, SAME_EQUAL)), None, None];
        let p = decide(&c, &[Some(0)], &rule(OnKey::Skip, false), &stored);
        assert_eq!(p.insert, [0, 3]);
        assert_eq!((p.new, p.duplicates, p.updated), (2, 2, 0));
    }

    #[test]
    fn reject_refuses_stored_and_repeated_keys() {
        let c = chunk(&[("a", "1", "x"), ("b", "1", "x"), ("a", "2", "y")]);
        let stored = [None, Some((9, SAME_EQUAL)), None];
        let p = decide(&c, &[Some(0)], &rule(OnKey::Reject, false), &stored);
        assert_eq!(p.insert, [0]);
        assert_eq!(p.rejects.len(), 2);
        assert_eq!(p.rejects[0].kind, Kind::RecordKeyExists);
        assert_eq!(p.rejects[0].value.as_deref(), Some("k=b"));
        assert!(
            p.rejects[1].reason.contains("line 2"),
            "{}",
            p.rejects[1].reason
        );
    }

    #[test]
    fn update_takes_greater_versions_in_file_order() {
        // a: stored at version 1; the file has 3, then 2 (stays 3), then 10.
        let c = chunk(&[
            ("a", "3", "x"),
            ("a", "2", "y"),
            ("a", "10", "z"),
            ("b", "1", "x"),
        ]);
        let stored = [
            Some((9, SAME_NEWER)),
            Some((9, SAME_NEWER)),
            Some((9, SAME_NEWER)),
            Some((
                4,
                Seen::Same {
                    newer: Some(Ordering::Equal),
                    equal: Some(true),
                },
            )),
        ];
        let p = decide(&c, &[Some(0)], &rule(OnKey::Update, true), &stored);
        assert_eq!(p.insert, [2]);
        assert_eq!(p.replaces, [(0, 9)]);
        assert_eq!((p.new, p.updated, p.duplicates), (0, 2, 2));
    }

    #[test]
    fn update_without_version_takes_the_latest_different_record() {
        let c = chunk(&[
            ("a", "1", "x"),
            ("a", "1", "x"),
            ("a", "1", "y"),
            ("b", "1", "x"),
        ]);
        let stored = [None, None, None, Some((4, SAME_EQUAL))];
        let p = decide(&c, &[Some(0)], &rule(OnKey::Update, false), &stored);
        assert_eq!(p.insert, [2]);
        assert!(p.replaces.is_empty());
        assert_eq!((p.new, p.updated, p.duplicates), (1, 1, 2));
    }

    #[test]
    fn versions_compare_by_value() {
        use Version::*;
        let d = |a, b| compare_versions(ColType::Decimal, Text(a), Text(b));
        assert_eq!(d("10", "9.99"), Ordering::Greater);
        assert_eq!(d("-1.5", "-1.25"), Ordering::Less);
        assert_eq!(d("0.10", "0.1"), Ordering::Equal);
        assert_eq!(d("-0", "0"), Ordering::Equal);
        assert_eq!(d("0.001", "-5"), Ordering::Greater);
        let t = |a, b| compare_versions(ColType::DateTime, Text(a), Text(b));
        assert_eq!(
            t("2024-01-01T00:00:05.5Z", "2024-01-01T00:00:05Z"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions(ColType::Int, Int(3), Null),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions(ColType::Date, Text("2024-02-01"), Text("2023-12-31")),
            Ordering::Greater
        );
    }
}
