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
    /// Shard 0's events stream (the only one without shards).
    pub events_stream: Vec<Figure>,
    /// The other shards' events streams, shard 1 first.
    pub event_shards: Vec<Vec<Figure>>,
    pub sessions_bucket: Vec<Figure>,
    pub gateway: Vec<Figure>,
    /// The last minutes' charts; the script swaps in `SystemCharts` from `charts.refresh_url`.
    pub charts: Charts,
    /// On a cluster: each events stream's and the sessions bucket's replicas.
    pub nodes: Vec<NodeTable>,
}

impl SystemPage {
    /// `base.html` marks this tab as the current one.
    fn nav(&self) -> Nav {
        Nav::System
    }

    /// The sections as `(element id, heading, figures)`, one per events shard, so the template
    /// lays them out with one loop and they cannot drift apart in markup.
    fn sections(&self) -> Vec<(String, String, &[Figure])> {
        let mut sections = vec![
            ("nats".to_owned(), "NATS".to_owned(), &self.nats[..]),
            (
                "events-stream".to_owned(),
                "Events stream".to_owned(),
                &self.events_stream[..],
            ),
        ];
        for (index, figures) in self.event_shards.iter().enumerate() {
            let shard = index + 1;
            sections.push((
                format!("events-stream-{shard}"),
                format!("Events stream, shard {shard}"),
                &figures[..],
            ));
        }
        sections.push((
            "sessions-bucket".to_owned(),
            "Sessions bucket".to_owned(),
            &self.sessions_bucket[..],
        ));
        sections.push((
            "gateway".to_owned(),
            "Gateway".to_owned(),
            &self.gateway[..],
        ));
        sections
    }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub value: String,
}

/// The system page's charts alone, the fragment the page's script fetches to refresh them.
#[derive(Debug, Clone, Template)]
#[template(source = "{% include \"charts.html\" %}", ext = "html")]
pub struct SystemCharts {
    pub charts: Charts,
}

/// Charts over one time window, sampled every `interval_seconds`.
#[derive(Debug, Clone)]
pub struct Charts {
    /// Where the script fetches a fresh `SystemCharts`.
    pub refresh_url: String,
    /// How often the script refreshes them.
    pub refresh_seconds: u64,
    /// When the newest sample was taken (Unix seconds), or 0 before the first.
    pub sampled_at: u64,
    pub window_label: String,
    pub charts: Vec<Chart>,
}

/// One chart's series over a time window.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(Unix seconds, value)`; `None` where there was nothing to measure (no line drawn).
    pub values: Vec<(u64, Option<f64>)>,
}

/// One chart, laid out as an SVG: everything is computed here, the template only places it.
#[derive(Debug, Clone)]
pub struct Chart {
    pub id: String,
    pub title: String,
    pub unit: String,
    /// No sample at all yet: the chart shows "no data yet" instead of lines.
    pub empty: bool,
    pub lines: Vec<Line>,
    /// Value gridlines, bottom to top.
    pub y_ticks: Vec<Tick>,
    /// Time labels, oldest to now.
    pub x_ticks: Vec<Tick>,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    /// Picks the series' colour: `series-0`, `series-1`, …
    pub class: String,
    /// Each run of two or more measured values as SVG polyline points, `x,y x,y …`.
    pub segments: Vec<String>,
    /// Each measured value alone between holes, drawn as a dot.
    pub dots: Vec<Point>,
    /// The newest value with its unit, or `—`.
    pub latest: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: String,
    pub y: String,
}

#[derive(Debug, Clone)]
pub struct Tick {
    /// The x or y coordinate in the chart's view box.
    pub at: String,
    pub label: String,
}

/// The chart's view box and its plot area inside it.
pub const CHART_WIDTH: f64 = 600.0;
pub const CHART_HEIGHT: f64 = 160.0;
const PLOT_LEFT: f64 = 48.0;
const PLOT_RIGHT: f64 = 592.0;
const PLOT_TOP: f64 = 8.0;
const PLOT_BOTTOM: f64 = 140.0;

