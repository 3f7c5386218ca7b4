//! The resolved configuration: everything a command needs, decided once.
//!
//! Sources, strongest first: command-line flags, the TOML file (`--config`, else
//! `<root>/ferry.toml` if present), built-in defaults. Values that can be wrong (durations, globs,
//! delimiters, encodings) are checked while the TOML is read, so an error names the file, line
//! and key. `--help` never gets here: clap answers it before any file is touched.

use crate::discover::{Rules, DEFAULT_IGNORE};
use crate::format::{json::pointer_segments, text, Format, FormatOptions};
use crate::spool::{RelPath, Spool};
use globset::{Glob, GlobMatcher};
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the spool is by default.
pub const DEFAULT_ROOT: &str = "./ferry-data";

/// A dataset, as configured (or implied by a folder name, with no config).
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    /// Which files it takes, matched against the path relative to the incoming folder.
    pub pattern: Option<String>,
    matcher: Option<GlobMatcher>,
    pub options: FormatOptions,
    /// JSON pointer split into segments.
    pub pointer: Vec<String>,
}

impl DatasetSpec {
    /// The zero-config dataset for a folder name (R-zero-config).
    pub fn implied(name: &str) -> DatasetSpec {
        DatasetSpec {
            name: name.to_string(),
            pattern: None,
            matcher: None,
            options: FormatOptions::default(),
            pointer: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The config file used, if any.
    pub file: Option<PathBuf>,
    pub spool: Spool,
    pub rules: Rules,
    /// Parallel workers (hash, parse, validate). The writer is one more thread.
    pub workers: usize,
    /// Attempts for failures outside a file's content before it is quarantined.
    pub max_attempts: u32,
    pub datasets: Vec<DatasetSpec>,
    /// Files up to this size are read into memory in one go (one read for hash and parse).
    pub small_file: u64,
}

impl Config {
    /// Resolves the configuration from the command line's `--root` and `--config`.
    pub fn load(root: Option<&Path>, config: Option<&Path>) -> Result<Config, ConfigError> {
        let (file, raw) = match config {
            Some(p) => (Some(p.to_path_buf()), Some(read_raw(p)?)),
            None => {
                let r = root
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
                let p = r.join("ferry.toml");
                if p.is_file() {
                    (Some(p.clone()), Some(read_raw(&p)?))
                } else {
                    (None, None)
                }
            }
        };
        let raw = raw.unwrap_or_default();
        let root = root
            .map(Path::to_path_buf)
            .or(raw.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let root = absolute(&root);
        let incoming = raw.incoming.as_ref().map(|i| absolute(&root.join(i)));
        let spool = Spool::new(&root, incoming.as_deref());

        let ignore: Vec<String> = match &raw.ready.ignore {
            Some(list) => list.iter().map(|p| p.0.clone()).collect(),
            None => DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        };
        let settle = raw.ready.settle.map_or(Duration::from_secs(1), |d| d.0);
        let marker = raw.ready.done_marker.clone().filter(|m| !m.is_empty());
        let rules = Rules::new(&ignore, marker, settle)
            .map_err(|e| ConfigError(format!("{}: ready.ignore: {e}", show(&file))))?;

        let mut datasets = Vec::new();
        let mut names = std::collections::HashSet::new();
        for d in &raw.datasets {
            if !names.insert(d.name.0.to_lowercase()) {
                return Err(ConfigError(format!(
                    "{}: dataset {:?} is defined twice",
                    show(&file),
                    d.name.0
                )));
            }
            datasets.push(d.resolve());
        }

        let workers = raw
            .workers
            .filter(|&w| w > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Config {
            file,
            spool,
            rules,
            workers,
            max_attempts: raw.max_attempts.unwrap_or(5).max(1),
            datasets,
            small_file: 4 << 20,
        })
    }

    /// The dataset a file belongs to: the first configured dataset whose `match` glob matches
    /// its path, else the zero-config dataset named after its first folder (`default` at the top).
    pub fn dataset_for(&self, rel: &RelPath) -> DatasetSpec {
        let path = rel.display();
        for d in &self.datasets {
            if d.matcher.as_ref().is_some_and(|m| m.is_match(&path)) {
                return d.clone();
            }
        }
        let name = rel.first_dir().unwrap_or_else(|| "default".to_string());
        match self
            .datasets
            .iter()
            .find(|d| d.matcher.is_none() && d.name == name)
        {
            Some(d) => d.clone(),
            None => DatasetSpec::implied(&name),
        }
    }
}

fn show(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map_or_else(|| "configuration".to_string(), |p| p.display().to_string())
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p))
    }
}

fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read the config: {e}", path.display())))?;
    parse_raw(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Parses config text; errors say line, column and key.
fn parse_raw(text: &str) -> Result<RawConfig, String> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let msg = e.message().trim_end().to_string();
        match line {
            Some(l) => format!("line {l}: {msg}\n{e}"),
            None => msg,
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    root: Option<PathBuf>,
    incoming: Option<PathBuf>,
    workers: Option<usize>,
    max_attempts: Option<u32>,
    #[serde(default)]
    ready: RawReady,
    #[serde(default, rename = "dataset")]
    datasets: Vec<RawDataset>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    settle: Option<Dur>,
    ignore: Option<Vec<Pattern>>,
    done_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    name: DatasetName,
    #[serde(rename = "match")]
    pattern: Option<Pattern>,
    format: Option<FormatName>,
    delimiter: Option<Delimiter>,
    quote: Option<QuoteChar>,
    header: Option<bool>,
    /// Column names for files without a header row.
    names: Option<Vec<String>>,
    json_pointer: Option<Pointer>,
    encoding: Option<EncodingName>,
}

impl RawDataset {
    fn resolve(&self) -> DatasetSpec {
        let options = FormatOptions {
            format: self.format.map(|f| f.0),
            delimiter: self.delimiter.and_then(|d| d.0),
            quote: self.quote.map_or(b'"', |q| q.0),
            header: self.header.unwrap_or(true),
            names: self.names.clone().unwrap_or_default(),
            json_pointer: self.json_pointer.as_ref().map(|p| p.0.clone()),
            encoding: self.encoding.map(|e| e.0),
        };
        let pointer = self
            .json_pointer
            .as_ref()
            .map(|p| pointer_segments(&p.0).expect("validated when read"))
            .unwrap_or_default();
        DatasetSpec {
            name: self.name.0.clone(),
            pattern: self.pattern.as_ref().map(|p| p.0.clone()),
            matcher: self.pattern.as_ref().map(|p| {
                Glob::new(&p.0)
                    .expect("validated when read")
                    .compile_matcher()
            }),
            options,
            pointer,
        }
    }
}

/// Parses a value from a string, failing with a message serde attaches to the key's position.
fn from_str_with<'de, D, T>(d: D, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    f(&s).map_err(de::Error::custom)
}

/// A duration like `500ms`, `1s`, `2m`, `1h`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| parse_duration(s).map(Dur))
    }
}

/// Parses `500ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try \"500ms\", \"1s\", \"2m\")"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in duration {s:?} (use ms, s, m, h, d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone)]
struct Pattern(String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            Glob::new(s)
                .map(|_| Pattern(s.to_string()))
                .map_err(|e| format!("{s:?} is not a valid glob: {e}"))
        })
    }
}

#[derive(Debug, Clone)]
struct DatasetName(String);

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.trim().is_empty() || s.contains('/') || s.starts_with('.') {
                Err(format!(
                    "{s:?} is not a dataset name (non-empty, no '/', not starting with '.')"
                ))
            } else {
                Ok(DatasetName(s.to_string()))
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct FormatName(Format);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Ok(FormatName(Format::Csv)),
            "ndjson" | "jsonl" => Ok(FormatName(Format::Ndjson)),
            "json" => Ok(FormatName(Format::Json)),
            _ => Err(format!("unknown format {s:?} (csv, tsv, ndjson, json)")),
        })
    }
}

/// `","`, `";"`, `"\t"` (or `"tab"`), `"|"`, any single ASCII character, or `"auto"`.
#[derive(Debug, Clone, Copy)]
struct Delimiter(Option<u8>);

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| match s {
            "auto" => Ok(Delimiter(None)),
            "tab" | "\\t" => Ok(Delimiter(Some(b'\t'))),
            _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
                Ok(Delimiter(Some(s.as_bytes()[0])))
            }
            _ => Err(format!(
                "{s:?} is not a delimiter (one ASCII character, \"tab\" or \"auto\")"
            )),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct QuoteChar(u8);

impl<'de> Deserialize<'de> for QuoteChar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" {
                Ok(QuoteChar(s.as_bytes()[0]))
            } else {
                Err(format!(
                    "{s:?} is not a quote character (one ASCII character)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Pointer(String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| pointer_segments(s).map(|_| Pointer(s.to_string())))
    }
}

#[derive(Clone, Copy)]
struct EncodingName(text::Encoding);

impl fmt::Debug for EncodingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for EncodingName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, |s| {
            text::encoding_for_label(s)
                .map(EncodingName)
                .ok_or_else(|| {
                    format!("unknown encoding {s:?} (e.g. utf-8, latin1, windows-1252, utf-16le)")
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse_raw("root = \"x\"\n[ready]\nsettle = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
        let e = parse_raw("[[dataset]]\nname = \"a\"\ncolour = \"red\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = parse_raw("[[dataset]]\nname = \"a\"\ndelimiter = \";;\"\n").unwrap_err();
        assert!(e.contains("not a delimiter"), "{e}");
    }

    #[test]
    fn datasets_match_by_glob_then_folder() {
        let raw = parse_raw(
            "[[dataset]]\nname = \"vehicles\"\nmatch = \"fleet/**/*.csv\"\ndelimiter = \";\"\n",
        )
        .unwrap();
        let cfg = Config {
            datasets: raw.datasets.iter().map(RawDataset::resolve).collect(),
            ..Config::load(Some(Path::new("/nonexistent-root")), None).unwrap()
        };
        let rel = |p: &str| RelPath::from_relative(Path::new(p)).unwrap();
        let d = cfg.dataset_for(&rel("fleet/2026/a.csv"));
        assert_eq!(d.name, "vehicles");
        assert_eq!(d.options.delimiter, Some(b';'));
        assert_eq!(cfg.dataset_for(&rel("sales/a.csv")).name, "sales");
        assert_eq!(cfg.dataset_for(&rel("a.csv")).name, "default");
    }
}
