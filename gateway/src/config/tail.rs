//! How live streams (WebSocket and SSE tails) are paced and bounded.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct TailConfig {
    /// How often an idle tail sends a WebSocket ping (or an SSE comment).
    pub ping_interval: Duration,
    /// How many frames one live reader may have waiting.
    pub buffer: usize,
    /// How long a reader may leave its buffer full before it is disconnected (close code 4002)
    /// to resume from its cursor.
    pub stall_timeout: Duration,
    /// Live streams one token holder may have open at once through this gateway (with
    /// authentication on).
    pub tails_per_token: usize,
}

impl Default for TailConfig {
    fn default() -> TailConfig {
        TailConfig {
            ping_interval: Duration::from_secs(15),
            buffer: 1024,
            stall_timeout: Duration::from_secs(10),
            tails_per_token: 100,
        }
    }
}
