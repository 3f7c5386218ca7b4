//! The progress bar of `ferry run` on a terminal. It follows the process-wide event counters
//! from a thread of its own, so the pipeline knows nothing of it.

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
    /// A bar over `files` files, counting those finished from now on.
    pub fn start(files: u64) -> Progress {
        let bar = indicatif::ProgressBar::new(files);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} files [{elapsed_precise}] {wide_bar} {eta}",
            )
            .expect("valid template"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bar.clone(), stop.clone());
        let base = counters().finished.load(Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("ferry-progress".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    b.set_position(counters().finished.load(Ordering::Relaxed) - base);
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
