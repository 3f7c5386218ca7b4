//! The writer's session: its connection, and the binary `COPY` of the current file kept open
//! across chunks.
//!
//! A file's chunks for an unkeyed table go into one `COPY … FROM STDIN (FORMAT binary)` that
//! stays open while the writer waits for the next chunk: the server stores rows while ferry
//! receives and encodes the next ones, instead of the two taking turns, and a big file costs one
//! statement instead of one per chunk. Any other use of the connection ends the copy first
//! (`Session::get`), so statements and the copy never interleave; an error in the copied data
//! surfaces there, before anything else of the transaction runs.

use anyhow::{Context, Result};
use postgres::{Client, CopyInWriter};
use std::io::Write;

/// A connection with at most one open copy.
pub struct Session {
    // Declared first: it borrows `*client` and must be dropped before it.
    copy: Option<OpenCopy>,
    client: Box<Client>,
}

struct OpenCopy {
    /// `table (columns…)`: what it copies into.
    into: String,
    rows: u64,
    w: CopyInWriter<'static>,
}

impl Session {
    pub fn new(client: Client) -> Session {
        Session {
            copy: None,
            client: Box::new(client),
        }
    }

    /// The connection, for a statement: an open copy is finished first (its error, if the
    /// server refused the data, is returned here).
    pub fn get(&mut self) -> Result<&mut Client> {
        self.finish_copy()?;
        Ok(&mut self.client)
    }

    /// The connection after abandoning an open copy (the server discards it): for `ROLLBACK`.
    pub fn abandon(&mut self) -> &mut Client {
        self.copy = None;
        &mut self.client
    }

    /// Ends the open copy, if any: sends the trailer and checks the server stored every row.
    pub fn finish_copy(&mut self) -> Result<()> {
        let Some(mut open) = self.copy.take() else {
            return Ok(());
        };
        let mut trailer = Vec::new();
        super::binary::trailer(&mut trailer);
        open.w.write_all(&trailer)?;
        let stored = open
            .w
            .finish()
            .with_context(|| format!("copying rows into {}", open.into))?;
        anyhow::ensure!(
            stored == open.rows,
            "the store took {stored} of {} rows copied into {}",
            open.rows,
            open.into
        );
        Ok(())
    }

    /// Adds binary COPY tuples (`rows` of them, without header or trailer) to the copy into
    /// `into`, starting it (and ending another) as needed.
    pub fn copy_rows(&mut self, into: &str, tuples: &[u8], rows: u64) -> Result<()> {
        if self.copy.as_ref().is_none_or(|o| o.into != into) {
            self.finish_copy()?;
            let w = self
                .client
                .copy_in(&format!("COPY {into} FROM STDIN (FORMAT binary)"))?;
            // SAFETY: `w` borrows the boxed client, whose address never changes while the
            // session lives. The session never touches `client` while `copy` is `Some`: every
            // other access goes through `get` (which finishes the copy) or `abandon` (which drops
            // it) first, and `copy` is declared before `client`, so it is dropped first.
            let w: CopyInWriter<'static> = unsafe { std::mem::transmute(w) };
            let mut open = OpenCopy {
                into: into.to_string(),
                rows: 0,
                w,
            };
            let mut header = Vec::new();
            super::binary::header(&mut header);
            open.w.write_all(&header)?;
            self.copy = Some(open);
        }
        let open = self.copy.as_mut().expect("opened above");
        // Handed to the server now, so it stores these rows while the next ones are prepared.
        let sent = open.w.write_all(tuples).and_then(|()| open.w.flush());
        if let Err(e) = sent {
            // The server refused the copy (bad data) or the connection broke: the copy is over.
            // Its own error says why, if it has one; the connection is free for a rollback.
            let open = self.copy.take().expect("open");
            return Err(match open.w.finish() {
                Err(server) => {
                    anyhow::Error::new(server).context(format!("copying rows into {}", open.into))
                }
                Ok(_) => anyhow::Error::new(e).context(format!("copying rows into {}", open.into)),
            });
        }
        open.rows += rows;
        Ok(())
    }
}
