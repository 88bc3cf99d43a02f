//! Sessions read and written as streams of messages, the model of the Durable Streams protocol
//! (docs/api.md, "Durable Streams").
//!
//! Each append is one event holding its messages, so an offset is a seq and a cursor means the
//! same to a stream reader and to a tailer. A session whose content type is JSON (and every
//! plain event log) holds JSON values; any other holds bytes. A producer that fences its older
//! incarnations by epoch is a session producer whose events record `(epoch, seq)`; its
//! decisions are made against the log and committed on the producer's own cursor, so two
//! gateways racing on one producer cannot both win.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use lru::LruCache;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{AppendError, ReadError};
use super::limits::MAX_BATCH_EVENTS;
use super::model::{
    CLOSE_EVENT_TYPE, Change, EventContent, Expiry, ForkPoint, JsonObject, NewEvent, NewSession,
    Seq, Session, SessionId,
};
use super::{SessionLog, lock};
use crate::nats::ReplaceSessionFailure;

/// The `type` of an event holding one append's messages.
pub const DATA_EVENT_TYPE: &str = "data";
/// The event metadata key under which a stream append records its producer's and writer's
/// positions.
const POSITIONS_KEY: &str = "stream";
/// How often a stream append decided on a state another writer changed is decided again.
const MAX_ATTEMPTS: u32 = 8;
/// The content type of a plain event log read as a stream.
pub const JSON: &str = "application/json";
/// How many sessions' last accesses a gateway remembers for idle expiry.
const REMEMBERED_ACCESSES: usize = 100_000;

/// What a session's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    Json,
    Bytes,
}

impl MessageFormat {
    /// JSON for `application/json` (any parameters, any case) and for a plain event log.
    pub fn of(content_type: Option<&str>) -> MessageFormat {
        match content_type {
            Some(content_type) if media_type(content_type) != "application/json" => {
                MessageFormat::Bytes
            }
            _ => MessageFormat::Json,
        }
    }
}

/// A content type without its parameters, lowercased: what two content types must share to
/// be the same.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The messages of one append.
#[derive(Debug, Clone, PartialEq)]
pub enum Messages {
    Json(Vec<Value>),
    Bytes(Bytes),
}

impl Messages {
    /// Reads a body: in JSON, an array is its elements (one level) and any other value is one
    /// message; bytes are one message.
    pub fn parse(format: MessageFormat, body: Bytes) -> Result<Messages, InvalidMessages> {
        match format {
            MessageFormat::Bytes => Ok(Messages::Bytes(body)),
            MessageFormat::Json => match serde_json::from_slice(&body) {
                Ok(Value::Array(values)) if values.is_empty() => Err(InvalidMessages::EmptyArray),
                Ok(Value::Array(values)) => Ok(Messages::Json(values)),
                Ok(value) => Ok(Messages::Json(vec![value])),
                Err(err) => Err(InvalidMessages::Json(err.to_string())),
            },
        }
    }

    /// The first `count` messages: JSON values, or bytes.
    pub fn prefix(&self, count: usize) -> Option<Messages> {
        match self {
            Messages::Json(values) => {
                (count <= values.len()).then(|| Messages::Json(values[..count].to_vec()))
            }
            Messages::Bytes(bytes) => {
                (count <= bytes.len()).then(|| Messages::Bytes(bytes.slice(..count)))
            }
        }
    }

    fn payload(&self) -> JsonObject {
        let mut payload = Map::new();
        match self {
            Messages::Json(values) => {
                payload.insert("json".into(), Value::Array(values.clone()));
            }
            Messages::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => {
                    payload.insert("text".into(), text.into());
                }
                Err(_) => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                    payload.insert("base64".into(), encoded.into());
                }
            },
        }
        payload
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessages {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("an empty JSON array appends nothing")]
    EmptyArray,
}

/// The part of a stored event a stream reads.
#[derive(Deserialize)]
struct StoredParts {
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
    #[serde(default)]
    metadata: Value,
}

