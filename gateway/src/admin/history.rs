//! The system page's charts: a sampler task reads the `Metrics` totals every `INTERVAL` and
//! keeps the rates between two readings in a fixed ring covering the last `WINDOW`. Requests
//! pay nothing for it: the sampler only reads counters the metrics keep anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{Metrics, Totals};

/// How often the sampler reads the metrics (and the page refreshes its charts).
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How far back the charts go.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
const CAPACITY: usize = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize;

/// What happened during one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the interval ended, in Unix seconds.
    pub at: u64,
    pub appends_per_second: f64,
    /// Events written to live readers per second.
    pub deliveries_per_second: f64,
    /// The append route's latency quantiles in seconds; `None` without an append.
    pub append_p50: Option<f64>,
    pub append_p99: Option<f64>,
    /// Live readers open at the end, by transport (as `Transport::ALL`).
    pub live: [u64; 4],
    pub server_errors_per_second: f64,
}

/// The last `WINDOW` of samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// A history kept by a sampler task, which ends once the history is dropped.
    pub fn start(metrics: Arc<Metrics>) -> Arc<History> {
        let history = Arc::new(History::default());
        let weak: Weak<History> = Arc::downgrade(&history);
        tokio::spawn(async move {
            let mut previous = (Instant::now(), metrics.totals());
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(history) = weak.upgrade() else {
                    return;
                };
                let current = (Instant::now(), metrics.totals());
                history.push(sample(
                    &previous.1,
                    &current.1,
                    current.0 - previous.0,
                    unix_seconds(SystemTime::now()),
                ));
                previous = current;
            }
        });
        history
    }

    /// Every sample held, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().iter().copied().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.lock();
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The interval between two readings of the totals, `elapsed` apart, ending at `at`.
fn sample(previous: &Totals, current: &Totals, elapsed: Duration, at: u64) -> Sample {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let rate = |before: u64, after: u64| after.saturating_sub(before) as f64 / seconds;
    Sample {
        at,
        appends_per_second: rate(previous.appended, current.appended),
        deliveries_per_second: rate(previous.delivered, current.delivered),
        append_p50: quantile(0.5, &previous.append_latency, &current.append_latency),
        append_p99: quantile(0.99, &previous.append_latency, &current.append_latency),
        live: current.live,
        server_errors_per_second: rate(previous.server_errors, current.server_errors),
    }
}

/// The `q` quantile of what a cumulative histogram gained between two readings, interpolated
/// linearly inside its bucket as Prometheus' `histogram_quantile` does; a quantile in the
/// unbounded bucket is the highest finite bound.
fn quantile(q: f64, before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let gained: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(other, _)| other == bound)
                .map_or(0, |(_, count)| *count);
            (*bound, count.saturating_sub(earlier))
        })
        .collect();
    let total = gained.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (bound, count) in gained {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = (count - lower.1) as f64;
            let share = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(appended: u64, latency: Vec<(f64, u64)>) -> Totals {
        Totals {
            appended,
            append_latency: latency,
            ..Totals::default()
        }
    }

    #[test]
    fn rates_are_per_second_and_quantiles_come_from_what_the_interval_added() {
        let before = totals(10, vec![(0.001, 5), (0.01, 10), (f64::INFINITY, 10)]);
        // 100 new appends: 50 under 1 ms, 49 between 1 and 10 ms, 1 above 10 ms.
        let after = totals(110, vec![(0.001, 55), (0.01, 109), (f64::INFINITY, 110)]);
        let sample = sample(&before, &after, Duration::from_secs(5), 1_000);
        assert_eq!(sample.at, 1_000);
        assert_eq!(sample.appends_per_second, 20.0);
        assert_eq!(sample.append_p50, Some(0.001));
        let p99 = sample.append_p99.unwrap();
        assert!((p99 - 0.01).abs() < 1e-9, "{p99}");
        assert_eq!(sample.server_errors_per_second, 0.0);
    }

    #[test]
    fn no_append_means_no_latency_and_the_unbounded_bucket_gives_the_top_bound() {
        let same = totals(3, vec![(0.5, 1), (f64::INFINITY, 3)]);
        assert_eq!(
            quantile(0.5, &same.append_latency, &same.append_latency),
            None
        );
        assert_eq!(
            quantile(0.99, &[], &[(0.5, 0), (1.0, 0), (f64::INFINITY, 4)]),
            Some(1.0)
        );
        assert_eq!(
            quantile(0.5, &[], &[(0.1, 2), (f64::INFINITY, 2)]),
            Some(0.05)
        );
    }

    #[test]
    fn the_ring_keeps_the_last_window() {
        let history = History::default();
        for at in 0..(CAPACITY as u64 + 7) {
            history.push(sample(&Totals::default(), &Totals::default(), INTERVAL, at));
        }
        let samples = history.samples();
        assert_eq!(samples.len(), CAPACITY);
        assert_eq!(samples[0].at, 7);
        assert_eq!(samples.last().unwrap().at, CAPACITY as u64 + 6);
    }
}
