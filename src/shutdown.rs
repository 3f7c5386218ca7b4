//! Shutdown as a value: the daemon loop asks it whether to stop; the signal handler flips it;
//! tests flip it directly.
//!
//! SIGHUP asks `ferry watch` to read its config again (`take_reload`).
//!
//! SIGINT/SIGTERM: the first asks for a graceful stop (stop claiming, finish the files in flight);
//! a second one exits at once with 130 — still safe, since whatever was in flight is recovered
//! from `processing/` on the next start.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst) || SIGNALS.load(Ordering::SeqCst) > 0
    }
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Whether SIGINT or SIGTERM arrived (for work that must end at once when asked, wherever it
/// runs).
pub fn signalled() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}
/// Set by SIGHUP: re-read the config (`ferry watch`).
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Whether a SIGHUP asked for the config to be read again (without taking the request).
pub fn reload_requested() -> bool {
    RELOAD.load(Ordering::SeqCst)
}

/// Takes the reload request: true once per SIGHUP (several before a reload count as one).
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic add, and `_exit` on the second signal.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: `_exit` is async-signal-safe; nothing else is touched.
        unsafe { libc::_exit(130) };
    }
}

/// Routes SIGINT and SIGTERM to every `Shutdown` of this process.
pub fn install_signal_handlers() {
    // SAFETY: installs a handler that only touches an atomic and calls `_exit`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// Routes SIGHUP to `reload_requested` (the daemon re-reads its config) instead of ending the
/// process, as a daemon's SIGHUP does.
pub fn install_reload_handler() {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_hangup as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut());
    }
}
