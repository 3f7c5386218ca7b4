//! Owner liveness across hosts: leases in `ferry_owners`.
//!
//! A process on the same machine (same boot, same pid namespace) that is gone is dead at once,
//! without waiting for its lease: a `kill -9` is recovered by the next start as quickly as with
//! SQLite's lock files. Everywhere else only the lease decides.
//!
//! Hosts share the spool over a network mount, where a lock file says nothing about a host that
//! died or lost its network. So each owner of claims holds a lease in the database: a row whose
//! `expires_at` (database time) a heartbeat thread pushes forward every third of the lease. An
//! owner whose lease lapsed is dead: one other process takes it over (`adopted_by`, decided by
//! one `INSERT … ON CONFLICT … WHERE` so two recoverers never both win) and recovers its claims.
//!
//! Fencing: the writer's group transaction checks its own lease when it starts and again right
//! before `COMMIT`, that time share-locking its owner row (`PgIngest::fence`); a takeover
//! rewrites that row, so it waits for the commit and then sees what the group committed (its
//! recovery places those files without loading them again). A writer frozen while holding that
//! lock is cut off by the server after `idle_in_transaction_session_timeout` (one lease). A
//! process whose lease lapsed — it lost the database, or was frozen, for longer than the lease
//! — stops claiming (`Alive::alive` turns false) and commits nothing more under that identity;
//! `ferry watch` starts again with a new one.
//!
//! Recovery time of a dead host's claims: at most one lease (default 15 s, `[store] lease`)
//! after its last heartbeat, plus the interval at which live daemons look for dead owners (a
//! third of the lease).

use super::Target;
use crate::spool::{Alive, Liveness};
use anyhow::{Context, Result};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Owner leases in the store.
pub struct Leases {
    target: Target,
    conn: Mutex<Client>,
}

impl Leases {
    pub fn open(target: &Target) -> Result<Leases> {
        Ok(Leases {
            target: target.clone(),
            conn: Mutex::new(target.open()?),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Client> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lease length as an SQL interval.
fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Where a pid means the same process as here: this boot of the kernel and this pid namespace.
fn local_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}/{ns}", boot.trim())
}

/// Whether a process of this pid namespace exists.
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Liveness for Leases {
    fn register(&self, token: &str) -> Result<Box<dyn Alive>> {
        let ttl = self.target.lease;
        self.conn()
            .execute(
                "INSERT INTO ferry_owners (token, host, local_id, pid, expires_at) \
                 VALUES ($1, $2, $3, $4, now() + $5::text::interval)",
                &[
                    &token,
                    &host(),
                    &local_id(),
                    &(std::process::id() as i32),
                    &interval(ttl),
                ],
            )
            .context("registering this process's lease")?;
        let state = Arc::new(State {
            alive: AtomicBool::new(true),
            stop: Mutex::new(false),
            wake: std::sync::Condvar::new(),
        });
        let beat = {
            let (state, target, token) = (state.clone(), self.target.clone(), token.to_string());
            std::thread::Builder::new()
                .name("ferry-lease".into())
                .spawn(move || heartbeat(&target, &token, &state))?
        };
        Ok(Box::new(Lease {
            token: token.to_string(),
            target: self.target.clone(),
            state,
            beat: Some(beat),
        }))
    }

    fn take_if_dead(&self, token: &str, me: &str) -> Result<Option<Box<dyn Send>>> {
        // Dead: its lease lapsed, it is a process of this machine that is gone, or it never had
        // a lease (no row: it ended, leaving a file it could not place). Taken over only if
        // nobody alive is recovering it; one statement decides, so two recoverers never both
        // win.
        let gone_here = self.gone_here(token)?;
        // A process that was recovering it may have died too (a crash during recovery): it
        // is judged the same way, so its own death does not hold the claims for a lease.
        let adopter: Option<String> = self
            .conn()
            .query_opt(
                "SELECT adopted_by FROM ferry_owners WHERE token = $1",
                &[&token],
            )?
            .and_then(|r| r.get(0));
        let adopter_gone = match &adopter {
            Some(a) => self.gone_here(a)?,
            None => false,
        };
        let won = self.conn().query_opt(
            "INSERT INTO ferry_owners AS o (token, host, pid, expires_at, adopted_by) \
             VALUES ($1, '', 0, '-infinity', $2) \
             ON CONFLICT (token) DO UPDATE SET adopted_by = $2, expires_at = '-infinity' \
             WHERE (o.expires_at < now() OR $3) AND (o.adopted_by IS NULL \
                 OR (o.adopted_by = $4 AND $5) OR NOT EXISTS ( \
                 SELECT 1 FROM ferry_owners a \
                 WHERE a.token = o.adopted_by AND a.expires_at > now() AND a.adopted_by IS NULL)) \
             RETURNING token",
            &[
                &token,
                &me,
                &gone_here,
                &adopter.unwrap_or_default(),
                &adopter_gone,
            ],
        )?;
        if won.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(Adopted {
            target: self.target.clone(),
            token: token.to_string(),
            me: me.to_string(),
        })))
    }

