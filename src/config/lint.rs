//! What is valid in a config but probably not what was meant: a `match` glob that reads like a
//! regular expression, a dataset whose files an earlier dataset takes. `config check` prints
//! these; `run` and `watch` log them.

use super::DatasetSpec;
use globset::Glob;
use std::sync::Arc;

/// Globs that look like regular expressions, and datasets whose files an earlier dataset takes.
pub(super) fn pattern_warnings(datasets: &[Arc<DatasetSpec>]) -> Vec<String> {
    let mut out = Vec::new();
    for (j, d) in datasets.iter().enumerate() {
        if let Some(p) = &d.pattern {
            if looks_like_regex(p) {
                out.push(format!(
                    "dataset {:?}: match = {p:?} looks like a regular expression, but match is a \
                     glob (`*` any name, `**` any folders, `?` one character, `{{a,b}}` either): \
                     for example \"orders/**/*.csv\"",
                    d.name
                ));
            }
        }
        if let Some(l) = &d.options.fixed {
            if l.skip_trailer > 0 && l.trailer_prefix.is_none() && l.trailer_count.is_none() {
                out.push(format!(
                    "dataset {:?}: skip_trailer = {} drops the last line(s) of every file \
                     whatever they hold — a file that lost its trailer loses its last record(s) \
                     unnoticed; set trailer_prefix (what trailer lines start with) or \
                     trailer_count",
                    d.name, l.skip_trailer
                ));
            }
        }
        if d.on_key == super::OnKey::Update && d.version.is_none() {
            out.push(format!(
                "dataset {:?}: on_key = \"update\" without a version: the latest record is the \
                 one of the file stored last — the order files are found in (by name), and \
                 across hosts the order they commit in. If the records carry a version or a \
                 timestamp, set version = \"<column>\" and the greater one wins whatever the \
                 order",
                d.name
            ));
        }
        let samples = sample_paths(d);
        if samples.is_empty() {
            continue;
        }
        for earlier in &datasets[..j] {
            let Some(m) = &earlier.matcher else { continue };
            if samples.iter().all(|s| m.is_match(s)) {
                out.push(format!(
                    "dataset {:?} can never take a file: dataset {:?} comes first and its match \
                     = {:?} takes every path that {} (put the more specific dataset first)",
                    d.name,
                    earlier.name,
                    earlier.pattern.as_deref().unwrap_or(""),
                    match &d.pattern {
                        Some(p) => format!("match = {p:?} takes"),
                        None => format!("the folder {:?} holds", d.name),
                    }
                ));
                break;
            }
        }
    }
    out
}

/// Whether a glob reads like a regular expression (anchors, escapes, `+`, alternation).
fn looks_like_regex(p: &str) -> bool {
    p.starts_with('^')
        || p.ends_with('$')
        || [
            "\\d", "\\w", "\\s", "\\.", ".+", ".*$", "(?", ")*", ")+", "]+", "]*",
        ]
        .iter()
        .any(|s| p.contains(s))
        || (p.contains('(') && p.contains('|'))
}

/// Paths a dataset's files could have: its glob with wildcards filled in, or its folder.
fn sample_paths(d: &DatasetSpec) -> Vec<String> {
    match &d.pattern {
        None => ["csv", "json", "ndjson", "tsv", "csv.gz", "txt"]
            .iter()
            .flat_map(|ext| {
                [
                    format!("{}/f.{ext}", d.name),
                    format!("{}/sub/f.{ext}", d.name),
                ]
            })
            .collect(),
        Some(p) => expand_glob(p, 64),
    }
}

/// Concrete paths a glob matches (a few per wildcard), at most `max`.
fn expand_glob(p: &str, max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        let options: Vec<String> = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    vec![String::new(), "a/".into(), "a/b/".into()]
                } else {
                    vec!["x".into(), "a/x".into()]
                }
            }
            '*' => vec!["x".into(), "data.2".into()],
            '?' => vec!["x".into()],
            '[' => {
                let mut class = String::new();
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() {
                        break;
                    }
                    class.push(c);
                }
                match class.strip_prefix(['!', '^']) {
                    Some(_) => vec!["\u{1}".into()],
                    None => vec![class.chars().next().unwrap_or('x').to_string()],
                }
            }
            '{' => {
                let mut alt = String::new();
                let mut depth = 1;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    alt.push(c);
                }
                alt.split(',').map(String::from).collect()
            }
            '\\' => vec![chars.next().map(String::from).unwrap_or_default()],
            c => vec![c.to_string()],
        };
        out = out
            .iter()
            .flat_map(|prefix| options.iter().map(move |o| format!("{prefix}{o}")))
            .take(max)
            .collect();
    }
    out.retain(|s| !s.is_empty() && Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(s)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_looking_and_shadowed_patterns_are_warned_about() {
        let raw = super::super::load::parse_raw(
            "[[dataset]]\nname = \"all\"\nmatch = \"**/*.csv\"\n\n\
             [[dataset]]\nname = \"orders\"\nmatch = \"orders/*.csv\"\n\n\
             [[dataset]]\nname = \"re\"\nmatch = \"^orders_.*\\\\.json$\"\n\n\
             [[dataset]]\nname = \"json\"\nmatch = \"**/*.{json,ndjson}\"\n\n\
             [[dataset]]\nname = \"vehicles\"\n",
        )
        .unwrap();
        let datasets: Vec<Arc<DatasetSpec>> = raw
            .datasets
            .iter()
            .map(|d| Arc::new(d.get_ref().resolve("").unwrap()))
            .collect();
        let w = pattern_warnings(&datasets);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("\"orders\" can never take a file"),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains("\"re\"") && w[1].contains("regular expression"),
            "{}",
            w[1]
        );
        // A folder-named dataset is shadowed only if every kind of file in it is taken.
        assert!(!w.iter().any(|x| x.contains("\"vehicles\"")));
        for glob in ["*.csv", "orders.*", "data/{a,b}/*.json", "x[0-9]?.tsv"] {
            assert!(!looks_like_regex(glob), "{glob}");
        }
        for re in ["^a.csv", r"a\.csv", "a.csv$", "(a|b).csv", "a.+"] {
            assert!(looks_like_regex(re), "{re}");
        }
    }
}
