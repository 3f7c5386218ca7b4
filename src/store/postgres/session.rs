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

/// The size of the messages a chunk's rows are sent in. The connection writes to its socket only
/// while a call on it is under way (the client has no thread of its own), and a message handed
/// over waits in its queue until the next call: a chunk sent as one message would reach the
/// server only when the next chunk is sent, so the server would sit idle while the writer
/// prepares that one, and the writer wait while the server stores this one. In pieces, each
/// piece's call pushes the ones before it to the socket, and all but the last piece are with the
/// server (or in the socket's buffers) by the time the writer turns to the next chunk.
const PIECE: usize = 32 << 10;

/// Hands `tuples` to the copy in `PIECE`-sized messages (see there).
fn send_pieces(w: &mut CopyInWriter<'static>, tuples: &[u8]) -> std::io::Result<()> {
    for piece in tuples.chunks(PIECE) {
        w.write_all(piece)?;
        w.flush()?;
    }
    Ok(())
}

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
        let sent = send_pieces(&mut open.w, tuples);
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