    fn sweep(&self, me: &str, claimed: &[String]) -> Result<usize> {
        // A lease that lapsed long ago, of an owner that left no claims, and that nobody is
        // recovering: an owner without a row is dead anyway, so the row says nothing more.
        let n = self.conn().execute(
            "DELETE FROM ferry_owners WHERE token <> $1 AND NOT (token = ANY($2)) \
             AND adopted_by IS NULL AND expires_at < now() - $3::text::interval",
            &[&me, &claimed, &interval(self.target.lease)],
        )?;
        Ok(n as usize)
    }

    fn any_dead(&self, tokens: &[String]) -> Result<bool> {
        let here = local_id();
        let rows = self.conn().query(
            "SELECT local_id, pid FROM ferry_owners WHERE token = ANY($1) \
             AND expires_at > now() AND adopted_by IS NULL",
            &[&tokens],
        )?;
        let alive = rows
            .iter()
            .filter(|r| r.get::<_, String>(0) != here || pid_alive(r.get(1)))
            .count();
        Ok(alive < tokens.len())
    }
}

impl Leases {
    /// Whether the owner is a process of this machine (same boot, same pid namespace) that no
    /// longer exists.
    fn gone_here(&self, token: &str) -> Result<bool> {
        let row = self.conn().query_opt(
            "SELECT local_id, pid FROM ferry_owners WHERE token = $1",
            &[&token],
        )?;
        Ok(row.is_some_and(|r| r.get::<_, String>(0) == local_id() && !pid_alive(r.get(1))))
    }
}

struct State {
    alive: AtomicBool,
    stop: Mutex<bool>,
    wake: std::sync::Condvar,
}

/// This process's lease, renewed until dropped.
struct Lease {
    token: String,
    target: Target,
    state: Arc<State>,
    beat: Option<JoinHandle<()>>,
}

impl Alive for Lease {
    fn alive(&self) -> bool {
        self.state.alive.load(Ordering::SeqCst)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.state.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.state.wake.notify_all();
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        // A clean exit ends the lease at once, so nobody waits it out (claims left behind — a
        // file that could not be placed — are then recovered at the next look).
        if let Ok(mut c) = self.target.connect() {
            let _ = c.execute(
                "DELETE FROM ferry_owners WHERE token = $1 AND adopted_by IS NULL",
                &[&self.token],
            );
        }
    }
}

/// Pushes the lease forward every third of its length. A renewal the database refuses (the
/// lease lapsed and another process took over) or that fails for longer than the lease ends
/// this identity: `alive` turns false for good.
fn heartbeat(target: &Target, token: &str, state: &State) {
    let ttl = target.lease;
    let every = ttl / 3;
    let mut conn: Option<Client> = None;
    let mut renewed = Instant::now();
    loop {
        {
            let stop = state.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = state
                .wake
                .wait_timeout_while(stop, every, |s| !*s)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = target.connect().ok();
        }
        let result = conn.as_mut().map(|c| {
            c.query_opt(
                "UPDATE ferry_owners SET expires_at = now() + $2::text::interval \
                 WHERE token = $1 AND expires_at > now() AND adopted_by IS NULL RETURNING 1",
                &[&token, &interval(ttl)],
            )
        });
        match result {
            Some(Ok(Some(_))) => renewed = Instant::now(),
            Some(Ok(None)) => {
                tracing::error!(
                    owner = token,
                    "this process's lease lapsed and its claims may be taken over by another \
                     process; it stops claiming"
                );
                state.alive.store(false, Ordering::SeqCst);
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew this process's lease; trying again");
                conn = None;
            }
            None => tracing::warn!("cannot reach the store to renew this process's lease"),
        }
        // Without a renewal for a whole lease, other hosts may already count us dead.
        if renewed.elapsed() >= ttl.saturating_sub(every / 2) {
            tracing::error!(
                owner = token,
                "the store could not be reached for the length of the lease; this process \
                 stops claiming"
            );
            state.alive.store(false, Ordering::SeqCst);
            return;
        }
    }
}

/// A dead owner taken over for recovery; its row goes once the recovery is done.
struct Adopted {
    target: Target,
    token: String,
    me: String,
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if let Ok(mut c) = self.target.connect() {
            let _ = c.execute(
                "DELETE FROM ferry_owners WHERE token = $1 AND adopted_by = $2",
                &[&self.token, &self.me],
            );
        }
    }
}
