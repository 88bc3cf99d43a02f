//! What one request, and one tenant's stream of appends, may cost a gateway.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Appends per second one tenant may make through this gateway (`None`: unlimited).
    pub append_rate: Option<u32>,
    /// How many appends a tenant may make at once above its rate (defaults to the rate).
    pub append_burst: Option<u32>,
    /// How many requests one producer socket may have unanswered before the gateway stops
    /// reading it.
    pub produce_window: usize,
    /// How long a Durable Streams long-poll read waits for new messages, and how often an idle
    /// SSE read says it is still up to date.
    pub long_poll_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            append_rate: None,
            append_burst: None,
            produce_window: 256,
            long_poll_timeout: Duration::from_secs(30),
        }
    }
}