/// What a stored event reads as in a stream of `format`: a data event its messages, the
/// closing event nothing, and any other event (one appended through the session API) its own
/// JSON as one message.
pub fn stored_messages(event: &Bytes, format: MessageFormat) -> Result<Messages, ReadError> {
    let parts: StoredParts = serde_json::from_slice(event).map_err(corrupt)?;
    let data = (parts.kind == DATA_EVENT_TYPE).then_some(&parts.payload);
    let messages = match (format, data) {
        _ if parts.kind == CLOSE_EVENT_TYPE => match format {
            MessageFormat::Json => Messages::Json(Vec::new()),
            MessageFormat::Bytes => Messages::Bytes(Bytes::new()),
        },
        (MessageFormat::Json, Some(Value::Object(data))) if data.contains_key("json") => {
            match data.get("json") {
                Some(Value::Array(values)) => Messages::Json(values.clone()),
                _ => return Err(corrupt("a data event's `json` is not an array")),
            }
        }
        (MessageFormat::Json, _) => {
            Messages::Json(vec![serde_json::from_slice(event).map_err(corrupt)?])
        }
        (MessageFormat::Bytes, Some(Value::Object(data))) => {
            match (data.get("text"), data.get("base64")) {
                (Some(Value::String(text)), _) => Messages::Bytes(Bytes::from(text.clone())),
                (_, Some(Value::String(encoded))) => Messages::Bytes(Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(corrupt)?,
                )),
                _ => Messages::Bytes(event.clone()),
            }
        }
        (MessageFormat::Bytes, _) => Messages::Bytes(event.clone()),
    };
    Ok(messages)
}

fn corrupt(err: impl std::fmt::Display) -> ReadError {
    ReadError::Store(crate::nats::StoreError::Corrupt(format!(
        "a stream event: {err}"
    )))
}

/// Where a stream append's writer stood, as recorded in its event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
struct Positions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    producer_epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    producer_seq: Option<u64>,
    /// The writer's own ordering token (`Stream-Seq`), compared as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer_seq: Option<String>,
}

impl Positions {
    fn of(event: &Bytes) -> Result<Positions, ReadError> {
        let parts: StoredParts = serde_json::from_slice(event).map_err(corrupt)?;
        Ok(parts
            .metadata
            .get(POSITIONS_KEY)
            .and_then(|positions| Positions::deserialize(positions).ok())
            .unwrap_or_default())
    }
}

/// A producer that fences its older incarnations: a higher epoch starts again at seq 0 and
/// every lower epoch is refused from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochProducer {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// How an epoch producer's request stands against its latest stored `(epoch, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProducerCheck {
    Accept,
    /// Stored already (or superseded): nothing to append; `last_seq` is its newest seq.
    Duplicate {
        last_seq: u64,
    },
    Refuse(ProducerRefusal),
}

/// Why an epoch producer's request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerRefusal {
    /// An older epoch than one already seen: a fenced-off incarnation.
    StaleEpoch { current_epoch: u64 },
    /// A new epoch must start at seq 0.
    NewEpochNotAtZero,
    /// Not the next seq.
    SeqGap { expected: u64, received: u64 },
}

fn check_producer(latest: Option<(u64, u64)>, sent: &EpochProducer) -> ProducerCheck {
    let Some((epoch, last_seq)) = latest else {
        return match sent.seq {
            0 => ProducerCheck::Accept,
            received => ProducerCheck::Refuse(ProducerRefusal::SeqGap {
                expected: 0,
                received,
            }),
        };
    };
    if sent.epoch < epoch {
        return ProducerCheck::Refuse(ProducerRefusal::StaleEpoch {
            current_epoch: epoch,
        });
    }
    if sent.epoch > epoch {
        return match sent.seq {
            0 => ProducerCheck::Accept,
            _ => ProducerCheck::Refuse(ProducerRefusal::NewEpochNotAtZero),
        };
    }
    match sent.seq {
        seq if seq <= last_seq => ProducerCheck::Duplicate { last_seq },
        seq if seq == last_seq + 1 => ProducerCheck::Accept,
        received => ProducerCheck::Refuse(ProducerRefusal::SeqGap {
            expected: last_seq + 1,
            received,
        }),
    }
}

