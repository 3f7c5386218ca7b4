//! A table's key definition, as recorded with it: which columns, of which type, normalised how.
//! Records are keyed by what their stored values hash to under it, so a change of definition
//! means re-keying the stored records (`rekey.rs`) before anything new is loaded.

use crate::config::DatasetSpec;
use crate::typed::{Case, ColType, ColumnSpec, KeyHasher};
use serde::{Deserialize, Serialize};

/// The version of the key hash (`KeyHasher`); a new one re-keys every table.
const HASH_VERSION: u32 = 1;

/// The key of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDef {
    pub hash: u32,
    pub columns: Vec<KeyColumn>,
}

/// One column of a key: its table column, type and normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub trim: bool,
    #[serde(default)]
    pub case: String,
}

impl KeyDef {
    /// The dataset's key, its columns as the table names them (`columns`, in key order).
    pub fn of(spec: &DatasetSpec, columns: &[String]) -> KeyDef {
        let cols = spec
            .key
            .iter()
            .zip(columns)
            .map(|(k, name)| {
                let decl = spec.columns.iter().find(|c| c.name.eq_ignore_ascii_case(k));
                let string = decl.is_none_or(|c| c.ty == ColType::String);
                KeyColumn {
                    name: name.clone(),
                    ty: decl.map_or("string", |c| c.ty.id()).to_string(),
                    trim: string && decl.is_some_and(|c| c.trim),
                    case: match decl.map(|c| c.case) {
                        Some(Case::Lower) if string => "lower",
                        Some(Case::Upper) if string => "upper",
                        _ => "",
                    }
                    .to_string(),
                }
            })
            .collect();
        KeyDef {
            hash: HASH_VERSION,
            columns: cols,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a key definition serializes")
    }

    pub fn parse(s: &str) -> Option<KeyDef> {
        serde_json::from_str(s).ok()
    }

    /// Whether two definitions key records alike (column names compare without case).
    pub fn same(&self, other: &KeyDef) -> bool {
        self.hash == other.hash
            && self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| {
                a.name.eq_ignore_ascii_case(&b.name)
                    && a.ty == b.ty
                    && a.trim == b.trim
                    && a.case == b.case
            })
    }

    /// `(vin, make, year)`, with normalisation where there is some.
    pub fn describe(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut n = c.name.clone();
                let mut how = Vec::new();
                if c.trim {
                    how.push("trimmed".to_string());
                }
                if !c.case.is_empty() {
                    how.push(format!("{} case", c.case));
                }
                if !how.is_empty() {
                    n.push_str(&format!(" ({})", how.join(", ")));
                }
                n
            })
            .collect();
        format!("({})", cols.join(", "))
    }

    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The string normalisation of each key column, to check stored values against.
    pub fn normalizers(&self) -> Vec<Option<ColumnSpec>> {
        self.columns
            .iter()
            .map(|c| {
                (c.ty == "string" && (c.trim || !c.case.is_empty())).then(|| {
                    let mut s = ColumnSpec::new(&c.name, ColType::String);
                    s.trim = c.trim;
                    s.case = match c.case.as_str() {
                        "lower" => Case::Lower,
                        "upper" => Case::Upper,
                        _ => Case::Keep,
                    };
                    s
                })
            })
            .collect()
    }
}

/// A stored value of a key column.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Null => f.write_str("NULL"),
            KeyValue::Int(i) => write!(f, "{i}"),
            KeyValue::Real(x) => write!(f, "{x}"),
            KeyValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// What a stored record's key values hash to, as the workers hash a record's cells; `None` when
/// one of them is empty (such a record has no key).
pub fn key_hash(vals: &[KeyValue]) -> Option<i64> {
    let mut h = KeyHasher::default();
    for v in vals {
        match v {
            KeyValue::Int(i) => h.int(*i),
            KeyValue::Real(x) => h.real(*x),
            KeyValue::Text(t) if !t.is_empty() => h.text(t),
            _ => return None,
        }
    }
    Some(h.finish())
}

/// The first stored value the definition's normalisation would change: `(column, what it would
/// become)`.
pub fn unnormalized(norm: &[Option<ColumnSpec>], vals: &[KeyValue]) -> Option<(usize, String)> {
    for (i, (n, v)) in norm.iter().zip(vals).enumerate() {
        if let (Some(spec), KeyValue::Text(t)) = (n, v) {
            match spec.convert(Some(t)) {
                Ok(crate::typed::Value::Text(s)) if s == t.as_str() => {}
                Ok(other) => return Some((i, other.to_string())),
                Err(e) => return Some((i, e)),
            }
        }
    }
    None
}

/// `a=1, b="x"`: a record's key, for messages.
pub fn key_text(names: &[String], vals: &[KeyValue]) -> String {
    names
        .iter()
        .zip(vals)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_hash_as_the_workers_hash_cells() {
        let mut h = KeyHasher::default();
        h.text("VIN1");
        h.int(2019);
        let vals = [KeyValue::Text("VIN1".into()), KeyValue::Int(2019)];
        assert_eq!(key_hash(&vals), Some(h.finish()));
        assert_eq!(key_hash(&[KeyValue::Text(String::new())]), None);
        assert_eq!(key_hash(&[KeyValue::Int(1), KeyValue::Null]), None);
    }

    #[test]
    fn definitions_compare_by_what_keys_records() {
        let mut spec = DatasetSpec::implied("d");
        spec.key = vec!["Vin".into()];
        let a = KeyDef::of(&spec, &["vin".to_string()]);
        let b = KeyDef::parse(&a.json()).unwrap();
        assert!(a.same(&b));
        let mut c = ColumnSpec::new("vin", ColType::String);
        c.case = Case::Upper;
        spec.columns = vec![c];
        let upper = KeyDef::of(&spec, &["vin".to_string()]);
        assert!(!a.same(&upper));
        assert_eq!(upper.describe(), "(vin (upper case))");
        let norm = upper.normalizers();
        assert_eq!(unnormalized(&norm, &[KeyValue::Text("ABC".into())]), None);
        assert_eq!(
            unnormalized(&norm, &[KeyValue::Text("abc".into())]),
            Some((0, "ABC".into()))
        );
    }
}
