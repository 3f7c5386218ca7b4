//! Record ids for PostgreSQL, handed out so exports never skip a record.
//!
//! Several hosts commit concurrently, so ids taken from a sequence become visible out of order:
//! a lower id can commit after a higher one, and "everything after the watermark" would skip
//! it. So ids are taken in blocks (`ferry_record_ids` counts in steps of `ID_BLOCK`), and each
//! block is recorded in `ferry_id_blocks` with the transaction that stores records under it —
//! recorded and committed on a side connection *before* any id of it is used, under a shared
//! advisory lock an export takes exclusively to read the blocks. An export then knows that no
//! id below the first block of a transaction still in progress can appear later, and exports
//! only below that (`horizon`). A block serves one group transaction only: whatever is left of
//! it when the group ends is never used.

use super::migrations::{ID_BLOCK, LOCK_CLASS, LOCK_IDS};
use super::session::Session;
use super::Target;
use anyhow::{Context, Result};
use postgres::Client;

/// The writer's id blocks, and the side connection that records them.
pub struct Ids {
    target: Target,
    side: Option<Client>,
    /// The open group's transaction id (taken on first use).
    txid: Option<i64>,
    /// The current block: next id and how many are left.
    next: i64,
    left: u64,
    /// Ids per block (the sequence's step, `ID_BLOCK` for a store this version created).
    block: u64,
}

impl Ids {
    pub fn new(target: &Target) -> Ids {
        Ids {
            target: target.clone(),
            side: None,
            txid: None,
            next: 0,
            left: 0,
            block: ID_BLOCK as u64,
        }
    }

    /// The group ended (committed or rolled back): its blocks are spent.
    pub fn end_group(&mut self) {
        self.txid = None;
        self.left = 0;
    }

    /// What is left of the current block is never used (the sequence was moved past it).
    pub fn spend_block(&mut self) {
        self.left = 0;
    }

    /// `n` ids in row order, as runs of (first, count). `writer` is the group's session (used
    /// once per group, for its transaction id).
    pub fn take(&mut self, writer: &mut Session, n: u64) -> Result<Vec<(i64, u64)>> {
        let mut runs = Vec::new();
        let mut need = n;
        while need > 0 {
            if self.left == 0 {
                self.reserve(writer)?;
            }
            let k = need.min(self.left);
            runs.push((self.next, k));
            self.next += k as i64;
            self.left -= k;
            need -= k;
        }
        Ok(runs)
    }

    fn reserve(&mut self, writer: &mut Session) -> Result<()> {
        let txid = match self.txid {
            Some(t) => t,
            None => {
                let t: i64 = writer
                    .get()?
                    .query_one("SELECT pg_current_xact_id()::text::bigint", &[])?
                    .get(0);
                self.txid = Some(t);
                t
            }
        };
        if self.side.is_none() {
            let mut side = self.target.connect()?;
            // The block must be visible before its ids are used, not durable: the group that
            // uses it commits later, and its (durable) commit makes everything before it in the
            // log durable too.
            side.batch_execute("SET synchronous_commit = off")?;
            // The block size is the sequence's step, whatever version of ferry created it.
            let step: i64 = side
                .query_one(
                    "SELECT increment_by FROM pg_sequences \
                     WHERE sequencename = 'ferry_record_ids' AND schemaname = current_schema()",
                    &[],
                )
                .context("reading the record id sequence")?
                .get(0);
            self.block = step as u64;
            self.side = Some(side);
        }
        let side = self.side.as_mut().expect("just connected");
        let first = (|| -> Result<i64> {
            let mut tx = side.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared($1, $2)",
                &[&LOCK_CLASS, &LOCK_IDS],
            )?;
            let first: i64 = tx
                .query_one(
                    "INSERT INTO ferry_id_blocks (first, txid) \
                     SELECT nextval('ferry_record_ids'), $1::text::xid8 RETURNING first",
                    &[&txid.to_string()],
                )?
                .get(0);
            tx.commit()?;
            Ok(first)
        })();
        let first = match first {
            Ok(f) => f,
            Err(e) => {
                // The side connection may be broken: a fresh one next time.
                self.side = None;
                return Err(e.context("reserving record ids"));
            }
        };
        self.next = first;
        self.left = self.block;
        Ok(())
    }
}

/// The lowest id that may still appear (the first block of a transaction in progress), or
/// `i64::MAX` when none is in progress. Blocks of finished transactions are dropped. `c` must
/// not be inside a transaction.
pub fn horizon(c: &mut Client) -> Result<i64> {
    let mut tx = c.transaction()?;
    // Waits for blocks being recorded right now; a block recorded after this returns is above
    // every id in use now (the sequence only grows).
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_IDS],
    )?;
    tx.execute(
        "DELETE FROM ferry_id_blocks WHERE pg_xact_status(txid) IS DISTINCT FROM 'in progress'",
        &[],
    )?;
    let h: Option<i64> = tx
        .query_one("SELECT min(first) FROM ferry_id_blocks", &[])?
        .get(0);
    tx.commit().context("reading the export horizon")?;
    Ok(h.unwrap_or(i64::MAX))
}
