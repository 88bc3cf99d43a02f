//! The session log's failures in domain words; `api::error` maps them to status codes.

use super::limits::{MAX_PAGE_SIZE, MAX_WAIT_SECONDS};
use super::model::{MAX_SESSION_ID_BYTES, Seq, SessionId};
use super::state::Rejection;
use crate::nats::StoreError;

/// Client input that breaks a rule of docs/api.md; nothing has been written. The texts are
/// the messages clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("Invalid event payload: {0}")]
    Event(String),
    #[error("Invalid metadata payload: `metadata` must be a JSON object of string filters")]
    Metadata,
    #[error("Invalid refs payload: `refs` must be a JSON object")]
    Refs,
    #[error("Invalid session payload: {0}")]
    Session(String),
    #[error("Invalid session id: a non-empty string of at most {MAX_SESSION_ID_BYTES} bytes")]
    SessionId,
    #[error("Invalid cursor value: a non-negative integer")]
    Cursor,
    #[error("Invalid limit value: an integer from 1 to {MAX_PAGE_SIZE}")]
    Limit,
    #[error("Invalid list query: {0}")]
    ListQuery(String),
    #[error("Invalid batch size: an integer from 1 to {MAX_PAGE_SIZE}")]
    BatchSize,
    #[error("Invalid wait: whole seconds from 0 to {MAX_WAIT_SECONDS}")]
    Wait,
    #[error("Invalid {field}: nested deeper than {max_depth} levels")]
    TooDeep { field: Field, max_depth: usize },
    #[error("Invalid {field}: larger than {max_bytes} bytes")]
    TooLarge { field: Field, max_bytes: usize },
}

/// An input field the API bounds in depth or size; it names the field in messages as the
/// client spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Payload,
    Metadata,
    Refs,
    Title,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Payload => "payload",
            Field::Metadata => "metadata",
            Field::Refs => "refs",
            Field::Title => "title",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("session `{0}` already exists")]
    SessionExists(SessionId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("session `{0}` does not exist")]
    SessionNotFound(SessionId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("session `{0}` does not exist")]
    SessionNotFound(SessionId),
    #[error("Expected seq {expected}, current seq is {actual}")]
    ExpectedSeqConflict { expected: Seq, actual: Seq },
    #[error("Producer {producer_id} expected seq {expected}, got {got}")]
    ProducerSeqConflict {
        producer_id: String,
        expected: u64,
        got: u64,
    },
    #[error("Producer sequence was already used with different event content")]
    ProducerReplayConflict,
    #[error("The session was closed at seq {last_seq}")]
    SessionClosed { last_seq: Seq },
    #[error("The event is larger than the storage accepts")]
    EventTooLarge,
    /// The session's appends lost the race to other writers on every attempt; nothing of the
    /// request was stored.
    #[error("session `{id}` kept changing during {attempts} attempts")]
    Contended { id: SessionId, attempts: u32 },
    /// The request's committer went away before answering it (its task was stopped).
    #[error("the append was abandoned before it was answered")]
    Abandoned,
    /// A rule the writer relies on did not hold: the stream's events do not lead to its head,
    /// or the gateway broke one of its own (a committer failed). Not the client's doing.
    #[error("the session log is inconsistent: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppendError {
    /// Whether the gateway or its storage failed rather than the request being refused; the
    /// same request may succeed when retried.
    pub fn is_failure(&self) -> bool {
        match self {
            AppendError::Contended { .. }
            | AppendError::Abandoned
            | AppendError::Inconsistent(_)
            | AppendError::Store(_) => true,
            AppendError::SessionNotFound(_)
            | AppendError::ExpectedSeqConflict { .. }
            | AppendError::ProducerSeqConflict { .. }
            | AppendError::ProducerReplayConflict
            | AppendError::SessionClosed { .. }
            | AppendError::EventTooLarge => false,
        }
    }
}

impl From<Rejection> for AppendError {
    fn from(rejection: Rejection) -> AppendError {
        match rejection {
            Rejection::ExpectedSeq { expected, actual } => {
                AppendError::ExpectedSeqConflict { expected, actual }
            }
            Rejection::ProducerSeq {
                producer_id,
                expected,
                got,
            } => AppendError::ProducerSeqConflict {
                producer_id,
                expected,
                got,
            },
            Rejection::ProducerReplay => AppendError::ProducerReplayConflict,
            Rejection::Closed { last_seq } => AppendError::SessionClosed { last_seq },
        }
    }
}

impl From<ReadError> for AppendError {
    fn from(err: ReadError) -> AppendError {
        match err {
            ReadError::SessionNotFound(id) => AppendError::SessionNotFound(id),
            ReadError::Store(err) => AppendError::Store(err),
        }
    }
}
