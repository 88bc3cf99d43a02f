//! Handles that count a live stream or a long-poll while it is open, and how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{Disconnect, GapReason, Label, Metrics, Transport};

impl Metrics {
    /// Counts one live stream over `transport` until the returned handle is dropped, and then
    /// its end.
    pub fn live_stream(self: &Arc<Self>, transport: Transport) -> LiveStream {
        self.live_streams.get(transport).inc();
        LiveStream {
            metrics: self.clone(),
            transport,
            ending: AtomicU8::new(NOT_ENDED),
        }
    }

    /// Counts one long-poll (a page request that may wait) while the returned handle lives.
    pub fn long_poll(self: &Arc<Self>) -> LongPoll {
        self.live_streams.get(Transport::LongPoll).inc();
        LongPoll(self.clone())
    }
}

/// One long-poll in progress.
pub struct LongPoll(Arc<Metrics>);

impl LongPoll {
    /// The page answered `events` events.
    pub fn sent(&self, events: usize) {
        self.0
            .events_sent
            .get(Transport::LongPoll)
            .inc_by(events as u64);
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.live_streams.get(Transport::LongPoll).dec();
    }
}

const NOT_ENDED: u8 = u8::MAX;

/// One open live stream: counted in `starcite_live_streams` while it exists, and by the
/// reason it ended when dropped (`client` unless told otherwise).
pub struct LiveStream {
    metrics: Arc<Metrics>,
    transport: Transport,
    ending: AtomicU8,
}

impl LiveStream {
    /// `events` events were written to the reader.
    pub fn sent(&self, events: usize) {
        self.metrics
            .events_sent
            .get(self.transport)
            .inc_by(events as u64);
    }

    /// The reader was told of a gap.
    pub fn gap(&self, reason: GapReason) {
        self.metrics.gap(reason);
    }

    /// Says why the stream ends; the first reason given is the one counted.
    pub fn ends(&self, reason: Disconnect) {
        let _ = self.ending.compare_exchange(
            NOT_ENDED,
            reason.index() as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.metrics.live_streams.get(self.transport).dec();
        let ending = self.ending.load(Ordering::Relaxed);
        let reason = Disconnect::ALL
            .get(usize::from(ending))
            .copied()
            .unwrap_or(Disconnect::Client);
        self.metrics.disconnects.get(reason).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::State;

    #[test]
    fn live_streams_count_while_open_and_end_with_their_first_reason() {
        let metrics = Arc::new(Metrics::new());
        let stream = metrics.live_stream(Transport::WebSocket);
        let other = metrics.live_stream(Transport::Sse);
        stream.sent(3);
        let text = metrics.render(State::default());
        assert!(text.contains("starcite_live_streams{transport=\"websocket\"} 1"));
        assert!(text.contains("starcite_tail_events_sent_total{transport=\"websocket\"} 3"));
        stream.ends(Disconnect::SlowReader);
        stream.ends(Disconnect::Shutdown);
        drop(stream);
        drop(other);
        let text = metrics.render(State::default());
        assert!(text.contains("starcite_live_streams{transport=\"websocket\"} 0"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"slow_reader\"} 1"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"shutdown\"} 0"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"client\"} 1"));
    }
}
