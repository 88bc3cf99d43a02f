//! Plain session-log values: ids, sessions, events and their validation. No I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A session's position in its own log: the first event is 1, an empty session is at 0.
pub type Seq = u64;

/// A JSON object, the shape of payloads, metadata and refs.
pub type JsonObject = Map<String, Value>;

/// The tenant every session belongs to while authentication is off.
pub const LOCAL_TENANT: &str = "default";

/// The longest session id we accept, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// A validated session id: any non-empty string of at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is a non-empty string of at most {MAX_SESSION_ID_BYTES} bytes")]
pub struct InvalidSessionId;

impl SessionId {
    pub fn parse(id: &str) -> Result<SessionId, InvalidSessionId> {
        if id.is_empty() || id.len() > MAX_SESSION_ID_BYTES {
            return Err(InvalidSessionId);
        }
        Ok(SessionId(id.to_owned()))
    }

    /// A fresh id, `ses_` and 12 random bytes in unpadded base64url.
    pub fn generate() -> SessionId {
        use base64::Engine as _;
        let bytes: [u8; 12] = rand::random();
        SessionId(format!(
            "ses_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidSessionId;
    fn try_from(id: String) -> Result<SessionId, InvalidSessionId> {
        SessionId::parse(&id)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `type` of the event that closes a session: it is the session's last, and every append
/// after it is refused.
pub const CLOSE_EVENT_TYPE: &str = "session.closed";

/// A session header as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    /// The tenant that created it; `None` for sessions created with authentication off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub title: Option<String>,
    pub metadata: JsonObject,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub archived: bool,
    /// The event stream shard holding its events, chosen at create and never changed. A header
    /// written before shards existed has none: shard 0, where all events were.
    #[serde(default, skip_serializing_if = "is_first_shard")]
    pub shard: u32,
    /// The media type of the session's messages, for a session created as a stream of bytes
    /// or JSON values (docs/api.md, "Durable Streams"); a plain event log has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
    /// Where it was forked from: its log began as a copy of that session's up to this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkPoint>,
    /// How many sessions forked from it exist.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fork_count: u64,
    /// Deleted while forks of it remained: it reads as gone, and its id stays taken until its
    /// last fork is deleted, when it is deleted too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// A point in a session's log: after `seq`, and `sub_offset` messages (JSON values, or
/// bytes) into the append after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    pub session: SessionId,
    pub seq: Seq,
    #[serde(default)]
    pub sub_offset: u64,
}

/// When a session expires, after which it reads as deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// This many seconds after it was last read or written.
    IdleSeconds(u64),
    /// At this instant, as the client gave it (RFC 3339).
    At(String),
}

fn is_first_shard(shard: &u32) -> bool {
    *shard == 0
}

/// The tenant that owns a session created by `tenant_id`: the local tenant when none did.
pub fn owner_tenant(tenant_id: Option<&str>) -> &str {
    tenant_id.unwrap_or(LOCAL_TENANT)
}

impl Session {
    /// The tenant that owns the session: the one that created it, or the local tenant for a
    /// session created with authentication off.
    pub fn tenant(&self) -> &str {
        owner_tenant(self.tenant_id.as_deref())
    }

    /// Whether a reader confined to `tenant` sees the session: only its owner does. `None` is a
    /// reader confined to no tenant (authentication off), who sees every session.
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        tenant.is_none_or(|tenant| self.tenant() == tenant)
    }
}

/// What produced a version of a session header; stored with it, so the bucket's own history is
/// the lifecycle feed and a header never changes without its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    #[serde(rename = "session.created")]
    Created,
    #[serde(rename = "session.updated")]
    Updated,
    #[serde(rename = "session.archived")]
    Archived,
    #[serde(rename = "session.unarchived")]
    Unarchived,
    /// A tombstone: the session and its events are gone, and its id may be created again.
    #[serde(rename = "session.deleted")]
    Deleted,
}

/// A session header as the bucket stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(flatten)]
    pub session: Session,
    pub change: Change,
}

/// A session header together with the head of its log.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub session: Session,
    pub last_seq: Seq,
}

/// What a client asks for when creating a session.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub id: Option<SessionId>,
    pub title: Option<String>,
    pub metadata: JsonObject,
    pub content_type: Option<String>,
    pub expiry: Option<Expiry>,
    pub forked_from: Option<ForkPoint>,
}

/// What a client sends to append one event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub content: EventContent,
    pub expected_seq: Option<Seq>,
}

/// The part of an event that identifies a retry: two requests with equal content are the same
/// request. `BTreeMap`-backed objects make the serialization, and so the hash, independent of
/// the client's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventContent {
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: JsonObject,
    pub actor: String,
    pub producer_id: String,
    pub producer_seq: u64,
    pub source: Option<String>,
    pub metadata: JsonObject,
    pub refs: JsonObject,
    pub idempotency_key: Option<String>,
}

impl EventContent {
    /// Whether this event closes its session.
    pub fn closes(&self) -> bool {
        self.kind == CLOSE_EVENT_TYPE
    }
}