/// One append to a stream: messages, a close, or both (the messages then the close, at once).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub messages: Option<Messages>,
    pub close: bool,
    pub producer: Option<EpochProducer>,
    /// Refuses the append unless this is greater (as a string) than the one the stream's
    /// newest append carried.
    pub writer_seq: Option<String>,
    /// Who appends (an authenticated caller's subject).
    pub actor: String,
}

/// An append's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAppended {
    /// The stream's newest seq after it.
    pub last_seq: Seq,
    pub closed: bool,
    /// Set when the producer's request was stored before: nothing was appended now. Its
    /// newest accepted seq.
    pub duplicate_of: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamAppendError {
    #[error("the stream is closed")]
    Closed { last_seq: Seq },
    #[error("producer refused: {0:?}")]
    Producer(ProducerRefusal),
    #[error("Stream-Seq must increase: `{sent}` is not after `{last}`")]
    WriterSeqNotAfter { sent: String, last: String },
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl From<ReadError> for StreamAppendError {
    fn from(err: ReadError) -> StreamAppendError {
        StreamAppendError::Append(err.into())
    }
}

/// Where a stream stands.
#[derive(Debug, Clone)]
pub struct StreamStatus {
    pub session: Session,
    pub last_seq: Seq,
    pub closed: bool,
}

impl StreamStatus {
    pub fn format(&self) -> MessageFormat {
        MessageFormat::of(self.session.content_type.as_deref())
    }
}

/// When each session was last read or written through this gateway, for idle expiry.
pub(super) struct Accesses(Mutex<LruCache<SessionId, SystemTime>>);

impl Default for Accesses {
    fn default() -> Accesses {
        let capacity = NonZeroUsize::new(REMEMBERED_ACCESSES).unwrap_or(NonZeroUsize::MIN);
        Accesses(Mutex::new(LruCache::new(capacity)))
    }
}

/// An RFC 3339 instant with `Z` or a numeric offset.
pub fn parse_instant(raw: &str) -> Option<SystemTime> {
    let raw = raw.trim();
    if let Some(utc) = raw.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339_weak(utc).ok();
    }
    let split = raw.len().checked_sub(6)?;
    let (local, offset) = (raw.get(..split)?, raw.get(split..)?);
    let (sign, hours, minutes) = (
        offset.get(..1)?,
        offset.get(1..3)?.parse::<u64>().ok()?,
        offset.get(4..6)?.parse::<u64>().ok()?,
    );
    if offset.get(3..4)? != ":" || hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    match sign {
        "+" => local.checked_sub(shift),
        "-" => local.checked_add(shift),
        _ => None,
    }
}

impl SessionLog {
    /// The stream's header, unless it expired: an expired stream is deleted now and reads as
    /// missing. `known` is a header the caller holds (a gateway's catalog, a moment behind the
    /// bucket), read afresh before anything is deleted on its word. `touch` counts this as an
    /// access that keeps an idle expiry away.
    pub async fn stream_header(
        &self,
        id: &SessionId,
        known: Option<Session>,
        touch: bool,
    ) -> Result<Session, ReadError> {
        let mut session = match known {
            Some(session) => session,
            None => self.header(id).await?,
        };
        if self.expired(&session).await? {
            session = self.header(id).await?;
            if self.expired(&session).await? {
                self.delete_stream(id).await?;
                return Err(ReadError::SessionNotFound(id.clone()));
            }
        }
        if touch {
            lock(&self.accesses.0).put(id.clone(), SystemTime::now());
        }
        Ok(session)
    }

