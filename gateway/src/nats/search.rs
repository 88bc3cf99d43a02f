//! Finding where a session's event is in the stream: a bounded search of its stream sequence,
//! so a tail or page can start at any seq without reading the events before it.

use super::events::Head;
use super::{Store, StoreError};
use crate::sessions::model::{Seq, SessionId};

impl Store {
    /// The stream sequence of the session's event `seq` (1 ≤ seq ≤ head.seq).
    ///
    /// Stream sequences grow by at least one per event of the session, which bounds where the
    /// event can be; each probe narrows the bounds, so dense sessions take one or two probes.
    pub async fn stream_seq_of(
        &self,
        id: &SessionId,
        seq: Seq,
        head: Head,
    ) -> Result<u64, StoreError> {
        let placement = self.placement(id).await?;
        let missing = || StoreError::Corrupt(format!("event {seq} is missing from its subject"));
        let mut low = seq;
        let mut high = head.stream_seq.saturating_sub(head.seq.saturating_sub(seq));
        while low <= high {
            let probe = low + (high - low) / 2;
            let found = self
                .next_event(&placement, probe)
                .await?
                .ok_or_else(missing)?;
            if found.seq == seq {
                return Ok(found.stream_seq);
            }
            if found.seq < seq {
                low = found.stream_seq + (seq - found.seq);
            } else {
                // The event is before the probe, and before `found` by at least the seq gap.
                high = (probe - 1).min(found.stream_seq.saturating_sub(found.seq - seq));
            }
        }
        Err(missing())
    }
}
