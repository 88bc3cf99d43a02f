//! Reads what a page shows from the domain and fills its `admin_ui` view model; the handlers
//! in `admin` render it and give every answer its status.

use admin_ui::{EventRow, LiveFeed, SessionPage, SessionRow, SessionsPage};

use serde_json::Value;

use super::{Admin, Viewer};
use crate::catalog::index::{ArchivedFilter, ListQuery, ViewError};
use crate::catalog::input::SessionPatch;
use crate::catalog::{EditError, ListError};
use crate::nats::StoreError;
use crate::sessions::error::{InvalidInput, ReadError};
use crate::sessions::model::{Session, SessionId};

/// Sessions per catalog page and events per timeline page.
const PAGE: u64 = 50;
/// How far a filtered timeline looks back for matches before offering "older".
const FILTER_SCAN: u64 = 5000;

/// Why a page could not be shown or an action did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No such session, or another tenant's: the console shows both alike.
    #[error("no such session")]
    SessionNotFound,
    #[error("someone changed this session meanwhile")]
    VersionConflict,
    /// This gateway's catalog view is being built; the sessions page shows once it is.
    #[error("the session catalog is being built")]
    CatalogLoading,
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    View(#[from] ViewError),
}

impl From<ReadError> for PageError {
    fn from(err: ReadError) -> PageError {
        match err {
            ReadError::SessionNotFound(_) => PageError::SessionNotFound,
            ReadError::Store(err) => PageError::Store(err),
        }
    }
}

impl From<ListError> for PageError {
    fn from(err: ListError) -> PageError {
        match err {
            ListError::Loading => PageError::CatalogLoading,
            ListError::View(err) => PageError::View(err),
            ListError::Store(err) => PageError::Store(err),
        }
    }
}

impl From<EditError> for PageError {
    fn from(err: EditError) -> PageError {
        match err {
            EditError::SessionNotFound(_) => PageError::SessionNotFound,
            EditError::VersionConflict { .. } => PageError::VersionConflict,
            EditError::Invalid(err) => PageError::Invalid(err),
            EditError::Store(err) => PageError::Store(err),
        }
    }
}

/// Percent-encodes an id for a URL path segment.
fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

pub fn session_href(id: &str) -> String {
    format!("/admin/sessions/{}", path_segment(id))
}

/// A link with its non-empty query parameters.
fn link(path: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<_> = params
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
    if params.is_empty() {
        return path.to_owned();
    }
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(params).unwrap_or_default()
    )
}

pub async fn sessions(
    admin: &Admin,
    viewer: &Viewer,
    search: Option<String>,
    metadata: Option<String>,
    archived: Option<String>,
    cursor: Option<String>,
) -> Result<SessionsPage, PageError> {
    let search = search.unwrap_or_default().trim().to_owned();
    let metadata_filter = metadata.unwrap_or_default().trim().to_owned();
    let archived = archived.unwrap_or_else(|| "false".to_owned());
    let mut page = SessionsPage {
        rows: Vec::new(),
        search: search.clone(),
        metadata_filter: metadata_filter.clone(),
        archived: archived.clone(),
        next_page: None,
        first_page: None,
        error: None,
    };
    let pairs: Result<Vec<(String, String)>, String> = metadata_filter
        .split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(format!("`{pair}` is not a key=value filter")),
        })
        .collect();
    let metadata = match pairs {
        Ok(pairs) => pairs,
        Err(err) => {
            page.error = Some(err);
            return Ok(page);
        }
    };
    let archived_filter = match archived.as_str() {
        "true" => ArchivedFilter::Archived,
        "all" => ArchivedFilter::All,
        _ => ArchivedFilter::Active,
    };
    let cursor = cursor.filter(|cursor| !cursor.is_empty());
    let query = ListQuery {
        limit: PAGE as usize,
        after: cursor.clone(),
        metadata,
        archived: archived_filter,
        tenant: viewer.tenant.clone(),
        only: None,
        search: Some(search.clone()).filter(|search| !search.is_empty()),
    };
    let listed = admin.catalog.list(&query).await?;
    let filters = [
        ("q", search.as_str()),
        ("metadata", metadata_filter.as_str()),
        ("archived", archived.as_str()),
    ];
    page.next_page = listed.next_cursor.map(|next| {
        let mut params = filters.to_vec();
        params.push(("cursor", &next));
        link("/admin", &params)
    });
    page.first_page = cursor.map(|_| link("/admin", &filters));
    page.rows = listed
        .sessions
        .into_iter()
        .map(|summary| {
            let session = summary.session;
            SessionRow {
                href: session_href(session.id.as_str()),
                metadata_summary: metadata_summary(&session),
                id: session.id.into(),
                title: session.title,
                last_seq: summary.last_seq,
                created_at: session.created_at,
                updated_at: session.updated_at,
                archived: session.archived,
            }
        })
        .collect();
    Ok(page)
}