    /// The stream's header and where its writing stands, as `stream_header`.
    pub async fn stream_status(
        &self,
        id: &SessionId,
        touch: bool,
    ) -> Result<StreamStatus, ReadError> {
        let session = self.stream_header(id, None, touch).await?;
        let status = self
            .write_status(id, None)
            .await
            .map_err(|err| as_read_error(err.into()))?;
        Ok(StreamStatus {
            session,
            last_seq: status.last_seq,
            closed: status.closed,
        })
    }

    /// Whether `session` has expired. An idle expiry counts from the latest of its creation,
    /// its newest event (writes through any gateway) and this gateway's last access.
    async fn expired(&self, session: &Session) -> Result<bool, ReadError> {
        let now = SystemTime::now();
        let idle_for = match &session.expiry {
            None => return Ok(false),
            Some(Expiry::At(at)) => return Ok(parse_instant(at).is_some_and(|at| at <= now)),
            Some(Expiry::IdleSeconds(seconds)) => Duration::from_secs(*seconds),
        };
        let accessed = lock(&self.accesses.0).get(&session.id).copied();
        let created = humantime::parse_rfc3339(&session.created_at).ok();
        let latest = accessed.max(created).unwrap_or(now);
        if latest + idle_for > now {
            return Ok(false);
        }
        // Only when it looks expired: the newest write may have come through another gateway.
        let written = match self.store.head(&session.id).await? {
            None => None,
            Some(head) => self
                .event(&session.id, head.seq)
                .await?
                .and_then(|event| inserted_at(&event)),
        };
        Ok(written.is_none_or(|written| written + idle_for <= now))
    }

    /// The event at `seq`, if it is stored.
    async fn event(&self, id: &SessionId, seq: Seq) -> Result<Option<Bytes>, ReadError> {
        let page = self.read_page(id, seq.saturating_sub(1), 1).await?;
        Ok(page
            .events
            .into_iter()
            .next()
            .filter(|_| page.next_cursor == seq))
    }

