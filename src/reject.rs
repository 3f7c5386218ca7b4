//! Why a file, or a record in it, is set aside.
//!
//! A rejection is data, not a formatted message: `Kind` has a stable string id that operators
//! script against (`csv.ragged_row`, `json.syntax`, …), and `Reject` carries where in the file it
//! happened. The ledger, `.reason.json` and `ferry quarantine` all print from this one type.
//! Nothing here does IO.

use serde::Serialize;
use std::fmt;

/// A stable identifier for a kind of rejection. The string ids are part of ferry's interface:
/// never rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The file has zero bytes (or nothing but a byte-order mark / whitespace).
    Empty,
    /// The entry in the incoming folder is a symbolic link; its target is never read.
    Symlink,
    /// The entry is a FIFO, socket or device: reading it could block or never end.
    SpecialFile,
    /// Bytes that are not UTF-8 in a dataset that declares no other encoding.
    InvalidUtf8,
    /// Bytes that are not valid in the declared (or detected) encoding: a lone UTF-16
    /// surrogate, a file ending mid-character, a byte the encoding does not define. Never
    /// decoded to a replacement character.
    EncodingInvalid,
    /// A CSV row with a different number of fields than the header.
    CsvRaggedRow,
    /// A quoted CSV field still open at the end of the file: the upload was cut short.
    CsvUnterminatedQuote,
    /// A quote where RFC 4180 allows none: text after a closing quote (`"b"c`), or a quote inside
    /// an unquoted field (`a"b`). csv parsers disagree on what such a field holds, so ferry
    /// refuses to guess (unless the dataset says `quotes = "lenient"`).
    CsvStrayQuote,
    /// A CSV record longer than the dataset's `max_line_bytes`.
    CsvLineTooLong,
    /// Every name in the header row is a number: most likely a data row read as the header (a
    /// file whose first part was lost, or a headerless file in a dataset that expects one).
    CsvNumericHeader,
    /// Any other CSV parse failure.
    CsvSyntax,
    /// JSON that does not parse.
    JsonSyntax,
    /// JSON that parses but does not hold records (objects).
    JsonNotRecords,
    /// A JSON record names the same key twice (`{"a":1,"a":2}`): which value is meant is a guess.
    JsonDuplicateKey,
    /// A JSON record (an NDJSON line, or one element of an array) longer than `max_line_bytes`.
    JsonRecordTooLong,
    /// A row of a compact JSON file (arrays under a header row of names) with more or fewer
    /// values than the header names.
    JsonRowLength,
    /// XML that is not well-formed (an unclosed or mismatched tag, text outside the root, …).
    XmlSyntax,
    /// An XML file with no element at the dataset's `record_path` (or, by default, no child of
    /// the root element).
    XmlNoRecords,
    /// An XML entity ferry does not expand: an entity declared in a DTD (a "billion laughs"
    /// file), or a reference to one. DTDs and external entities are never read.
    XmlEntity,
    /// An XML record names the same child element twice (`<item>` in a list): which one is the
    /// column's value is a guess.
    XmlRepeatedElement,
    /// A child element of an XML record holds elements of its own, and the dataset is typed:
    /// its value would be markup, not a value of the column's type.
    XmlNestedElement,
    /// An XML record (or anything else in the file outside records) longer than `max_line_bytes`.
    XmlRecordTooLong,
    /// A fixed-width line shorter or longer than the layout (`line_length`, or the end of the
    /// last column), or longer than `max_line_bytes`.
    FixedLineLength,
    /// The trailer's record count (`trailer_count`) disagrees with the records in the file, or
    /// the trailer is missing or holds no number.
    FixedTrailerMismatch,
    /// A byte-counted fixed-width column (`unit = "bytes"`) starts or ends inside a multi-byte
    /// character.
    FixedSplitCharacter,
    /// A workbook that cannot be read: not a zip/OLE container, a damaged sheet, a password.
    XlsxCorrupt,
    /// The workbook has no sheet of the configured name (or no sheet at all).
    XlsxNoSheet,
    /// A workbook bigger than ferry reads into memory, or one whose parts expand past what
    /// ferry reads from them (a zip bomb).
    XlsxTooBig,
    /// A workbook cell (or a row's cells together, or a shared string) longer than
    /// `max_line_bytes`.
    XlsxCellTooBig,
    /// A NUL character in the text (or a `\u0000` escape in a JSON string): most tools cut the
    /// value there, and PostgreSQL cannot store it. Allowed with `allow_nul = true`.
    EncodingNul,
    /// The gzip stream is corrupt or truncated.
    GzipCorrupt,
    /// A member of an archive loaded as one unit failed: the archive is set aside whole.
    ArchiveMemberFailed,
    /// A member whose name would leave the folder (`..`, absolute, a drive), a link, a device
    /// or a name two members share: member names never become paths.
    ArchiveUnsafeMember,
    /// More bytes, a greater expansion or more members than the limits allow (a bomb).
    ArchiveTooBig,
    /// An archive inside an archive (one level is unpacked).
    ArchiveNested,
    /// An encrypted zip entry (ferry reads OpenPGP, not zip passwords).
    ArchiveEncrypted,
    /// A truncated or corrupt archive, or a member that does not match its checksum.
    ArchiveCorrupt,
    /// A zip compression method ferry does not read.
    ArchiveUnsupported,
    /// An OpenPGP file that is not signed where the dataset requires a signature.
    PgpUnsigned,
    /// A signature that does not verify with the partner's key (or made by another key).
    PgpBadSignature,
    /// Encrypted to a key ferry does not hold (or no key is configured).
    PgpNoKey,
    /// A malformed OpenPGP message, or one whose integrity check (MDC/AEAD) fails.
    PgpCorrupt,
    /// A column the dataset requires is missing from the file.
    SchemaMissingColumn,
    /// The file has a column the dataset does not declare, and the dataset refuses new columns.
    SchemaNewColumn,
    /// Several of the file's columns could be the same declared column (they differ only in case
    /// or surrounding spaces, and none matches exactly).
    SchemaAmbiguousColumn,
    /// A column name (header cell or JSON key) longer than ferry keeps (1 KiB).
    SchemaColumnNameTooLong,
    /// More columns than the store can hold in one table.
    SchemaTooManyColumns,
    /// The table the dataset names (`table = …`) cannot take it: it exists and does not fit, or
    /// holds another dataset, or the dataset stores elsewhere already.
    SchemaTable,
    /// A record failed validation (type, required, allowed values) and the file allows none.
    RecordInvalid,
    /// A record whose key columns are empty: it cannot be told apart from other records.
    RecordEmptyKey,
    /// With `on_key = "reject"`: a record whose key is already stored (by an earlier file, or
    /// earlier in the same file).
    RecordKeyExists,
    /// A value or record larger than the store accepts.
    RecordTooBig,
    /// A value the store cannot hold as it is (a NUL character in PostgreSQL text, a datetime
    /// with nanoseconds where PostgreSQL keeps microseconds, a date outside its range): storing
    /// it would change it.
    StoreUnsupportedValue,
    /// The dataset's key changed (or a key was added to a table with records) and the stored
    /// records hold duplicates, or records without a key, under the new definition: nothing is
    /// loaded into the table until `ferry rekey` resolves them.
    SchemaKeyConflict,
    /// More bad records than the dataset's `max_bad_records` allows.
    TooManyBadRecords,
    /// The file could not be read (I/O error) after every attempt.
    IoRead,
    /// The ledger could not be written for this file after every attempt.
    IoStore,
    /// The file matches no configured dataset and the config says `strict_datasets = true`
    /// (only for files already claimed; discovery leaves new ones where they are).
    NoDataset,
    /// A bug in ferry while processing this file; the file is kept for a retry after an upgrade.
    Internal,
    /// ferry stopped (crashed or was killed) `max_attempts` times while this file was in flight:
    /// it is set aside so it cannot stop the next start too.
    Poison,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Empty,
        Kind::Symlink,
        Kind::SpecialFile,
        Kind::InvalidUtf8,
        Kind::EncodingInvalid,
        Kind::CsvRaggedRow,
        Kind::CsvUnterminatedQuote,
        Kind::CsvStrayQuote,
        Kind::CsvLineTooLong,
        Kind::CsvNumericHeader,
        Kind::CsvSyntax,
        Kind::JsonSyntax,
        Kind::JsonNotRecords,
        Kind::JsonDuplicateKey,
        Kind::JsonRecordTooLong,
        Kind::JsonRowLength,
        Kind::XmlSyntax,
        Kind::XmlNoRecords,
        Kind::XmlEntity,
        Kind::XmlRepeatedElement,
        Kind::XmlNestedElement,
        Kind::XmlRecordTooLong,
        Kind::FixedLineLength,
        Kind::FixedTrailerMismatch,
        Kind::FixedSplitCharacter,
        Kind::XlsxCorrupt,
        Kind::XlsxNoSheet,
        Kind::XlsxTooBig,
        Kind::XlsxCellTooBig,
        Kind::EncodingNul,
        Kind::GzipCorrupt,
        Kind::ArchiveMemberFailed,
        Kind::ArchiveUnsafeMember,
        Kind::ArchiveTooBig,
        Kind::ArchiveNested,
        Kind::ArchiveEncrypted,
        Kind::ArchiveCorrupt,
        Kind::ArchiveUnsupported,
        Kind::PgpUnsigned,
        Kind::PgpBadSignature,
        Kind::PgpNoKey,
        Kind::PgpCorrupt,
        Kind::SchemaMissingColumn,
        Kind::SchemaNewColumn,
        Kind::SchemaAmbiguousColumn,
        Kind::SchemaColumnNameTooLong,
        Kind::SchemaTooManyColumns,
        Kind::SchemaTable,
        Kind::RecordInvalid,
        Kind::RecordEmptyKey,
        Kind::RecordKeyExists,
        Kind::RecordTooBig,
        Kind::StoreUnsupportedValue,
        Kind::SchemaKeyConflict,
        Kind::TooManyBadRecords,
        Kind::IoRead,
        Kind::IoStore,
        Kind::NoDataset,
        Kind::Internal,
        Kind::Poison,
    ];

    /// The stable string id stored in the ledger and in `.reason.json`.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Empty => "empty",
            Kind::Symlink => "symlink",
            Kind::SpecialFile => "special_file",
            Kind::InvalidUtf8 => "encoding.invalid_utf8",
            Kind::EncodingInvalid => "encoding.invalid",
            Kind::CsvRaggedRow => "csv.ragged_row",
            Kind::CsvUnterminatedQuote => "csv.unterminated_quote",
            Kind::CsvStrayQuote => "csv.stray_quote",
            Kind::CsvLineTooLong => "csv.line_too_long",
            Kind::CsvNumericHeader => "csv.numeric_header",
            Kind::CsvSyntax => "csv.syntax",
            Kind::JsonSyntax => "json.syntax",
            Kind::JsonNotRecords => "json.not_records",
            Kind::JsonDuplicateKey => "json.duplicate_key",
            Kind::JsonRecordTooLong => "json.record_too_long",
            Kind::JsonRowLength => "json.row_length",
            Kind::XmlSyntax => "xml.syntax",
            Kind::XmlNoRecords => "xml.no_records",
            Kind::XmlEntity => "xml.entity",
            Kind::XmlRepeatedElement => "xml.repeated_element",
            Kind::XmlNestedElement => "xml.nested_element",
            Kind::XmlRecordTooLong => "xml.record_too_long",
            Kind::FixedLineLength => "fixed.line_length",
            Kind::FixedTrailerMismatch => "fixed.trailer_mismatch",
            Kind::FixedSplitCharacter => "fixed.split_character",
            Kind::XlsxCorrupt => "xlsx.corrupt",
            Kind::XlsxNoSheet => "xlsx.no_sheet",
            Kind::XlsxTooBig => "xlsx.too_big",
            Kind::XlsxCellTooBig => "xlsx.cell_too_big",
            Kind::EncodingNul => "encoding.nul",
            Kind::GzipCorrupt => "gzip.corrupt",
            Kind::ArchiveMemberFailed => "archive.member_failed",
            Kind::ArchiveUnsafeMember => "archive.unsafe_member",
            Kind::ArchiveTooBig => "archive.too_big",
            Kind::ArchiveNested => "archive.nested",
            Kind::ArchiveEncrypted => "archive.encrypted",
            Kind::ArchiveCorrupt => "archive.corrupt",
            Kind::ArchiveUnsupported => "archive.unsupported",
            Kind::PgpUnsigned => "pgp.unsigned",
            Kind::PgpBadSignature => "pgp.bad_signature",
            Kind::PgpNoKey => "pgp.no_key",
            Kind::PgpCorrupt => "pgp.corrupt",
            Kind::SchemaMissingColumn => "schema.missing_column",
            Kind::SchemaNewColumn => "schema.new_column",
            Kind::SchemaAmbiguousColumn => "schema.ambiguous_column",
            Kind::SchemaColumnNameTooLong => "schema.column_name_too_long",
            Kind::SchemaTooManyColumns => "schema.too_many_columns",
            Kind::SchemaTable => "schema.table",
            Kind::RecordInvalid => "record.invalid",
            Kind::RecordEmptyKey => "record.empty_key",
            Kind::RecordKeyExists => "record.key_exists",
            Kind::SchemaKeyConflict => "schema.key_conflict",
            Kind::RecordTooBig => "record.too_big",
            Kind::StoreUnsupportedValue => "store.unsupported_value",
            Kind::TooManyBadRecords => "too_many_bad_records",
            Kind::IoRead => "io.read",
            Kind::IoStore => "io.store",
            Kind::NoDataset => "config.no_dataset",
            Kind::Internal => "internal",
            Kind::Poison => "poison",
        }
    }

    pub fn from_id(id: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.id() == id)
    }

    /// Whether the rejection is about a container itself (how it is packed, encrypted or
    /// signed) rather than about one of its members' content.
    pub fn is_container(self) -> bool {
        self.id().starts_with("archive.") || self.id().starts_with("pgp.")
    }

    /// Whether the rejection is about the file's content (retrying the same bytes under the same
    /// config cannot help) rather than about the environment.
    pub fn is_content(self) -> bool {
        !matches!(
            self,
            Kind::IoRead | Kind::IoStore | Kind::NoDataset | Kind::Internal | Kind::Poison
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// The step of a file's life that rejected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Claim,
    Read,
    Decode,
    Parse,
    Validate,
    Store,
}

impl Stage {
    pub fn id(self) -> &'static str {
        match self {
            Stage::Claim => "claim",
            Stage::Read => "read",
            Stage::Decode => "decode",
            Stage::Parse => "parse",
            Stage::Validate => "validate",
            Stage::Store => "store",
        }
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// Why a whole file was rejected, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub kind: Kind,
    pub stage: Stage,
    /// A sentence for a human: what is wrong and, where it helps, what to do.
    pub message: String,
    /// 1-based line in the (decoded) file, where known.
    pub line: Option<u64>,
    /// 0-based byte offset in the (decoded) file, where known.
    pub offset: Option<u64>,
    /// The column at fault, where known.
    pub field: Option<String>,
}

impl Reject {
    pub fn new(kind: Kind, stage: Stage, message: impl Into<String>) -> Reject {
        Reject {
            kind,
            stage,
            message: message.into(),
            line: None,
            offset: None,
            field: None,
        }
    }

    pub fn at_line(mut self, line: u64) -> Reject {
        self.line = Some(line);
        self
    }

    pub fn at_offset(mut self, offset: u64) -> Reject {
        self.offset = Some(offset);
        self
    }

    pub fn in_field(mut self, field: impl Into<String>) -> Reject {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Reject {}

/// Why one record was rejected (kept in the ledger and in `<name>.rejects.ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordReject {
    /// `record.invalid` (a value breaks its column's contract) or `record.empty_key`.
    pub kind: Kind,
    /// 1-based line (CSV, NDJSON) or record number (JSON array).
    pub line: u64,
    pub field: Option<String>,
    /// The offending value, truncated to a readable length.
    pub value: Option<String>,
    pub reason: String,
}

/// Values longer than this are cut in reject reports: enough to recognize, not enough to flood.
pub const MAX_VALUE_CHARS: usize = 80;

pub fn truncate_value(v: &str) -> String {
    if v.chars().count() <= MAX_VALUE_CHARS {
        v.to_string()
    } else {
        let mut s: String = v.chars().take(MAX_VALUE_CHARS).collect();
        s.push('…');
        s
    }
}

/// `"a", "b"`: column names as a reject message lists them.
pub fn name_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"s"` unless there is exactly one.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert!(seen.insert(k.id()), "duplicate id {}", k.id());
            assert_eq!(Kind::from_id(k.id()), Some(*k));
        }
    }

    #[test]
    fn long_values_are_cut() {
        let long = "é".repeat(200);
        let cut = truncate_value(&long);
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS + 1);
        assert_eq!(truncate_value("short"), "short");
    }
}
