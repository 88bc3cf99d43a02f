//! The lifecycle feed: session header changes, replayed from a cursor then live.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Query;

use super::ApiTags;
use super::auth::{authorize, holder};
use super::error::{ApiError, ErrorCode};
use super::lenient::{Position, Raw};
use super::stream::{Live, LiveResponse, Reader, Transport};
use crate::auth::{Principal, Scope};
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
        principal: Data<&Principal>,
        request: &Request,
        cursor: Query<Option<Raw<Position>>>,
    ) -> Result<LiveResponse, ApiError> {
        let transport = Transport::of(request).await?;
        let cursor = transport.cursor(request, Raw::raw(&cursor))?;
        // Lifecycle events are about many sessions: a token pinned to one gets none.
        authorize(&principal, Scope::Read, None)?;
        if principal.session.is_some() {
            return Err(ApiError::new(
                ErrorCode::ForbiddenSession,
                "A token pinned to one session cannot read the lifecycle feed",
            ));
        }
        let tenant = principal.authenticated.then(|| principal.tenant.clone());
        let changes = self.catalog.lifecycle(cursor, tenant).await?;
        let reader = Reader {
            cursor,
            gap: None,
            batch_size: 1,
            contiguous: false,
            expires_at: principal.expires_at,
            holder: holder(&principal),
        };
        self.live.respond(transport, changes, reader)
    }
}