impl Chart {
    /// Lays out `series` over the `window_seconds` before `now` (Unix seconds): time runs left
    /// to right, values from 0 at the bottom to a round maximum at the top.
    pub fn plot(
        id: &str,
        title: &str,
        unit: &str,
        now: u64,
        window_seconds: u64,
        series: Vec<Series>,
    ) -> Chart {
        let window = window_seconds.max(1) as f64;
        let start = now.saturating_sub(window_seconds);
        let empty = series.iter().all(|series| series.values.is_empty());
        let highest = series
            .iter()
            .flat_map(|series| series.values.iter().filter_map(|(_, value)| *value))
            .fold(0.0_f64, f64::max);
        let top = round_up(highest);
        let x = |at: u64| {
            let offset = at.saturating_sub(start).min(window_seconds) as f64;
            PLOT_LEFT + offset / window * (PLOT_RIGHT - PLOT_LEFT)
        };
        let y = |value: f64| PLOT_BOTTOM - value.clamp(0.0, top) / top * (PLOT_BOTTOM - PLOT_TOP);
        let lines = series
            .into_iter()
            .enumerate()
            .map(|(index, series)| {
                let mut runs: Vec<Vec<Point>> = Vec::new();
                let mut run = Vec::new();
                for (at, value) in &series.values {
                    match value {
                        Some(value) if *at >= start => run.push(Point {
                            x: format!("{:.1}", x(*at)),
                            y: format!("{:.1}", y(*value)),
                        }),
                        _ => runs.push(std::mem::take(&mut run)),
                    }
                }
                runs.push(run);
                let mut segments = Vec::new();
                let mut dots = Vec::new();
                for mut run in runs {
                    match run.len() {
                        0 => {}
                        1 => dots.append(&mut run),
                        _ => segments.push(
                            run.iter()
                                .map(|point| format!("{},{}", point.x, point.y))
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                    }
                }
                let latest = match series.values.last() {
                    Some((_, Some(value))) => format!("{} {unit}", number(*value)),
                    _ => "—".to_owned(),
                };
                Line {
                    name: series.name,
                    class: format!("series-{index}"),
                    segments,
                    dots,
                    latest,
                }
            })
            .collect();
        let y_ticks = [0.0, 0.5, 1.0]
            .into_iter()
            .map(|share| Tick {
                at: format!("{:.1}", y(top * share)),
                label: number(top * share),
            })
            .collect();
        let minutes = window_seconds / 60;
        let x_ticks = (0..=3)
            .map(|quarter| {
                let ago = window_seconds - window_seconds * quarter / 3;
                Tick {
                    at: format!("{:.1}", x(now - ago.min(now))),
                    label: if ago == 0 {
                        "now".to_owned()
                    } else if minutes > 0 {
                        format!("−{} min", ago / 60)
                    } else {
                        format!("−{ago} s")
                    },
                }
            })
            .collect();
        Chart {
            id: id.to_owned(),
            title: title.to_owned(),
            unit: unit.to_owned(),
            empty,
            lines,
            y_ticks,
            x_ticks,
        }
    }

    pub fn width(&self) -> f64 {
        CHART_WIDTH
    }

    pub fn height(&self) -> f64 {
        CHART_HEIGHT
    }

    pub fn plot_left(&self) -> f64 {
        PLOT_LEFT
    }

    pub fn plot_right(&self) -> f64 {
        PLOT_RIGHT
    }

    pub fn label_y(&self) -> f64 {
        CHART_HEIGHT - 4.0
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing).
fn round_up(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A value for a label: whole numbers as such, others with up to three significant decimals.
fn number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        let decimals = if value.abs() >= 1.0 { 2 } else { 3 };
        let text = format!("{value:.decimals$}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A replicated stream's nodes as its leader sees them.
#[derive(Debug, Clone)]
pub struct NodeTable {
    pub id: String,
    pub title: String,
    pub rows: Vec<NodeRow>,
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub name: String,
    /// `leader` or `follower`.
    pub role: String,
    pub current: bool,
    /// Operations behind the leader.
    pub lag: u64,
    pub offline: bool,
}
