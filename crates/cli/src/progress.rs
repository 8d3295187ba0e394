//! A one-line progress display on a terminal (stderr), updated five times a second.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tsunagi_adapter::Progress;

/// Counts progress; a background thread draws it when stderr is a terminal.
#[derive(Default)]
pub(crate) struct TerminalProgress {
    files: AtomicU64,
    resources: AtomicU64,
    done: AtomicBool,
}

impl Progress for TerminalProgress {
    fn advance(&self, files_seen: u64, resources_written: u64) {
        self.files.fetch_add(files_seen, Ordering::Relaxed);
        self.resources
            .fetch_add(resources_written, Ordering::Relaxed);
    }
}

impl TerminalProgress {
    /// Starts drawing (only on a terminal) and returns the handle to stop it.
    pub(crate) fn start(
        label: String,
        enabled: bool,
    ) -> (Arc<Self>, Option<std::thread::JoinHandle<()>>) {
        let progress = Arc::new(Self::default());
        if !enabled || !std::io::stderr().is_terminal() {
            return (progress, None);
        }
        let shared = progress.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            while !shared.done.load(Ordering::Relaxed) {
                let files = shared.files.load(Ordering::Relaxed);
                let resources = shared.resources.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64().max(0.001);
                let mut stderr = std::io::stderr();
                let _ = write!(
                    stderr,
                    "\r{label}: {files} files, {resources} resources ({:.0} resources/s) ",
                    resources as f64 / seconds
                );
                let _ = stderr.flush();
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = writeln!(std::io::stderr());
        });
        (progress, Some(handle))
    }

    /// Stops drawing.
    pub(crate) fn finish(&self, handle: Option<std::thread::JoinHandle<()>>) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
