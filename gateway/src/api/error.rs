//! The one error shape of the API, `{"error": "<code>", "message": "..."}`, and the only place
//! that knows which status each failure gets.

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Enum, Object, payload::Json};
use tracing::{error, warn};

use crate::catalog::{EditError, ListError};
use crate::live::LiveError;
use crate::nats::StoreError;
use crate::sessions::error::{AppendError, CreateError, Field, InvalidInput, ReadError};

/// A stable, machine-readable error code; docs/api.md lists when each is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorCode {
    CatalogLoading,
    EventTooLarge,
    ExpectedSeqConflict,
    ExpectedVersionConflict,
    ForbiddenScope,
    ForbiddenSession,
    InternalError,
    InvalidCursor,
    InvalidEvent,
    InvalidLimit,
    InvalidListQuery,
    InvalidMetadata,
    InvalidRefs,
    InvalidRequest,
    InvalidSession,
    InvalidSessionId,
    InvalidTailBatchSize,
    InvalidWait,
    InvalidWebsocketUpgrade,
    MethodNotAllowed,
    NatsTimeout,
    NatsUnavailable,
    NotFound,
    PayloadTooLarge,
    ProducerEpochStale,
    ProducerReplayConflict,
    ProducerSeqConflict,
    RateLimited,
    SessionClosed,
    SessionExists,
    SessionNotFound,
    StreamConflict,
    StreamGone,
    StreamSeqConflict,
    TooManyTails,
    Unauthorized,
    UnsupportedMediaType,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidCursor
            | ErrorCode::InvalidEvent
            | ErrorCode::InvalidLimit
            | ErrorCode::InvalidListQuery
            | ErrorCode::InvalidMetadata
            | ErrorCode::InvalidRefs
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidSession
            | ErrorCode::InvalidSessionId
            | ErrorCode::InvalidTailBatchSize
            | ErrorCode::InvalidWait
            | ErrorCode::InvalidWebsocketUpgrade => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ExpectedSeqConflict
            | ErrorCode::ExpectedVersionConflict
            | ErrorCode::ProducerReplayConflict
            | ErrorCode::ProducerSeqConflict
            | ErrorCode::SessionClosed
            | ErrorCode::SessionExists
            | ErrorCode::StreamConflict
            | ErrorCode::StreamSeqConflict => StatusCode::CONFLICT,
            ErrorCode::EventTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::ForbiddenScope
            | ErrorCode::ForbiddenSession
            | ErrorCode::ProducerEpochStale => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::TooManyTails => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StreamGone => StatusCode::GONE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::CatalogLoading | ErrorCode::NatsTimeout | ErrorCode::NatsUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// The body of every non-2xx reply.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    // No doc comment here: it would wrap the `$ref` in an `allOf` that generators reject.
    pub error: ErrorCode,
    /// A sentence for people; its wording may change.
    pub message: String,
    /// With `expected_version_conflict`: the session's version now.
    #[oai(skip_serializing_if_is_none)]
    pub current_version: Option<u64>,
}

