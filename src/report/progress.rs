//! The progress bar of `ferry run` on a terminal: bytes read of the files found (so it moves
//! during one big file), with the files finished beside it. It follows the process-wide
//! counters from a thread of its own, so the pipeline knows nothing of it.

use crate::events::counters;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Progress {
    bar: indicatif::ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar over `files` files of `bytes` bytes, counting what is read and finished from now
    /// on.
    pub fn start(files: u64, bytes: u64) -> Progress {
        let bar = indicatif::ProgressBar::new(bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {binary_bytes}/{binary_total_bytes} {msg} [{elapsed_precise}] \
                 {wide_bar} {binary_bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bar.clone(), stop.clone());
        let c = counters();
        let (base_files, base_half) = (
            c.finished.load(Ordering::Relaxed),
            c.half_bytes_read.load(Ordering::Relaxed),
        );
        let thread = std::thread::Builder::new()
            .name("ferry-progress".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let done = c.finished.load(Ordering::Relaxed) - base_files;
                    let read = (c.half_bytes_read.load(Ordering::Relaxed) - base_half) / 2;
                    // Files recovered from processing/ were not in the count.
                    if read > b.length().unwrap_or(0) {
                        b.set_length(read);
                    }
                    b.set_position(read);
                    b.set_message(format!("· {done}/{} files", files.max(done)));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        Progress { bar, stop, thread }
    }

    /// Clears the bar (the summary follows).
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