fn metadata_summary(session: &Session) -> String {
    session
        .metadata
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The timeline the page asked for.
pub struct Timeline {
    pub actor: String,
    pub kind: String,
    /// "Jump to seq" as typed.
    pub jump: String,
    /// Show events before this seq.
    pub before: Option<u64>,
}

pub async fn session(
    admin: &Admin,
    viewer: &Viewer,
    raw_id: &str,
    timeline: Timeline,
    csrf_token: &str,
    notice: Option<String>,
) -> Result<SessionPage, PageError> {
    let id = SessionId::parse(raw_id).map_err(|_| PageError::SessionNotFound)?;
    let summary = admin.log.get(&id).await?;
    if !summary.session.visible_to(viewer.tenant.as_deref()) {
        return Err(PageError::SessionNotFound);
    }
    let last_seq = summary.last_seq;
    let filtering = !timeline.actor.is_empty() || !timeline.kind.is_empty();
    let end = match timeline.jump.trim().parse::<u64>() {
        Ok(seq) => seq.min(last_seq) + 1,
        Err(_) => timeline.before.unwrap_or(last_seq + 1).min(last_seq + 1),
    };
    let (events, oldest_read) = read_timeline(admin, &id, end, &timeline, filtering).await?;
    let href = session_href(id.as_str());
    let filters = [
        ("actor", timeline.actor.as_str()),
        ("type", timeline.kind.as_str()),
    ];
    let page_link = |before: u64| {
        let before = before.to_string();
        let mut params = filters.to_vec();
        params.push(("before", &before));
        link(&href, &params)
    };
    let session = summary.session;
    let page = SessionPage {
        id: session.id.to_string(),
        title: session.title,
        metadata_pretty: serde_json::to_string_pretty(&session.metadata).unwrap_or_default(),
        version: session.version,
        archived: session.archived,
        last_seq,
        created_at: session.created_at,
        updated_at: session.updated_at,
        csrf_token: csrf_token.to_owned(),
        rename_action: format!("{href}/rename"),
        archive_action: format!(
            "{href}/{}",
            if session.archived {
                "unarchive"
            } else {
                "archive"
            }
        ),
        events,
        filter_actor: timeline.actor.clone(),
        filter_type: timeline.kind.clone(),
        jump_seq: timeline.jump.clone(),
        older_page: (oldest_read > 1).then(|| page_link(oldest_read)),
        newer_page: (end <= last_seq).then(|| page_link(end + PAGE)),
        live: (!filtering && end > last_seq).then(|| LiveFeed {
            tail_url: format!("{href}/live"),
            cursor: last_seq,
        }),
        notice: notice.map(|notice| match notice.as_str() {
            "version_conflict" => {
                "Someone changed this session meanwhile: review it and try again.".to_owned()
            }
            "missing" => "That session no longer exists.".to_owned(),
            _ => "The action could not be completed; try again.".to_owned(),
        }),
    };
    Ok(page)
}

/// Events before `end`, newest first: one page, or with filters, up to a page of matches
/// from a bounded look back. Also returns the oldest seq read, where "older" continues.
async fn read_timeline(
    admin: &Admin,
    id: &SessionId,
    end: u64,
    timeline: &Timeline,
    filtering: bool,
) -> Result<(Vec<EventRow>, u64), PageError> {
    let mut rows = Vec::new();
    let mut window_end = end;
    let step = if filtering { 200 } else { PAGE };
    while window_end > 1 && (rows.len() as u64) < PAGE && end - window_end < FILTER_SCAN {
        let start = window_end.saturating_sub(step).max(1);
        let page = admin
            .log
            .read_page(id, start - 1, (window_end - start) as usize)
            .await?;
        let mut window: Vec<EventRow> = page
            .events
            .iter()
            .filter_map(|json| serde_json::from_slice::<Value>(json).ok())
            .filter(|event| event["seq"].as_u64().is_some_and(|seq| seq < window_end))
            .filter(|event| timeline.actor.is_empty() || event["actor"] == timeline.actor.as_str())
            .filter(|event| timeline.kind.is_empty() || event["type"] == timeline.kind.as_str())
            .map(event_row)
            .collect();
        window.reverse();
        rows.extend(window);
        // Retention may have dropped the start of the window: continue below what exists.
        window_end = match page.gap {
            Some(gap) => gap.next_cursor.min(start),
            None => start,
        };
        if !filtering {
            break;
        }
    }
    rows.truncate(PAGE as usize);
    let oldest_read = rows
        .last()
        .map_or(window_end, |row| row.seq.min(window_end));
    Ok((rows, oldest_read))
}

fn event_row(event: Value) -> EventRow {
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
    let compact = event["payload"].to_string();
    let payload_preview = if compact.chars().count() > 120 {
        format!("{}…", compact.chars().take(120).collect::<String>())
    } else {
        compact
    };
    EventRow {
        seq: event["seq"].as_u64().unwrap_or_default(),
        inserted_at: text("inserted_at"),
        kind: text("type"),
        actor: text("actor"),
        producer: format!("{} #{}", text("producer_id"), event["producer_seq"]),
        source: event["source"].as_str().map(str::to_owned),
        payload_pretty: serde_json::to_string_pretty(&event["payload"]).unwrap_or_default(),
        payload_preview,
    }
}

pub async fn rename(
    admin: &Admin,
    viewer: &Viewer,
    id: &str,
    title: Option<String>,
    expected_version: Option<u64>,
) -> Result<(), PageError> {
    let id = visible(admin, viewer, id).await?;
    let patch = SessionPatch {
        title: Some(title),
        metadata: None,
        expected_version,
    };
    admin.catalog.patch(&id, patch).await?;
    Ok(())
}

pub async fn set_archived(
    admin: &Admin,
    viewer: &Viewer,
    id: &str,
    archived: bool,
) -> Result<(), PageError> {
    let id = visible(admin, viewer, id).await?;
    admin.catalog.set_archived(&id, archived).await?;
    Ok(())
}

/// The session, if the viewer's tenant owns it; another tenant's is as missing as none.
pub async fn visible(admin: &Admin, viewer: &Viewer, raw: &str) -> Result<SessionId, PageError> {
    let id = SessionId::parse(raw).map_err(|_| PageError::SessionNotFound)?;
    admin.log.visible_to(&id, viewer.tenant.as_deref()).await?;
    Ok(id)
}
