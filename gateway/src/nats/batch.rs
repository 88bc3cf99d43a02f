//! Atomic batches: several events of one session stored at consecutive stream sequences, or
//! none, conditional on the session's state like a single append.

use std::time::Duration;

use std::sync::atomic::Ordering;

use async_nats::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

use super::append::{AppendFailure, expect_last, publish_failure};
use super::events::{PendingAppend, event_headers};
use super::{BUSY_WITH_SINGLES, Store, StoreError, unavailable, within};
use crate::sessions::model::SessionId;

/// An atomic batch being sent: each staged event goes out at once, so JetStream prepares the
/// batch (on a single-replica file stream, a staging store of its own) while the rest are
/// still being decided; `commit` sends the last and stores them all, or none.
pub struct OpenBatch {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    subject: String,
    batch_id: String,
    staged: usize,
    timeout: Duration,
}

impl OpenBatch {
    /// Events sent so far, before the commit.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Sends an event of the batch; the server holds it until the commit.
    pub async fn stage(&mut self, append: &PendingAppend<'_>) -> Result<(), AppendFailure> {
        let headers = self.headers(append);
        let send =
            self.client
                .publish_with_headers(self.subject.clone(), headers, append.body.clone());
        within(self.timeout, "staging a batch", send)
            .await?
            .map_err(|err| match err.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => AppendFailure::TooLarge,
                _ => AppendFailure::Store(unavailable(err)),
            })?;
        self.staged += 1;
        Ok(())
    }

    /// Sends the last event and commits the batch; returns the last event's stream sequence.
    pub async fn commit(self, last: &PendingAppend<'_>) -> Result<u64, AppendFailure> {
        let mut headers = self.headers(last);
        headers.insert("Nats-Batch-Commit", "1");
        let send =
            self.jetstream
                .publish_with_headers(self.subject.clone(), headers, last.body.clone());
        let publish = within(self.timeout, "committing a batch", send)
            .await?
            .map_err(publish_failure)?;
        let ack = publish.await.map_err(publish_failure)?;
        Ok(ack.sequence)
    }

    fn headers(&self, append: &PendingAppend<'_>) -> HeaderMap {
        let mut headers = event_headers(append);
        headers.insert("Nats-Batch-Id", self.batch_id.as_str());
        headers.insert(
            "Nats-Batch-Sequence",
            (self.staged + 1).to_string().as_str(),
        );
        if self.staged == 0 {
            expect_last(&mut headers, append);
        }
        headers
    }
}

impl Store {
    /// Publishes several events as one atomic batch: JetStream stores all of them, at
    /// consecutive stream sequences, or none. The first carries the expected last subject
    /// sequence, checked at commit, which makes the whole batch conditional like a single
    /// append. Returns the stream sequence of the last.
    pub async fn append_batch(
        &self,
        id: &SessionId,
        appends: &[PendingAppend<'_>],
    ) -> Result<u64, AppendFailure> {
        let Some((last, rest)) = appends.split_last() else {
            return Err(AppendFailure::Store(StoreError::Corrupt(
                "an empty batch was published".into(),
            )));
        };
        let mut batch = self.open_batch(id).await?;
        for append in rest {
            batch.stage(append).await?;
        }
        batch.commit(last).await
    }

    /// A place for one atomic batch that groups single appends to go faster, if one is free
    /// and JetStream is not busy with single appends. An atomic batch costs the server a fixed
    /// ~2.5 ms of work (a single-replica file stream stages it in a store of its own), while
    /// single appends cost ~10 µs each when many sessions send them in parallel and ~100 µs
    /// when one session sends them one by one. So a hot session alone gains by batching, but
    /// sessions that append side by side do better as single appends: batches would spend the
    /// server's time on staging. A batch that must be atomic (one request of several events)
    /// needs no place.
    pub fn batch_slot(&self) -> Option<BatchSlot> {
        if self.appends_in_flight.load(Ordering::Relaxed) >= BUSY_WITH_SINGLES {
            return None;
        }
        let permit = self.batch_slots.clone().try_acquire_owned().ok()?;
        Some(BatchSlot { _permit: permit })
    }

    /// Starts an atomic batch whose events are sent as they are decided.
    pub async fn open_batch(&self, id: &SessionId) -> Result<OpenBatch, StoreError> {
        self.require_usable()?;
        Ok(OpenBatch {
            client: self.client.clone(),
            jetstream: self.jetstream.clone(),
            subject: self.subject_of(id).await?,
            batch_id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            staged: 0,
            timeout: self.timeout,
        })
    }
}

/// Held while a group of single appends is published as one atomic batch.
pub struct BatchSlot {
    _permit: OwnedSemaphorePermit,
}
