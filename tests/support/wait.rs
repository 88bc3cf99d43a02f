//! Waiting for something the system does in its own time, by polling for it.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it yields a value and returns it; `Err` says what is still missing,
/// and the last one is the panic message if `limit` passes first. Limits are generous on
/// purpose: they bound a hang, and a busy machine must not fail a correct gateway.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(missing) => assert!(Instant::now() < deadline, "after {limit:?}: {missing}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
