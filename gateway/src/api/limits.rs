//! A per-tenant append rate: a token bucket per tenant. The number of live streams per token
//! holder is `live::TailQuota`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keeps at most this many buckets; a full bucket is the same as none, so those go first.
const MAX_BUCKETS: usize = 100_000;

pub struct AppendRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl AppendRate {
    pub fn new(per_second: u32, burst: u32) -> AppendRate {
        AppendRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` appends from `tenant`'s bucket, or says how long until they are
    /// available. A batch larger than the burst costs the whole burst.
    pub fn take(&self, tenant: &str, events: usize) -> Result<(), Duration> {
        let cost = (events as f64).clamp(1.0, self.burst);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(tenant) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| refill(bucket, now, per_second, burst) < burst);
        }
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let tokens = refill(bucket, now, self.per_second, self.burst);
        if tokens >= cost {
            bucket.tokens = tokens - cost;
            return Ok(());
        }
        Err(Duration::from_secs_f64((cost - tokens) / self.per_second))
    }
}

/// Adds what accrued since the last refill, up to the burst, and returns the level.
fn refill(bucket: &mut Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let accrued = now.duration_since(bucket.refilled).as_secs_f64() * per_second;
    bucket.tokens = (bucket.tokens + accrued).min(burst);
    bucket.refilled = now;
    bucket.tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_tenant() {
        let rate = AppendRate::new(1, 3);
        for _ in 0..3 {
            assert!(rate.take("a", 1).is_ok());
        }
        let wait = rate.take("a", 1).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another tenant has its own bucket.
        assert!(rate.take("b", 1).is_ok());
    }
}