/// A SHA-256 digest of an event's content, hex-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash(String);

/// The SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

impl ContentHash {
    pub fn of(content: &EventContent) -> ContentHash {
        // Serializing plain maps, strings and numbers cannot fail.
        let canonical = serde_json::to_vec(content).unwrap_or_default();
        ContentHash(sha256_hex(&canonical))
    }

    pub fn from_hex(hex: &str) -> ContentHash {
        ContentHash(hex.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A committed event exactly as tailers receive it; its serialization is what JetStream stores,
/// so every replay returns the same bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub seq: Seq,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub payload: &'a JsonObject,
    pub actor: &'a str,
    pub producer_id: &'a str,
    pub producer_seq: u64,
    pub source: Option<&'a str>,
    pub metadata: &'a JsonObject,
    pub refs: &'a JsonObject,
    pub idempotency_key: Option<&'a str>,
    pub inserted_at: &'a str,
    /// Equal to `seq`: the position a reader resumes after.
    pub cursor: Seq,
}

impl<'a> Event<'a> {
    pub fn new(seq: Seq, content: &'a EventContent, inserted_at: &'a str) -> Event<'a> {
        Event {
            seq,
            kind: &content.kind,
            payload: &content.payload,
            actor: &content.actor,
            producer_id: &content.producer_id,
            producer_seq: content.producer_seq,
            source: content.source.as_deref(),
            metadata: &content.metadata,
            refs: &content.refs,
            idempotency_key: content.idempotency_key.as_deref(),
            inserted_at,
            cursor: seq,
        }
    }
}

/// Why a reader cannot simply continue after its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Retention dropped the events right after the cursor.
    CursorExpired,
    /// The cursor is past the session's head: the session was reset or the client is wrong.
    ResumeInvalidated,
}

/// Tells a reader that it continues from `next_cursor`, not from its own cursor. Never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "gap")]
pub struct Gap {
    pub reason: GapReason,
    /// The cursor the reader asked for.
    pub from_cursor: Seq,
    /// Where delivery continues: events after this.
    pub next_cursor: Seq,
    /// The lowest cursor that still resumes without a gap.
    pub earliest_available_cursor: Seq,
    /// The session's newest committed seq.
    pub committed_cursor: Seq,
}

/// What the log needs to know of a committed event to fold it into a session's state.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The event's position in the JetStream stream (all sessions share one stream).
    pub stream_seq: u64,
    pub seq: Seq,
    pub producer_id: String,
    pub producer_seq: u64,
    pub hash: ContentHash,
    /// Whether the event closes its session (`CLOSE_EVENT_TYPE`).
    pub closes: bool,
}

/// The current time as RFC 3339 UTC with microseconds, the one timestamp format of the API.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
impl EventContent {
    /// A plain message from `producer_id` at `producer_seq`, for tests of what is decided on it.
    pub fn message(producer_id: &str, producer_seq: u64, text: &str) -> EventContent {
        let mut payload = JsonObject::new();
        payload.insert("text".into(), text.into());
        EventContent {
            kind: "message".into(),
            payload,
            actor: "agent:a".into(),
            producer_id: producer_id.into(),
            producer_seq,
            source: None,
            metadata: JsonObject::new(),
            refs: JsonObject::new(),
            idempotency_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(payload: Value) -> EventContent {
        EventContent {
            kind: "message".into(),
            payload: payload.as_object().cloned().unwrap_or_default(),
            actor: "agent:a".into(),
            producer_id: "p".into(),
            producer_seq: 1,
            source: None,
            metadata: JsonObject::new(),
            refs: JsonObject::new(),
            idempotency_key: None,
        }
    }

    #[test]
    fn session_ids_are_bounded_and_non_empty() {
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse(&"x".repeat(257)).is_err());
        assert!(SessionId::parse(&"é".repeat(128)).is_ok());
        assert!(SessionId::parse("a.b *>").is_ok());
    }

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = SessionId::generate();
        assert_eq!(id.as_str().len(), 20);
        assert!(id.as_str().starts_with("ses_"));
        assert_ne!(id, SessionId::generate());
    }

    #[test]
    fn content_hash_ignores_key_order_but_not_number_kinds() {
        let a = content(serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap());
        let b = content(serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap());
        let c = content(serde_json::from_str(r#"{"a":1.0,"b":[1,2]}"#).unwrap());
        assert_eq!(ContentHash::of(&a), ContentHash::of(&b));
        assert_ne!(ContentHash::of(&a), ContentHash::of(&c));
    }

    #[test]
    fn event_serializes_with_cursor_and_every_optional_key() {
        let content = content(json!({"text": "hi"}));
        let event = Event::new(7, &content, "2026-01-01T00:00:00.000000Z");
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["cursor"], 7);
        assert_eq!(value["source"], Value::Null);
        assert_eq!(value["refs"], json!({}));
        assert_eq!(value.as_object().unwrap().len(), 12);
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let now = timestamp_now();
        assert_eq!(now.len(), "2026-01-01T00:00:00.000000Z".len());
        assert!(now.ends_with('Z'));
    }
}
