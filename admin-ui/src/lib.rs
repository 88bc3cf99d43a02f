//! The Starcite admin console: server-rendered pages as askama templates over plain view
//! models, and the console's own stylesheet and script. It knows nothing of NATS or HTTP: the
//! gateway fills the view models and serves what `render` returns.
//!
//! Every value from a session (ids, titles, metadata, payloads) reaches the page through
//! askama's HTML escaping; the script builds live rows with `textContent` only.

use askama::Template;

/// The console's stylesheet, served by the gateway at `/admin/assets/admin.css`.
pub const STYLESHEET: &str = include_str!("../assets/admin.css");
/// The console's script (live timeline), served at `/admin/assets/admin.js`.
pub const SCRIPT: &str = include_str!("../assets/admin.js");

/// Which top-level page is open, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sessions,
    System,
}

/// `/admin`: the catalog, filtered and paged.
#[derive(Debug, Clone, Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    pub rows: Vec<SessionRow>,
    /// The search box: an id prefix or words of a title.
    pub search: String,
    /// The metadata filter box as typed, e.g. `tenant=acme team=research`.
    pub metadata_filter: String,
    /// `false` (active only), `true` (archived only) or `all`.
    pub archived: String,
    /// Link to the next page, when more sessions follow.
    pub next_page: Option<String>,
    /// Link back to the first page, when not on it.
    pub first_page: Option<String>,
    /// A problem with the filters, shown above the table.
    pub error: Option<String>,
}

impl SessionsPage {
    /// `base.html` marks this tab as the current one.
    fn nav(&self) -> Nav {
        Nav::Sessions
    }
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    /// Link to the session page.
    pub href: String,
    pub title: Option<String>,
    /// A one-line summary of the metadata, e.g. `tenant=acme, team=research`.
    pub metadata_summary: String,
    pub last_seq: u64,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
}

/// `/admin/sessions/{id}`: one session's header, actions and event timeline.
#[derive(Debug, Clone, Template)]
#[template(path = "session.html")]
pub struct SessionPage {
    pub id: String,
    pub title: Option<String>,
    /// The metadata as pretty-printed JSON.
    pub metadata_pretty: String,
    pub version: u64,
    pub archived: bool,
    pub last_seq: u64,
    pub created_at: String,
    pub updated_at: String,
    /// Goes into every form as the hidden `csrf` field.
    pub csrf_token: String,
    /// POST target of the rename form (fields `title`, `expected_version`, `csrf`).
    pub rename_action: String,
    /// POST target of the archive or unarchive button, whichever applies (field `csrf`).
    pub archive_action: String,
    /// Newest first.
    pub events: Vec<EventRow>,
    /// The timeline filters as typed.
    pub filter_actor: String,
    pub filter_type: String,
    pub jump_seq: String,
    pub older_page: Option<String>,
    pub newer_page: Option<String>,
    /// Set on the newest page without filters: the script follows the session from there.
    pub live: Option<LiveFeed>,
    /// A message after an action, e.g. a version conflict.
    pub notice: Option<String>,
}

impl SessionPage {
    /// A session is reached from the catalog, so the catalog's tab stays marked.
    fn nav(&self) -> Nav {
        Nav::Sessions
    }
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: u64,
    pub inserted_at: String,
    pub kind: String,
    pub actor: String,
    /// `producer_id #producer_seq`.
    pub producer: String,
    pub source: Option<String>,
    /// The payload as pretty-printed JSON.
    pub payload_pretty: String,
    /// The payload's first characters on one line, shown while collapsed.
    pub payload_preview: String,
}

/// Where the page's script reads new events: an SSE tail after `cursor`.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    pub tail_url: String,
    pub cursor: u64,
}

/// `/admin/login`: signing in with an access token that carries the admin scope (only when
/// the gateway requires tokens).
#[derive(Debug, Clone, Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf_token: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// `/admin/system`: NATS, storage and gateway figures.
#[derive(Debug, Clone, Template)]
#[template(path = "system.html")]
pub struct SystemPage {
    pub nats: Vec<Figure>,
    pub events_stream: Vec<Figure>,
    pub sessions_bucket: Vec<Figure>,
    pub gateway: Vec<Figure>,
}

impl SystemPage {
    /// `base.html` marks this tab as the current one.
    fn nav(&self) -> Nav {
        Nav::System
    }

    /// The four sections as `(element id, heading, figures)`, so the template lays them out
    /// with one loop and they cannot drift apart in markup.
    fn sections(&self) -> [(&'static str, &'static str, &[Figure]); 4] {
        [
            ("nats", "NATS", &self.nats),
            ("events-stream", "Events stream", &self.events_stream),
            ("sessions-bucket", "Sessions bucket", &self.sessions_bucket),
            ("gateway", "Gateway", &self.gateway),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub value: String,
}
