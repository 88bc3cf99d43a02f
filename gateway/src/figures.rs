//! What this gateway has done since it started, for the admin console's system page.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

pub struct Figures {
    pub started: Instant,
    open_tails: AtomicUsize,
    appends: AtomicU64,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            started: Instant::now(),
            open_tails: AtomicUsize::new(0),
            appends: AtomicU64::new(0),
        }
    }
}

impl Figures {
    pub fn appended(&self, events: usize) {
        self.appends.fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    pub fn open_tails(&self) -> usize {
        self.open_tails.load(Ordering::Relaxed)
    }

    /// Counts one open tail (WebSocket or SSE) until the guard is dropped.
    pub fn tail_opened(self: &Arc<Self>) -> OpenTail {
        self.open_tails.fetch_add(1, Ordering::Relaxed);
        OpenTail(self.clone())
    }
}

pub struct OpenTail(Arc<Figures>);

impl Drop for OpenTail {
    fn drop(&mut self) {
        self.0.open_tails.fetch_sub(1, Ordering::Relaxed);
    }
}