/// Every failure an operation can answer with, one variant per status.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or breaks a validation rule; nothing was written.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid bearer token (with authentication on); see `WWW-Authenticate`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>, #[oai(header = "WWW-Authenticate")] String),
    /// The token's scope or session pin does not allow this operation.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The session (or route) does not exist, or belongs to another tenant.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The method is not allowed on this path.
    #[oai(status = 405)]
    MethodNotAllowed(Json<ErrorBody>),
    /// The request conflicts with the session's current state; nothing was written.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body or the event is too large.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body must be `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Too many appends from this tenant: retry after `Retry-After` seconds; nothing was written.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// An unexpected failure inside the gateway.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// NATS is unreachable, electing a stream leader, or did not answer in time, or (lists) the
    /// gateway's catalog view is being built: retry the same request after `Retry-After`
    /// seconds, it is safe.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let body = Json(ErrorBody {
            error: code,
            message: message.into(),
            current_version: None,
        });
        match code.status() {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(body),
            StatusCode::NOT_FOUND => ApiError::NotFound(body),
            StatusCode::UNAUTHORIZED => {
                ApiError::Unauthorized(body, r#"Bearer realm="starcite""#.into())
            }
            StatusCode::FORBIDDEN => ApiError::Forbidden(body),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(body),
            StatusCode::CONFLICT => ApiError::Conflict(body),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(body),
            StatusCode::TOO_MANY_REQUESTS => ApiError::TooManyRequests(body, 1),
            // A leader election takes seconds; a client retrying at once would only add load.
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(body, 1),
            _ => ApiError::Internal(body),
        }
    }

    pub fn rate_limited(retry_after: std::time::Duration) -> ApiError {
        // Whole seconds, rounded up: retrying early would only be refused again.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let message = format!("Too many appends for this tenant; retry in {seconds} s");
        let body = Json(ErrorBody {
            error: ErrorCode::RateLimited,
            message,
            current_version: None,
        });
        ApiError::TooManyRequests(body, seconds.max(1))
    }

    pub fn session_not_found() -> ApiError {
        ApiError::new(ErrorCode::SessionNotFound, "Session was not found")
    }

    /// The body and, for a 429 or a 503, the seconds to wait before retrying: what a
    /// WebSocket frame carries where an HTTP reply would have a status and headers.
    pub fn into_body(self) -> (ErrorBody, Option<u64>) {
        match self {
            ApiError::TooManyRequests(Json(body), retry_after)
            | ApiError::Unavailable(Json(body), retry_after) => (body, Some(retry_after)),
            ApiError::Unauthorized(Json(body), _)
            | ApiError::BadRequest(Json(body))
            | ApiError::Forbidden(Json(body))
            | ApiError::NotFound(Json(body))
            | ApiError::MethodNotAllowed(Json(body))
            | ApiError::Conflict(Json(body))
            | ApiError::PayloadTooLarge(Json(body))
            | ApiError::UnsupportedMediaType(Json(body))
            | ApiError::Internal(Json(body)) => (body, None),
        }
    }

    /// A 503 for storage that is out of reach; the cause is logged here, never sent.
    fn storage_unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        warn!(error = %cause, "answering 503: {cause}");
        ApiError::new(
            ErrorCode::NatsUnavailable,
            "Storage is unavailable; retry the request",
        )
    }

    /// A 500 for a failure inside the gateway; the cause is logged here, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        error!(error = %cause, "answering 500: {cause}");
        ApiError::new(ErrorCode::InternalError, "Internal server error")
    }
}

impl From<InvalidInput> for ApiError {
    fn from(err: InvalidInput) -> ApiError {
        let code = match &err {
            InvalidInput::Event(_) => ErrorCode::InvalidEvent,
            InvalidInput::Metadata => ErrorCode::InvalidMetadata,
            InvalidInput::Refs => ErrorCode::InvalidRefs,
            InvalidInput::Session(_) => ErrorCode::InvalidSession,
            InvalidInput::SessionId => ErrorCode::InvalidSessionId,
            InvalidInput::Cursor => ErrorCode::InvalidCursor,
            InvalidInput::Limit => ErrorCode::InvalidLimit,
            InvalidInput::ListQuery(_) => ErrorCode::InvalidListQuery,
            InvalidInput::BatchSize => ErrorCode::InvalidTailBatchSize,
            InvalidInput::Wait => ErrorCode::InvalidWait,
            // Exhaustive on purpose: a new bounded field won't compile until it has a code.
            InvalidInput::TooDeep { field, .. } | InvalidInput::TooLarge { field, .. } => {
                match field {
                    Field::Payload => ErrorCode::InvalidEvent,
                    Field::Metadata => ErrorCode::InvalidMetadata,
                    Field::Refs => ErrorCode::InvalidRefs,
                    Field::Title => ErrorCode::InvalidSession,
                }
            }
        };
        ApiError::new(code, err.to_string())
    }
}

