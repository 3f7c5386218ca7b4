//! `Chunk`: a batch of rows, the unit that flows from the workers to the writer.
//!
//! A chunk holds its rows as cells over one text buffer, so parsing a record costs one copy of
//! its bytes and no allocation per field. Stages edit the last row in place (narrowing a span to
//! trim it, replacing a text cell by an integer) or drop it. Nothing here knows about files,
//! formats or SQLite.

/// One value of a row. Text is a span of the chunk's text buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Null,
    Text { start: u32, end: u32 },
    Int(i64),
    Real(f64),
}

/// A chunk is sent when it reaches either bound, whichever comes first.
pub const CHUNK_ROWS: usize = 4096;
pub const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct Chunk {
    /// Cells per row: the file's column count when the chunk was started.
    pub width: usize,
    pub text: String,
    pub cells: Vec<Cell>,
    /// Per row: the line (CSV, NDJSON) or record number (JSON) it came from.
    pub lines: Vec<u64>,
    /// Per row: the hash of its record key, when the dataset has a key (else empty).
    pub keys: Vec<i64>,
}

impl Chunk {
    pub fn new(width: usize) -> Chunk {
        Chunk {
            width,
            text: String::new(),
            cells: Vec::new(),
            lines: Vec::new(),
            keys: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.lines.len() >= CHUNK_ROWS || self.text.len() >= CHUNK_BYTES
    }

    pub fn row(&self, i: usize) -> &[Cell] {
        &self.cells[i * self.width..(i + 1) * self.width]
    }

    /// The text of a cell, if it is text.
    pub fn text(&self, c: Cell) -> Option<&str> {
        match c {
            Cell::Text { start, end } => Some(&self.text[start as usize..end as usize]),
            _ => None,
        }
    }

    /// Appends a row: `src` is the row's text, `spans` index into it (`None` = null). Fails only
    /// when the chunk's text would pass 4 GiB, which bounded chunks never reach in practice.
    pub fn push_row(&mut self, line: u64, src: &str, spans: &[Option<(usize, usize)>]) -> bool {
        debug_assert_eq!(spans.len(), self.width);
        let base = self.text.len();
        if base + src.len() > u32::MAX as usize {
            return false;
        }
        self.text.push_str(src);
        self.cells.extend(spans.iter().map(|s| match *s {
            None => Cell::Null,
            Some((a, b)) => Cell::Text {
                start: (base + a) as u32,
                end: (base + b) as u32,
            },
        }));
        self.lines.push(line);
        true
    }

    /// Appends a row whose cells a stage built over `text` (see `push_text`).
    pub fn push_cells(&mut self, line: u64, cells: &[Cell]) {
        debug_assert_eq!(cells.len(), self.width);
        self.cells.extend_from_slice(cells);
        self.lines.push(line);
    }

    /// Appends a row's source text, returning its offset in the buffer; `None` past 4 GiB.
    pub fn push_text(&mut self, src: &str) -> Option<u32> {
        let base = self.text.len();
        if base + src.len() > u32::MAX as usize / 2 {
            return None;
        }
        self.text.push_str(src);
        Some(base as u32)
    }

    /// Appends text to the buffer and returns a cell for it (for stages that rewrite a value).
    pub fn alloc_text(text: &mut String, s: &str) -> Cell {
        let start = text.len() as u32;
        text.push_str(s);
        Cell::Text {
            start,
            end: text.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_share_one_buffer() {
        let mut c = Chunk::new(2);
        assert!(c.push_row(2, "ab", &[Some((0, 1)), Some((1, 2))]));
        assert!(c.push_row(3, "x", &[None, Some((0, 1))]));
        assert_eq!(c.rows(), 2);
        assert_eq!(c.text(c.row(0)[1]), Some("b"));
        assert_eq!(c.row(1)[0], Cell::Null);
        assert_eq!(c.text(c.row(1)[1]), Some("x"));
    }
}