    /// Appends to a stream: checks the producer, the close and the writer's seq against the
    /// log, then appends conditionally on what was checked, and checks again when another
    /// writer got there first.
    pub async fn append_messages(
        &self,
        id: &SessionId,
        append: StreamAppend,
    ) -> Result<StreamAppended, StreamAppendError> {
        if append.producer.is_none() && append.writer_seq.is_none() {
            return self.append_plain(id, append).await;
        }
        for _ in 0..MAX_ATTEMPTS {
            let producer_id = append
                .producer
                .as_ref()
                .map(|producer| producer.id.as_str());
            let status = self.write_status(id, producer_id).await?;
            let mut producer_seq = 0;
            if let Some(producer) = &append.producer {
                let mut latest = None;
                if let Some(position) = status.producer {
                    producer_seq = position.producer_seq;
                    let event = self.event(id, position.seq).await?;
                    let positions = event.as_ref().map(Positions::of).transpose()?;
                    latest = positions
                        .and_then(|positions| positions.producer_epoch.zip(positions.producer_seq));
                }
                match check_producer(latest, producer) {
                    ProducerCheck::Accept => {}
                    ProducerCheck::Duplicate { last_seq } => {
                        return Ok(StreamAppended {
                            last_seq: status.last_seq,
                            closed: status.closed,
                            duplicate_of: Some(last_seq),
                        });
                    }
                    ProducerCheck::Refuse(refusal) => {
                        return Err(StreamAppendError::Producer(refusal));
                    }
                }
            }
            if status.closed {
                return Err(StreamAppendError::Closed {
                    last_seq: status.last_seq,
                });
            }
            let mut expected_seq = None;
            if let Some(sent) = &append.writer_seq {
                let newest = match status.last_seq {
                    0 => None,
                    seq => self.event(id, seq).await?,
                };
                let last = newest
                    .as_ref()
                    .map(Positions::of)
                    .transpose()?
                    .and_then(|positions| positions.writer_seq);
                if let Some(last) = last.filter(|last| sent <= last) {
                    return Err(StreamAppendError::WriterSeqNotAfter {
                        sent: sent.clone(),
                        last,
                    });
                }
                expected_seq = Some(status.last_seq);
            }
            let events = stream_events(&append, producer_seq, expected_seq);
            match self.append_all(id, events).await {
                Ok(appended) => {
                    let last_seq = appended.last().map_or(status.last_seq, |a| a.last_seq);
                    return Ok(StreamAppended {
                        last_seq,
                        closed: append.close,
                        duplicate_of: None,
                    });
                }
                // Another writer changed what this was decided on: decide again.
                Err(
                    AppendError::ProducerSeqConflict { .. }
                    | AppendError::ProducerReplayConflict
                    | AppendError::ExpectedSeqConflict { .. }
                    | AppendError::SessionClosed { .. },
                ) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(AppendError::Contended {
            id: id.clone(),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }
}

impl SessionLog {
    /// An append with nothing to check but the close, which the log itself refuses after.
    async fn append_plain(
        &self,
        id: &SessionId,
        append: StreamAppend,
    ) -> Result<StreamAppended, StreamAppendError> {
        let close_only = append.messages.is_none();
        match self.append_all(id, stream_events(&append, 0, None)).await {
            Ok(appended) => Ok(StreamAppended {
                last_seq: appended.last().map_or(0, |appended| appended.last_seq),
                closed: append.close,
                duplicate_of: None,
            }),
            // Closing a closed stream changes nothing.
            Err(AppendError::SessionClosed { last_seq }) if close_only => Ok(StreamAppended {
                last_seq,
                closed: true,
                duplicate_of: None,
            }),
            Err(AppendError::SessionClosed { last_seq }) => {
                Err(StreamAppendError::Closed { last_seq })
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// A write's failure as a read's: a missing session or the store's error as they are, anything
/// else (only a race could give one) as the store being unavailable for now.
fn as_read_error(err: StreamAppendError) -> ReadError {
    match err {
        StreamAppendError::Append(AppendError::SessionNotFound(id)) => {
            ReadError::SessionNotFound(id)
        }
        StreamAppendError::Append(AppendError::Store(err)) => ReadError::Store(err),
        other => ReadError::Store(crate::nats::StoreError::Unavailable(other.to_string())),
    }
}

/// The events of one stream append: its data, then its close; each on the producer's own
/// cursor (`producer_seq` is its latest), recording where the producer and writer stand.
fn stream_events(
    append: &StreamAppend,
    producer_seq: u64,
    expected_seq: Option<Seq>,
) -> Vec<NewEvent> {
    let positions = Positions {
        producer_epoch: append.producer.as_ref().map(|producer| producer.epoch),
        producer_seq: append.producer.as_ref().map(|producer| producer.seq),
        writer_seq: append.writer_seq.clone(),
    };
    let mut metadata = JsonObject::new();
    if positions != Positions::default() {
        // Plain numbers and strings always serialize.
        let positions = serde_json::to_value(&positions).unwrap_or_default();
        metadata.insert(POSITIONS_KEY.into(), positions);
    }
    let producer_id = append
        .producer
        .as_ref()
        .map(|producer| producer.id.clone())
        .unwrap_or_default();
    let data = append
        .messages
        .as_ref()
        .map(|messages| (DATA_EVENT_TYPE, messages.payload()));
    let close = append.close.then(|| (CLOSE_EVENT_TYPE, JsonObject::new()));
    data.into_iter()
        .chain(close)
        .zip(1..)
        .map(|((kind, payload), index)| NewEvent {
            content: EventContent {
                kind: kind.into(),
                payload,
                actor: append.actor.clone(),
                producer_id: producer_id.clone(),
                producer_seq: if producer_id.is_empty() {
                    0
                } else {
                    producer_seq + index
                },
                source: None,
                metadata: metadata.clone(),
                refs: JsonObject::new(),
                idempotency_key: None,
            },
            expected_seq: expected_seq.filter(|_| index == 1),
        })
        .collect()
}

/// Why a fork cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error("the fork point is past the source's end")]
    BeyondEnd,
    #[error("the sub-offset is past the end of the append after the fork point")]
    SubOffsetBeyond,
    #[error("a fork keeps its source's content type")]
    ContentTypeDiffers,
    #[error("the source was deleted; it remains only while forks of it do")]
    SourceRetired,
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What a fork is made from.
#[derive(Debug, Clone)]
pub struct ForkSource {
    pub session: SessionId,
    /// Where it forks: after this seq (`None`: the source's end).
    pub seq: Option<Seq>,
    pub sub_offset: u64,
}

impl SessionLog {
    /// Checks a fork of `source` against the source as it stands, and completes the new
    /// session's settings from it: its content type (which may not differ) and expiry.
    pub async fn fork_point(
        &self,
        new: &mut NewSession,
        source: ForkSource,
    ) -> Result<(), ForkError> {
        let status = self.stream_status(&source.session, true).await?;
        if status.session.retired {
            return Err(ForkError::SourceRetired);
        }
        let seq = source.seq.unwrap_or(status.last_seq);
        if seq > status.last_seq {
            return Err(ForkError::BeyondEnd);
        }
        match &new.content_type {
            Some(wanted) => {
                let actual = status.session.content_type.as_deref().unwrap_or(JSON);
                if media_type(wanted) != media_type(actual) {
                    return Err(ForkError::ContentTypeDiffers);
                }
            }
            None => new.content_type = status.session.content_type.clone(),
        }
        if new.expiry.is_none() {
            new.expiry = status.session.expiry.clone();
        }
        if source.sub_offset > 0 {
            let next = self.event(&source.session, seq + 1).await?;
            let fits = next
                .map(|event| stored_messages(&event, status.format()))
                .transpose()?
                .and_then(|messages| messages.prefix(source.sub_offset as usize));
            if fits.is_none() {
                return Err(ForkError::SubOffsetBeyond);
            }
        }
        new.forked_from = Some(ForkPoint {
            session: source.session,
            seq,
            sub_offset: source.sub_offset,
        });
        Ok(())
    }

    /// Fills a new fork with its source's log up to its fork point: the same appends at the
    /// same seqs, so an offset means the same on both, without the source's producers (a fork
    /// is a new stream to its writers) and without its close; then the first `sub_offset`
    /// messages of the source's next append. Returns the fork's last seq.
    pub async fn copy_fork(&self, id: &SessionId, point: &ForkPoint) -> Result<Seq, AppendError> {
        // The source counts its forks: deleted while they remain, it is only retired.
        self.update_header(&point.session, |source| source.fork_count += 1)
            .await?;
        let format = MessageFormat::of(
            self.store
                .session(id)
                .await?
                .and_then(|revised| revised.record.session.content_type)
                .as_deref(),
        );
        let mut copied = 0;
        while copied < point.seq {
            let limit = (point.seq - copied).min(MAX_BATCH_EVENTS as u64) as usize;
            let page = self.read_page(&point.session, copied, limit).await?;
            if page.events.is_empty() {
                break;
            }
            let events = page
                .events
                .iter()
                .zip(0..)
                .map(|(event, index)| {
                    inherited(event, format).map(|content| NewEvent {
                        content,
                        // The fork's seqs must be the source's: nothing else may land between.
                        expected_seq: (index == 0).then_some(copied),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.append_all(id, events).await?;
            copied = page.next_cursor;
        }
        if point.sub_offset > 0
            && let Some(next) = self.event(&point.session, point.seq + 1).await?
            && let Some(prefix) = stored_messages(&next, format)?.prefix(point.sub_offset as usize)
        {
            let append = StreamAppend {
                messages: Some(prefix),
                close: false,
                producer: None,
                writer_seq: None,
                actor: actor_of(&next).unwrap_or_default(),
            };
            let mut events = stream_events(&append, 0, None);
            for event in &mut events {
                event.expected_seq = Some(copied);
            }
            copied = self
                .append_all(id, events)
                .await?
                .last()
                .map_or(copied, |appended| appended.last_seq);
        }
        Ok(copied)
    }
}

/// Who closes the log of a stream retired by its delete.
const RETIRING_ACTOR: &str = "durable-streams";

impl SessionLog {
    /// Deletes a stream, or only retires it while forks of it remain; a fork's delete releases
    /// its source, which goes too once it is retired and has no forks left, and so on up.
    pub async fn delete_stream(&self, id: &SessionId) -> Result<(), ReadError> {
        let session = self.header(id).await?;
        if session.fork_count > 0 {
            self.update_header(id, |session| session.retired = true)
                .await?;
            // Closing its log makes every gateway refuse appends at once, however far behind
            // its catalog is; a refused append then finds the header retired.
            let close = StreamAppend {
                messages: None,
                close: true,
                producer: None,
                writer_seq: None,
                actor: RETIRING_ACTOR.to_owned(),
            };
            self.append_plain(id, close).await.map_err(as_read_error)?;
            return Ok(());
        }
        self.delete(id).await?;
        let mut source = session.forked_from.map(|point| point.session);
        while let Some(id) = source {
            let released = self
                .update_header(&id, |source| {
                    source.fork_count = source.fork_count.saturating_sub(1);
                })
                .await?;
            let Some(released) = released.filter(|source| source.retired && source.fork_count == 0)
            else {
                break;
            };
            self.delete(&id).await?;
            source = released.forked_from.map(|point| point.session);
        }
        Ok(())
    }

    /// Changes a session's header with a compare-and-set, read again on every lost race; the
    /// header as changed, or `None` for a session that does not exist.
    async fn update_header(
        &self,
        id: &SessionId,
        change: impl Fn(&mut Session),
    ) -> Result<Option<Session>, ReadError> {
        loop {
            let Some(revised) = self.store.session(id).await? else {
                return Ok(None);
            };
            let mut record = revised.record;
            change(&mut record.session);
            record.change = Change::Updated;
            record.session.version += 1;
            record.session.updated_at = super::model::timestamp_now();
            match self.store.replace_session(&record, revised.revision).await {
                Ok(_) => return Ok(Some(record.session)),
                Err(ReplaceSessionFailure::Changed) => continue,
                Err(ReplaceSessionFailure::Store(err)) => return Err(err.into()),
            }
        }
    }
}

/// A source event as its fork holds it: the same messages, without producer or writer
/// positions; a close becomes an append of nothing, so the fork stays open.
fn inherited(event: &Bytes, format: MessageFormat) -> Result<EventContent, ReadError> {
    #[derive(Deserialize)]
    struct Source {
        #[serde(rename = "type")]
        kind: String,
        payload: JsonObject,
        actor: String,
        source: Option<String>,
        #[serde(default)]
        metadata: JsonObject,
        #[serde(default)]
        refs: JsonObject,
    }
    let mut source: Source = serde_json::from_slice(event).map_err(corrupt)?;
    if source.kind == CLOSE_EVENT_TYPE {
        source.kind = DATA_EVENT_TYPE.into();
        source.payload = match format {
            MessageFormat::Json => Messages::Json(Vec::new()),
            MessageFormat::Bytes => Messages::Bytes(Bytes::new()),
        }
        .payload();
    }
    source.metadata.remove(POSITIONS_KEY);
    Ok(EventContent {
        kind: source.kind,
        payload: source.payload,
        actor: source.actor,
        producer_id: String::new(),
        producer_seq: 0,
        source: source.source,
        metadata: source.metadata,
        refs: source.refs,
        idempotency_key: None,
    })
}

fn actor_of(event: &Bytes) -> Option<String> {
    #[derive(Deserialize)]
    struct Actor {
        actor: String,
    }
    serde_json::from_slice::<Actor>(event)
        .ok()
        .map(|event| event.actor)
}

/// When a stored event was appended.
fn inserted_at(event: &Bytes) -> Option<SystemTime> {
    #[derive(Deserialize)]
    struct Inserted {
        inserted_at: String,
    }
    let inserted: Inserted = serde_json::from_slice(event).ok()?;
    humantime::parse_rfc3339(&inserted.inserted_at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(epoch: u64, seq: u64) -> EpochProducer {
        EpochProducer {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn an_epoch_producer_is_fenced_and_deduplicated_like_the_protocol_says() {
        let check = check_producer;
        assert_eq!(check(None, &producer(0, 0)), ProducerCheck::Accept);
        assert!(matches!(
            check(None, &producer(0, 1)),
            ProducerCheck::Refuse(ProducerRefusal::SeqGap { expected: 0, .. })
        ));
        assert_eq!(check(Some((1, 4)), &producer(1, 5)), ProducerCheck::Accept);
        assert_eq!(
            check(Some((1, 4)), &producer(1, 2)),
            ProducerCheck::Duplicate { last_seq: 4 }
        );
        assert_eq!(
            check(Some((1, 4)), &producer(0, 9)),
            ProducerCheck::Refuse(ProducerRefusal::StaleEpoch { current_epoch: 1 })
        );
        assert_eq!(check(Some((1, 4)), &producer(2, 0)), ProducerCheck::Accept);
        assert_eq!(
            check(Some((1, 4)), &producer(2, 1)),
            ProducerCheck::Refuse(ProducerRefusal::NewEpochNotAtZero)
        );
        assert_eq!(
            check(Some((1, 4)), &producer(1, 7)),
            ProducerCheck::Refuse(ProducerRefusal::SeqGap {
                expected: 5,
                received: 7
            })
        );
    }

    #[test]
    fn json_bodies_flatten_one_level_and_bytes_survive_a_round_trip() {
        let parse = |body: &'static str| Messages::parse(MessageFormat::Json, Bytes::from(body));
        assert_eq!(
            parse("[1,[2]]"),
            Ok(Messages::Json(vec![1.into(), serde_json::json!([2])]))
        );
        assert_eq!(parse("{}"), Ok(Messages::Json(vec![serde_json::json!({})])));
        assert_eq!(parse("[]"), Err(InvalidMessages::EmptyArray));
        assert!(matches!(parse("{"), Err(InvalidMessages::Json(_))));
        for body in [&b"plain text"[..], &[0, 255, 13, 10][..]] {
            let messages = Messages::Bytes(Bytes::copy_from_slice(body));
            let append = StreamAppend {
                messages: Some(messages.clone()),
                close: false,
                producer: None,
                writer_seq: None,
                actor: "a".into(),
            };
            let content = &stream_events(&append, 0, None)[0].content;
            let event = crate::sessions::model::Event::new(1, content, "t");
            let stored = Bytes::from(serde_json::to_vec(&event).unwrap());
            assert_eq!(
                stored_messages(&stored, MessageFormat::Bytes).unwrap(),
                messages
            );
        }
    }

    #[test]
    fn instants_take_z_or_an_offset() {
        let utc = parse_instant("2030-01-01T10:00:00Z").unwrap();
        assert_eq!(parse_instant("2030-01-01T12:00:00+02:00"), Some(utc));
        assert_eq!(parse_instant("2030-01-01T09:30:00.000-00:30"), Some(utc));
        assert_eq!(parse_instant("2030-01-01T10:00:00.000+00:00"), Some(utc));
        assert_eq!(parse_instant("not a time"), None);
        assert_eq!(parse_instant("2030-01-01T10:00:00"), None);
    }
}
