//! The lifecycle feed: session header changes, replayed from a cursor then live.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Query;

use super::ApiTags;
use super::auth::{authorize, holder};
use super::error::{ApiError, ErrorCode};
use super::raw_input::{Position, Raw};
use crate::auth::{Principal, Scope};
use crate::catalog::Catalog;
use crate::live::{Feed, Live, LiveResponse, Reader, Transport};

pub struct LifecycleApi {
    pub catalog: Arc<Catalog>,
    pub live: Live,
}

#[OpenApi(tag = "ApiTags::Lifecycle")]
impl LifecycleApi {
    /// Follow session lifecycle events: those after a cursor, then new ones live.
    ///
    /// Each event is `{"cursor": N, "event": {"kind": "session.created" | "session.updated" |
    /// "session.archived" | "session.unarchived" | "session.deleted", "session_id": …}}`,
    /// delivered after `cursor`
    /// (default 0: everything retained) over a WebSocket, or as Server-Sent Events with `Accept:
    /// text/event-stream` (`id:` is the cursor; `Last-Event-ID` resumes).
    ///
    /// Every change to a session header (create, PATCH, archive, unarchive, and a Durable Streams
    /// delete or expiry) is one event, in the order the changes were stored. `session.created`
    /// carries `title`, `metadata`, `created_at` and `version`; `session.updated` `title`,
    /// `metadata`, `updated_at` and `version`; `session.archived` and `session.unarchived`
    /// `archived`, `updated_at` and `version`; `session.deleted` `updated_at` and `version`. Appends
    /// are not lifecycle events, and archiving an archived session (or unarchiving an active one)
    /// emits none. The newest 64 changes of each session are retained; older ones are not replayed,
    /// and no gap is announced for them. Cursors increase but skip values, so a jump is not a loss.
    ///
    /// Over a WebSocket: one JSON event per text frame, pings while idle. With SSE: `: keep-alive`
    /// comments while idle. The stream closes like a session tail (1001 the gateway is going away,
    /// 1011 storage failed, 4001 the token expired, 4002 the reader fell too far behind; SSE: a
    /// last `going_away`, `storage_error`, `token_expired` or `overflow` event); reconnect, to any
    /// gateway, with the last cursor you processed and nothing is lost or repeated. With
    /// authentication on it shows only the caller's tenant, needs scope `session:read`, and answers
    /// 403 `forbidden_session` to a token pinned to one session; browsers may pass the token as
    /// `access_token` in the query. A request that is neither a WebSocket upgrade nor accepts
    /// `text/event-stream` is answered 400 `invalid_websocket_upgrade`, a bad `cursor` 400
    /// `invalid_cursor`, and with authentication on one beyond the token's quota of live streams
    /// 429 `too_many_tails`.
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
            feed: Feed::Lifecycle,
            cursor,
            gap: None,
            batch_size: 1,
            contiguous: false,
            expires_at: principal.expires_at,
            permit: self.live.admit(holder(&principal))?,
        };
        Ok(self.live.respond(transport, changes, reader))
    }
}
