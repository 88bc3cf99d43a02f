//! Ordered consumers as streams: what is stored from a position on, then live, each message
//! once, and the consumer removed as soon as the reader is gone.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{Store, StoreError, unavailable};

/// A stored message as an ordered consumer delivers it.
pub(super) struct RawMessage {
    pub subject: async_nats::Subject,
    pub stream_seq: u64,
    /// Messages the consumer has yet to deliver after this one.
    pub pending: u64,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, StoreError>> + Send>>;

pub(super) struct RawFeed {
    pub messages: BoxStream<RawMessage>,
    pub consumer: ConsumerGuard,
}

/// Items decoded from an ordered consumer; dropping the feed deletes the consumer.
pub struct Feed<T> {
    items: BoxStream<T>,
    _consumer: ConsumerGuard,
}

impl<T> Feed<T> {
    pub(super) fn new(items: BoxStream<T>, consumer: ConsumerGuard) -> Feed<T> {
        Feed {
            items,
            _consumer: consumer,
        }
    }
}

impl<T> Stream for Feed<T> {
    type Item = Result<T, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.as_mut().poll_next(cx)
    }
}

/// Deletes its consumer when dropped.
pub(super) struct ConsumerGuard {
    stream: stream::Stream<()>,
    name: String,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        // The server drops an idle ordered consumer only after 30 s, and every one held counts
        // against the stream's consumer limit: readers that reconnect often would pile them up.
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}

impl Store {
    pub(super) async fn ordered_feed(
        &self,
        stream: &stream::Stream<()>,
        config: pull::OrderedConfig,
    ) -> Result<RawFeed, StoreError> {
        let name = consumer_name();
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(name.clone()),
                ..config
            })
            .await
            .map_err(unavailable)?;
        let guard = ConsumerGuard {
            stream: stream.clone(),
            name,
        };
        let messages = consumer
            .messages()
            .await
            .map_err(unavailable)?
            .map(|message| Ok(raw_message(message.map_err(unavailable)?)?.0));
        Ok(RawFeed {
            messages: Box::pin(messages),
            consumer: guard,
        })
    }

    /// One pass over what `stream` stores, from its first message, read in large pulls: a
    /// quarter faster than an ordered consumer's pulls of 500, with at most two pulls in
    /// memory. Instead of an ordered consumer's recovery it checks for the loss that recovery
    /// repairs: a message lost in transit (the consumer's numbering skips) ends the feed with
    /// an error, and the reader starts over.
    pub(super) async fn replay_feed(
        &self,
        stream: &stream::Stream<()>,
    ) -> Result<RawFeed, StoreError> {
        let name = consumer_name();
        let consumer = stream
            .create_consumer(pull::Config {
                name: Some(name.clone()),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                // Removed by the server should the gateway die mid-replay.
                inactive_threshold: Duration::from_secs(30),
                // Its state is lost with it anyway: kept in memory, on the leader only.
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let guard = ConsumerGuard {
            stream: stream.clone(),
            name,
        };
        let mut delivered = 0;
        let messages = consumer
            .stream()
            .max_messages_per_batch(REPLAY_BATCH_MESSAGES)
            .max_bytes_per_batch(REPLAY_BATCH_BYTES)
            .expires(REPLAY_PULL_EXPIRES)
            .messages()
            .await
            .map_err(unavailable)?
            .map(move |message| {
                let (message, consumer_seq) = raw_message(message.map_err(unavailable)?)?;
                if consumer_seq != delivered + 1 {
                    return Err(StoreError::Unavailable(format!(
                        "a replay skipped from message {delivered} to {consumer_seq}"
                    )));
                }
                delivered = consumer_seq;
                Ok(message)
            });
        Ok(RawFeed {
            messages: Box::pin(messages),
            consumer: guard,
        })
    }
}

/// A name of our own for a consumer, so its guard can delete it.
fn consumer_name() -> String {
    format!("starcite-{:016x}", rand::random::<u64>())
}

/// A replay's pull: large enough that requests are few, small enough in bytes that two in
/// memory stay a few MiB.
const REPLAY_BATCH_MESSAGES: usize = 16_384;
const REPLAY_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// A pull whose messages were lost (its connection dropped as they were sent) is given up on
/// and made again after this, and the skip in the numbering then shows: a replay waits this
/// long on a loss, not the client's default of 30 s.
const REPLAY_PULL_EXPIRES: Duration = Duration::from_secs(5);

/// A delivered message, and its number in its consumer's deliveries.
fn raw_message(message: async_nats::jetstream::Message) -> Result<(RawMessage, u64), StoreError> {
    let info = message.info().map_err(unavailable)?;
    let (stream_seq, pending, consumer_seq) =
        (info.stream_sequence, info.pending, info.consumer_sequence);
    // Moved, not cloned: a header map is a hash map of strings, and copying it was a tenth of
    // a replay's CPU in the gateway.
    let async_nats::Message {
        subject,
        headers,
        payload,
        ..
    } = message.message;
    let raw = RawMessage {
        subject,
        stream_seq,
        pending,
        headers,
        payload,
    };
    Ok((raw, consumer_seq))
}
