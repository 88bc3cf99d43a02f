//! The lifecycle feed: session header changes, replayed from a cursor then live.

use std::sync::Arc;

use poem::Request;
use poem_openapi::OpenApi;
use poem_openapi::param::Query;

use super::ApiTags;
use super::error::ApiError;
use super::lenient::{Position, RawParam};
use super::stream::{Live, LiveResponse, Transport};
use crate::catalog::Catalog;

pub struct LifecycleApi {
    pub catalog: Arc<Catalog>,
    pub live: Live,
}

#[OpenApi(tag = "ApiTags::Lifecycle")]
impl LifecycleApi {
    /// Session lifecycle events after `cursor` (default 0: everything retained), then live:
    /// `{"cursor": N, "event": {"kind": "session.created" | "session.updated" |
    /// "session.archived" | "session.unarchived", "session_id": …}}`. WebSocket, or SSE with
    /// `Accept: text/event-stream` (`id:` is the cursor; `Last-Event-ID` resumes).
    #[oai(path = "/v1/lifecycle", method = "get", operation_id = "lifecycle")]
    async fn lifecycle(
        &self,
        request: &Request,
        cursor: Query<Option<RawParam<Position>>>,
    ) -> Result<LiveResponse, ApiError> {
        let transport = Transport::of(request).await?;
        let cursor = transport.cursor(request, RawParam::raw(&cursor))?;
        let changes = self.catalog.lifecycle(cursor).await?;
        Ok(self.live.respond(transport, changes, cursor, None, 1))
    }
}
