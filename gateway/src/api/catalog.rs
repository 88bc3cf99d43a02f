//! Catalog operations: list, patch, archive, unarchive, and the lifecycle feed.

use std::sync::Arc;
use std::time::Duration;

use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::{Object, OpenApi, payload::Json};

use super::ApiTags;
use super::body::JsonBody;
use super::error::ApiError;
use super::sessions::{SessionBody, session_id};
use super::stream::{LiveResponse, Transport};
use crate::catalog::{Catalog, input};
use crate::sessions::error::InvalidInput;
use crate::shutdown::Shutdown;

/// Body of `PATCH /v1/sessions/{id}`: at least a `title` or a non-empty `metadata`.
#[derive(Debug, Object)]
struct PatchSessionRequest {
    /// A new title, or `null` to clear it.
    title: Option<String>,
    /// Merged into the metadata: given top-level keys overwrite, others are kept.
    metadata: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Apply only if the session is at this version (a decimal string is accepted too).
    #[oai(validator(minimum(value = "1")))]
    expected_version: Option<u64>,
}

/// One page of sessions, sorted by id.
#[derive(Debug, Object)]
struct SessionPage {
    sessions: Vec<SessionBody>,
    /// Pass as `cursor` for the next page; `null` when no more sessions follow.
    next_cursor: Option<String>,
}

pub struct CatalogApi {
    pub catalog: Arc<Catalog>,
    pub ping_interval: Duration,
    pub shutdown: Shutdown,
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl CatalogApi {
    /// List sessions sorted by id. Filter by metadata with `metadata[key]=value` or
    /// `metadata.key=value` (repeatable, ANDed, exact match on string values); `archived` is
    /// `false` (default), `true` or `all`; `cursor` is the `next_cursor` of the previous page.
    #[oai(path = "/v1/sessions", method = "get", operation_id = "list_sessions")]
    async fn list(
        &self,
        request: &Request,
        #[oai(name = "limit")] _limit: Query<Option<String>>,
        #[oai(name = "cursor")] _cursor: Query<Option<String>>,
        #[oai(name = "archived")] _archived: Query<Option<String>>,
    ) -> Result<Json<SessionPage>, ApiError> {
        // The documented parameters are read again with the free-form metadata filters, from
        // the raw query, so one parser applies every rule and its order.
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
                .map_err(|err| InvalidInput::ListQuery(err.to_string()))?;
        let query = input::list_query(&pairs)?;
        let page = self.catalog.list(&query).await?;
        Ok(Json(SessionPage {
            sessions: page.sessions.into_iter().map(SessionBody::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Rename, retag (shallow metadata merge) or both; `expected_version` makes it a
    /// compare-and-set (409 `expected_version_conflict` with `current_version`).
    #[oai(
        path = "/v1/sessions/:id",
        method = "patch",
        operation_id = "patch_session"
    )]
    async fn patch(
        &self,
        id: Path<String>,
        body: JsonBody<PatchSessionRequest>,
    ) -> Result<Json<SessionBody>, ApiError> {
        let body = body.into_value().map_err(InvalidInput::Session)?;
        let patch = input::session_patch(body)?;
        let id = session_id(&id)?;
        Ok(Json(self.catalog.patch(&id, patch).await?.into()))
    }

    /// Hide a session from default lists. Idempotent; events stay readable and appendable.
    #[oai(
        path = "/v1/sessions/:id/archive",
        method = "post",
        operation_id = "archive_session"
    )]
    async fn archive(&self, id: Path<String>) -> Result<Json<SessionBody>, ApiError> {
        let id = session_id(&id)?;
        Ok(Json(self.catalog.set_archived(&id, true).await?.into()))
    }

    /// Show an archived session in default lists again. Idempotent.
    #[oai(
        path = "/v1/sessions/:id/unarchive",
        method = "post",
        operation_id = "unarchive_session"
    )]
    async fn unarchive(&self, id: Path<String>) -> Result<Json<SessionBody>, ApiError> {
        let id = session_id(&id)?;
        Ok(Json(self.catalog.set_archived(&id, false).await?.into()))
    }

    /// Session lifecycle events after `cursor` (default 0: everything retained), then live:
    /// `{"cursor": N, "event": {"kind": "session.created" | "session.updated" |
    /// "session.archived" | "session.unarchived", "session_id": …}}`. WebSocket, or SSE with
    /// `Accept: text/event-stream` (`id:` is the cursor; `Last-Event-ID` resumes).
    #[oai(path = "/v1/lifecycle", method = "get", operation_id = "lifecycle")]
    async fn lifecycle(
        &self,
        request: &Request,
        cursor: Query<Option<String>>,
    ) -> Result<LiveResponse, ApiError> {
        let transport = Transport::of(request).await?;
        let cursor = transport.cursor(request, cursor.0.as_deref())?;
        let changes = self.catalog.lifecycle(cursor).await?;
        let items = crate::tail::follow(changes, cursor, self.ping_interval, self.shutdown.clone());
        Ok(transport.respond(items))
    }
}
