//! A session's events from a stream sequence on, stored then live, from one ordered consumer:
//! what tails replay and what catch-ups far behind the head read.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use super::events::StoredEvent;
use super::feed::{Feed, RawFeed};
use super::{Store, StoreError};
use crate::sessions::model::SessionId;

/// A session's stored-then-live events.
pub type EventFeed = Feed<StoredEvent>;

impl Store {
    /// committed, from one ordered consumer so there is no gap or repeat at the switch.
    pub async fn follow(
        &self,
        id: &SessionId,
        from_stream_seq: u64,
    ) -> Result<EventFeed, StoreError> {
        self.require_usable()?;
        let placement = self.placement(id).await?;
        let config = pull::OrderedConfig {
            filter_subject: placement.subject,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from_stream_seq.max(1),
            },
            ..Default::default()
        };
        let RawFeed { messages, consumer } = self.ordered_feed(&placement.stream, config).await?;
        let events = messages.map(|message| {
            let message = message?;
            StoredEvent::parse(
                message.stream_seq,
                message.headers.as_ref(),
                message.payload,
            )
        });
        Ok(Feed::new(Box::pin(events), consumer))
    }
}