impl From<EditError> for ApiError {
    fn from(err: EditError) -> ApiError {
        match err {
            EditError::SessionNotFound(_) => ApiError::session_not_found(),
            EditError::VersionConflict { current, .. } => {
                let mut conflict =
                    ApiError::new(ErrorCode::ExpectedVersionConflict, err.to_string());
                if let ApiError::Conflict(body) = &mut conflict {
                    body.current_version = Some(current);
                }
                conflict
            }
            EditError::Invalid(err) => err.into(),
            EditError::Store(err) => err.into(),
        }
    }
}

impl From<ListError> for ApiError {
    fn from(err: ListError) -> ApiError {
        match err {
            ListError::Loading => ApiError::new(
                ErrorCode::CatalogLoading,
                "This gateway is building its session catalog; retry the list shortly",
            ),
            ListError::View(err) => ApiError::internal(&err),
            ListError::Store(err) => err.into(),
        }
    }
}

/// Logs once, here where it is handled, and keeps NATS internals out of the reply.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Unavailable(_) => ApiError::storage_unavailable(&err),
            StoreError::Timeout(_) => {
                warn!(error = %err, "answering 503: {err}");
                ApiError::new(
                    ErrorCode::NatsTimeout,
                    "Storage did not confirm in time; the request may or may not have been stored. \
                     Retrying an append is safe (it is deduplicated); a retried create with the \
                     same id answers session_exists if the first one landed",
                )
            }
            StoreError::Corrupt(_) => ApiError::internal(&err),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(err: CreateError) -> ApiError {
        match err {
            CreateError::SessionExists(_) => {
                ApiError::new(ErrorCode::SessionExists, "Session already exists")
            }
            CreateError::Store(err) => err.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> ApiError {
        match err {
            ReadError::SessionNotFound(_) => ApiError::session_not_found(),
            ReadError::Store(err) => err.into(),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(err: AppendError) -> ApiError {
        // Exhaustive on purpose: a new domain variant won't compile until it has a status.
        let code = match err {
            AppendError::Store(err) => return err.into(),
            AppendError::SessionNotFound(_) => return ApiError::session_not_found(),
            AppendError::Contended { .. } | AppendError::Abandoned => {
                return ApiError::storage_unavailable(&err);
            }
            AppendError::Inconsistent(_) => return ApiError::internal(&err),
            AppendError::ExpectedSeqConflict { .. } => ErrorCode::ExpectedSeqConflict,
            AppendError::ProducerSeqConflict { .. } => ErrorCode::ProducerSeqConflict,
            AppendError::ProducerReplayConflict => ErrorCode::ProducerReplayConflict,
            AppendError::SessionClosed { .. } => ErrorCode::SessionClosed,
            AppendError::EventTooLarge => ErrorCode::EventTooLarge,
        };
        ApiError::new(code, err.to_string())
    }
}

impl From<LiveError> for ApiError {
    fn from(err: LiveError) -> ApiError {
        let code = match err {
            LiveError::UpgradeRequired | LiveError::UpgradeFailed(_) => {
                ErrorCode::InvalidWebsocketUpgrade
            }
            LiveError::TooManyTails => ErrorCode::TooManyTails,
        };
        ApiError::new(code, err.to_string())
    }
}

/// Gives poem's own errors (unknown route, bad method, unreadable body) the same JSON shape.
pub fn from_poem_error(err: &poem::Error) -> ApiError {
    let status = err.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "No such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "This method is not allowed on this path".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorCode::PayloadTooLarge,
            "The request body is larger than the gateway accepts".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            format!("Send the body as application/json: {err}"),
        ),
        status if status.is_client_error() => {
            (ErrorCode::InvalidRequest, format!("Invalid request: {err}"))
        }
        _ => {
            error!(error = %err, "answering 500: {err}");
            (ErrorCode::InternalError, "Internal server error".to_owned())
        }
    };
    ApiError::new(code, message)
}
