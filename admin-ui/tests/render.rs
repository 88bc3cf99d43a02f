//! Renders every admin page the way the gateway does, with hostile session data, and checks
//! that nothing from a session can become markup, that empty states and live mode show the
//! right elements, and that the console needs nothing from the network.
//!
//! One file above the usual length on purpose: every page's tests share the hostile-data
//! builders and the inertness checks at the top, and one binary links once.

use admin_ui::{
    Chart, Charts, EventRow, Figure, LiveFeed, NodeRow, NodeTable, Point, SCRIPT, STYLESHEET,
    Series, SessionPage, SessionRow, SessionsPage, SystemCharts, SystemPage,
};
use askama::Template;

/// Closes a `<script>` the page might be in and opens one of its own.
const SCRIPT_BREAKOUT: &str = "</script><script>alert(1)</script>";
/// Leaves an attribute value and adds an element with a handler.
const ATTRIBUTE_BREAKOUT: &str = "\"><img src=x onerror=alert(1)>";

/// Both attacks in one value, for every field a session controls.
fn hostile(field: &str) -> String {
    format!("{field}{SCRIPT_BREAKOUT}{ATTRIBUTE_BREAKOUT}'")
}

/// The text as askama's HTML escaper writes it (numeric character references).
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// No hostile value broke out: the page holds only the markup its template wrote.
fn assert_inert(html: &str, expected_scripts: usize) {
    assert!(!html.contains("<script>alert(1)"), "raw script in:\n{html}");
    assert!(!html.contains("<img"), "raw img in:\n{html}");
    assert_eq!(
        html.matches("<script").count(),
        expected_scripts,
        "in:\n{html}"
    );
    assert!(
        html.contains(&escaped(SCRIPT_BREAKOUT)),
        "escaped script missing in:\n{html}"
    );
    assert!(
        html.contains(&escaped(ATTRIBUTE_BREAKOUT)),
        "escaped img missing in:\n{html}"
    );
}

fn assert_offline(text: &str) {
    assert!(!text.contains("http://"), "a network URL in:\n{text}");
    assert!(!text.contains("https://"), "a network URL in:\n{text}");
    assert!(!text.contains("@import"), "an import in:\n{text}");
}

fn session_row(n: u64) -> SessionRow {
    SessionRow {
        id: hostile(&format!("ses_{n}")),
        href: hostile("/admin/sessions/x"),
        title: Some(hostile("title")),
        metadata_summary: hostile("tenant=acme"),
        last_seq: n,
        created_at: hostile("2025-01-01T00:00:00Z"),
        updated_at: hostile("2025-01-02T00:00:00Z"),
        archived: false,
    }
}

fn sessions_page(rows: Vec<SessionRow>) -> SessionsPage {
    SessionsPage {
        rows,
        search: hostile("search"),
        metadata_filter: hostile("k=v"),
        archived: "false".to_owned(),
        next_page: Some(hostile("/admin?after=1")),
        first_page: Some(hostile("/admin?")),
        error: Some(hostile("bad filter")),
    }
}

fn event_row(seq: u64) -> EventRow {
    EventRow {
        seq,
        inserted_at: hostile("2025-01-01T00:00:00Z"),
        kind: hostile("message"),
        actor: hostile("agent:planner"),
        producer: hostile("writer #1"),
        source: Some(hostile("cli")),
        payload_pretty: hostile("{\n  \"text\": \"hi\"\n}"),
        payload_preview: hostile("{\"text\":\"hi\"}"),
    }
}

fn session_page(events: Vec<EventRow>, live: Option<LiveFeed>) -> SessionPage {
    SessionPage {
        id: hostile("ses_1"),
        title: Some(hostile("title")),
        metadata_pretty: hostile("{}"),
        version: 7,
        archived: false,
        last_seq: 42,
        created_at: hostile("2025-01-01T00:00:00Z"),
        updated_at: hostile("2025-01-02T00:00:00Z"),
        csrf_token: hostile("csrf-token"),
        rename_action: hostile("/admin/sessions/ses_1/rename"),
        archive_action: hostile("/admin/sessions/ses_1/archive"),
        events,
        filter_actor: hostile("actor"),
        filter_type: hostile("type"),
        jump_seq: hostile("12"),
        older_page: Some(hostile("/older")),
        newer_page: Some(hostile("/newer")),
        live,
        notice: Some(hostile("version conflict")),
    }
}

fn hostile_live() -> LiveFeed {
    LiveFeed {
        tail_url: hostile("/v1/sessions/ses_1/tail"),
        cursor: 42,
    }
}

fn figures(label: &str) -> Vec<Figure> {
    vec![Figure {
        label: hostile(label),
        value: hostile("1 MiB"),
    }]
}

fn system_page() -> SystemPage {
    SystemPage {
        nats: figures("server"),
        events_stream: figures("messages"),
        event_shards: vec![figures("shard messages")],
        sessions_bucket: figures("keys"),
        gateway: figures("uptime"),
        charts: charts(vec![known_chart()]),
        nodes: vec![NodeTable {
            id: "events-nodes".to_owned(),
            title: "Events stream nodes".to_owned(),
            rows: vec![
                NodeRow {
                    name: hostile("n1"),
                    role: "leader".to_owned(),
                    current: true,
                    lag: 0,
                    offline: false,
                },
                NodeRow {
                    name: "n2".to_owned(),
                    role: "follower".to_owned(),
                    current: false,
                    lag: 42,
                    offline: true,
                },
            ],
        }],
    }
}

fn charts(charts: Vec<Chart>) -> Charts {
    Charts {
        refresh_url: "/admin/system/charts".to_owned(),
        refresh_seconds: 5,
        sampled_at: 1_000,
        window_label: "15m".to_owned(),
        charts,
    }
}

/// 10 appends/s at the window's start, 20/s half-way, 5/s now, with a hole before now; the
/// window is 900 s ending at 1,000, so x runs 48..592 over 100..1,000 and y 140..8 over 0..20.
fn known_chart() -> Chart {
    Chart::plot(
        "appends",
        "Appends",
        "events/s",
        1_000,
        900,
        vec![Series {
            name: "appended".to_owned(),
            values: vec![
                (100, Some(10.0)),
                (550, Some(20.0)),
                (775, None),
                (1_000, Some(5.0)),
            ],
        }],
    )
}

/// The text between the first `open` and the `close` after it.
fn between<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in:\n{html}"))
        + open.len();
    let end = html[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} after {open} in:\n{html}"))
        + start;
    &html[start..end]
}

#[test]
fn sessions_page_escapes_every_session_value() {
    let html = sessions_page(vec![session_row(1), session_row(2)])
        .render()
        .unwrap();
    assert_inert(&html, 0);
    assert!(html.contains(&format!(
        "<tr data-session-id=\"{}\">",
        escaped(&hostile("ses_1"))
    )));
    assert!(html.contains(&format!(
        "<p class=\"error\" role=\"alert\">{}</p>",
        escaped(&hostile("bad filter"))
    )));
    assert!(html.contains(&format!(
        "value=\"{}\" placeholder=\"id prefix or title\"",
        escaped(&hostile("search"))
    )));
    assert!(html.contains("<table id=\"sessions-table\">"));
    assert!(!html.contains("id=\"empty\""));
}

#[test]
fn sessions_page_without_rows_says_so() {
    let mut page = sessions_page(Vec::new());
    page.error = None;
    let html = page.render().unwrap();
    assert!(html.contains("<p id=\"empty\" class=\"empty\">No sessions match.</p>"));
    assert!(!html.contains("sessions-table"));
    assert!(!html.contains("class=\"error\""));
}

#[test]
fn sessions_page_marks_untitled_and_archived_rows() {
    let mut row = session_row(1);
    row.title = None;
    row.archived = true;
    let html = sessions_page(vec![row, session_row(2)]).render().unwrap();
    assert_eq!(html.matches(">untitled</span>").count(), 1);
    assert_eq!(
        html.matches("class=\"badge badge-archived\">archived<")
            .count(),
        1
    );
}

#[test]
fn sessions_page_selects_the_archived_filter_and_links_pages() {
    for (value, label) in [("false", "Active"), ("true", "Archived"), ("all", "All")] {
        let mut page = sessions_page(Vec::new());
        page.archived = value.to_owned();
        let html = page.render().unwrap();
        assert!(html.contains(&format!(
            "<option value=\"{value}\" selected>{label}</option>"
        )));
        assert_eq!(html.matches(" selected>").count(), 1, "for {value}");
    }
    let html = sessions_page(Vec::new()).render().unwrap();
    assert!(html.contains(&format!(
        "<a id=\"next-page\" href=\"{}\">Next page →</a>",
        escaped(&hostile("/admin?after=1"))
    )));
    assert!(html.contains(">First page</a>"));

    let mut page = sessions_page(Vec::new());
    page.next_page = None;
    page.first_page = None;
    let html = page.render().unwrap();
    assert!(!html.contains("class=\"pager\""));
}

#[test]
fn session_page_escapes_every_session_value() {
    let html = session_page(vec![event_row(2), event_row(1)], Some(hostile_live()))
        .render()
        .unwrap();
    // The page's own script tag is the only one.
    assert_inert(&html, 1);
    assert!(html.contains(&format!(
        "<p id=\"notice\" class=\"notice\" role=\"status\">{}</p>",
        escaped(&hostile("version conflict"))
    )));
    assert!(html.contains(&format!(
        "<pre>{}</pre>",
        escaped(&hostile("{\n  \"text\": \"hi\"\n}"))
    )));
    assert!(html.contains(&format!(
        "<form id=\"rename-form\" class=\"inline-form\" method=\"post\" action=\"{}\">",
        escaped(&hostile("/admin/sessions/ses_1/rename"))
    )));
    assert!(html.contains(&format!(
        "data-tail-url=\"{}\" data-cursor=\"42\"",
        escaped(&hostile("/v1/sessions/ses_1/tail"))
    )));
    assert_eq!(html.matches("<li class=\"event\" data-seq=").count(), 2);
    assert!(html.find("data-seq=\"2\"") < html.find("data-seq=\"1\""));
}

#[test]
fn session_page_puts_the_csrf_token_in_both_forms() {
    let html = session_page(Vec::new(), None).render().unwrap();
    let hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escaped(&hostile("csrf-token"))
    );
    assert!(between(&html, "<form id=\"rename-form\"", "</form>").contains(&hidden));
    assert!(between(&html, "<form id=\"archive-form\"", "</form>").contains(&hidden));
    assert!(html.contains("<input type=\"hidden\" name=\"expected_version\" value=\"7\">"));
}

#[test]
fn archive_button_and_badge_follow_the_archived_flag() {
    let mut page = session_page(Vec::new(), None);
    let active = page.render().unwrap();
    assert!(active.contains(">Archive</button>"));
    assert!(!active.contains("Unarchive"));
    assert!(!active.contains("archived-badge"));

    page.archived = true;
    let archived = page.render().unwrap();
    assert!(archived.contains(">Unarchive</button>"));
    assert!(archived.contains("<span id=\"archived-badge\""));
}

#[test]
fn session_without_events_keeps_an_empty_timeline_for_the_script() {
    let html = session_page(Vec::new(), Some(hostile_live()))
        .render()
        .unwrap();
    assert!(html.contains("<p id=\"no-events\" class=\"empty\">No events yet.</p>"));
    assert!(html.contains("<ol id=\"timeline\" class=\"timeline\">"));
    assert!(!html.contains("<li class=\"event\""));

    let html = session_page(vec![event_row(1)], None).render().unwrap();
    assert!(!html.contains("no-events"));
}

#[test]
fn untitled_session_says_so_and_renames_from_empty() {
    let mut page = session_page(Vec::new(), None);
    page.title = None;
    let html = page.render().unwrap();
    assert!(html.contains("<span class=\"muted\">untitled</span>"));
    assert!(html.contains("<input type=\"text\" name=\"title\" value=\"\">"));
}

#[test]
fn live_feed_and_script_appear_only_when_live() {
    let html = session_page(Vec::new(), Some(hostile_live()))
        .render()
        .unwrap();
    assert_eq!(html.matches("<div id=\"live\"").count(), 1);
    assert!(
        html.contains("<span id=\"connection-state\" data-state=\"connecting\">connecting…</span>")
    );
    assert!(html.contains("<script src=\"/admin/assets/admin.js\" defer></script>"));

    let html = session_page(Vec::new(), None).render().unwrap();
    assert!(!html.contains("id=\"live\""));
    assert!(!html.contains("connection-state"));
    assert!(!html.contains("<script"));
}

#[test]
fn long_payload_renders_whole_while_the_preview_stays_short() {
    let text = "x".repeat(100 * 1024);
    let mut event = event_row(1);
    event.payload_pretty = format!("{{\n  \"text\": \"{text}\"\n}}");
    event.payload_preview = format!("{{\"text\":\"{}…", &text[..110]);
    let html = session_page(vec![event.clone()], None).render().unwrap();

    let pre = between(&html, "<details class=\"payload\"><summary>", "</details>");
    assert!(pre.contains(&format!("<pre>{}</pre>", escaped(&event.payload_pretty))));
    let summary = between(&html, "<details class=\"payload\"><summary>", "</summary>");
    assert_eq!(summary, escaped(&event.payload_preview));
    assert!(summary.chars().count() < 200);
}

#[test]
fn event_rows_show_every_field() {
    let mut event = event_row(9);
    event.source = None;
    let html = session_page(vec![event, event_row(8)], None)
        .render()
        .unwrap();
    for field in [
        "message",
        "agent:planner",
        "writer #1",
        "2025-01-01T00:00:00Z",
    ] {
        assert!(
            html.matches(&escaped(&hostile(field))).count() >= 2,
            "{field}"
        );
    }
    assert_eq!(html.matches("class=\"event-source\"").count(), 1);
    assert!(html.contains("<span class=\"event-seq\">9</span>"));
}

#[test]
fn script_builds_rows_like_the_template() {
    let html = session_page(vec![event_row(1)], None).render().unwrap();
    let row = between(&html, "<li class=\"event\"", "</li>");
    let classes = row
        .split("class=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .flat_map(str::split_whitespace);
    let mut n_classes = 0;
    for class in classes {
        n_classes += 1;
        assert!(
            SCRIPT.contains(&format!("\"{class}\"")) || SCRIPT.contains(&format!("\"{class} ")),
            "admin.js never builds class {class}"
        );
    }
    assert!(n_classes >= 8, "only {n_classes} classes in:\n{row}");
    // The one structural check a grep can make: data only ever reaches the DOM as text.
    assert!(!SCRIPT.contains("innerHTML"));
    assert!(!SCRIPT.contains("insertAdjacentHTML"));
    assert!(SCRIPT.contains("textContent"));
}

#[test]
fn system_page_escapes_figures_and_marks_empty_sections() {
    let html = system_page().render().unwrap();
    assert_inert(&html, 1);
    let headings = [
        "NATS",
        "Events stream",
        "Events stream, shard 1",
        "Sessions bucket",
        "Gateway",
    ];
    for heading in headings {
        assert!(html.contains(&format!("-heading\">{heading}</h2>")));
    }
    assert!(!html.contains(">—<"));

    let page = SystemPage {
        nats: Vec::new(),
        events_stream: Vec::new(),
        event_shards: Vec::new(),
        sessions_bucket: figures("keys"),
        gateway: Vec::new(),
        charts: charts(Vec::new()),
        nodes: Vec::new(),
    };
    let html = page.render().unwrap();
    assert_eq!(html.matches("<p class=\"muted\">—</p>").count(), 3);
    assert!(!html.contains("<table"), "no node table off a cluster");
}

#[test]
fn a_known_series_gives_its_polyline_points_and_axis_labels() {
    let chart = known_chart();
    assert!(!chart.empty);
    let line = &chart.lines[0];
    // The hole splits the line: a run of two points, then one alone, drawn as a dot.
    assert_eq!(
        line.segments,
        ["48.0,74.0 320.0,8.0"],
        "points of {chart:?}"
    );
    assert_eq!(
        line.dots,
        [Point {
            x: "592.0".to_owned(),
            y: "107.0".to_owned()
        }]
    );
    assert_eq!(line.latest, "5 events/s");
    let y: Vec<(&str, &str)> = chart
        .y_ticks
        .iter()
        .map(|tick| (tick.at.as_str(), tick.label.as_str()))
        .collect();
    assert_eq!(y, [("140.0", "0"), ("74.0", "10"), ("8.0", "20")]);
    let x: Vec<(&str, &str)> = chart
        .x_ticks
        .iter()
        .map(|tick| (tick.at.as_str(), tick.label.as_str()))
        .collect();
    assert_eq!(
        x,
        [
            ("48.0", "−15 min"),
            ("229.3", "−10 min"),
            ("410.7", "−5 min"),
            ("592.0", "now")
        ]
    );

    let html = SystemCharts {
        charts: charts(vec![chart]),
    }
    .render()
    .unwrap();
    assert!(html.starts_with("<section id=\"charts\""), "{html}");
    assert!(html.contains("data-refresh-url=\"/admin/system/charts\""));
    assert!(html.contains("<svg class=\"chart-svg\" viewBox=\"0 0 600 160\""));
    assert!(html.contains("points=\"48.0,74.0 320.0,8.0\""));
    assert!(html.contains("<circle class=\"dot series-0\" cx=\"592.0\" cy=\"107.0\""));
    assert_eq!(html.matches("<polyline").count(), 1);
    assert!(html.contains(">−15 min</text>"));
    assert!(html.contains(">now</text>"));
    assert!(html.contains(">20</text>"));
    assert!(!html.contains("No data yet"));
    assert_offline(&html);
}

#[test]
fn an_empty_history_says_no_data_yet() {
    let chart = Chart::plot(
        "latency",
        "Append latency",
        "ms",
        1_000,
        900,
        vec![
            Series {
                name: "p50".to_owned(),
                values: Vec::new(),
            },
            Series {
                name: "p99".to_owned(),
                values: Vec::new(),
            },
        ],
    );
    assert!(chart.empty);
    assert_eq!(chart.lines[0].latest, "—");
    let html = SystemCharts {
        charts: charts(vec![chart]),
    }
    .render()
    .unwrap();
    assert!(html.contains("No data yet"), "{html}");
    assert!(!html.contains("<svg"));
    assert!(!html.contains("<polyline"));
}

#[test]
fn large_and_small_values_get_round_axes() {
    let plot = |value: f64| {
        Chart::plot(
            "c",
            "C",
            "u",
            10,
            10,
            vec![Series {
                name: "s".to_owned(),
                values: vec![(10, Some(value))],
            }],
        )
    };
    let top = |value| plot(value).y_ticks.last().unwrap().label.clone();
    assert_eq!(top(0.0), "1");
    assert_eq!(top(0.37), "0.5");
    assert_eq!(top(3.0), "5");
    assert_eq!(top(1234.0), "2000");
    assert_eq!(plot(0.37).y_ticks[1].label, "0.25");
}

#[test]
fn the_node_table_shows_leader_lag_and_offline_escaped() {
    let html = system_page().render().unwrap();
    let table = between(&html, "id=\"events-nodes\"", "</section>");
    assert!(table.contains("Events stream nodes"));
    assert_eq!(table.matches("<tr class=\"node\">").count(), 2);
    assert!(table.contains("<td>leader</td><td>yes</td><td>0</td><td>online</td>"));
    assert!(table.contains("<td>follower</td><td>no</td><td>42</td><td><span class=\"badge offline\">offline</span></td>"));
    assert!(!table.contains("<script>alert(1)"));
}

#[test]
fn navigation_marks_the_current_page() {
    let sessions = sessions_page(Vec::new()).render().unwrap();
    assert!(sessions.contains("<a href=\"/admin\" aria-current=\"page\">Sessions</a>"));
    assert!(sessions.contains("<a href=\"/admin/system\">System</a>"));

    let system = system_page().render().unwrap();
    assert!(system.contains("<a href=\"/admin\">Sessions</a>"));
    assert!(system.contains("<a href=\"/admin/system\" aria-current=\"page\">System</a>"));

    let session = session_page(Vec::new(), None).render().unwrap();
    assert!(session.contains("<a href=\"/admin\" aria-current=\"page\">Sessions</a>"));
}

#[test]
fn every_page_and_asset_works_offline() {
    let pages = [
        sessions_page(vec![session_row(1)]).render().unwrap(),
        session_page(vec![event_row(1)], Some(hostile_live()))
            .render()
            .unwrap(),
        system_page().render().unwrap(),
    ];
    for html in &pages {
        assert_offline(html);
        assert!(html.starts_with("<!doctype html>"));
        assert!(
            html.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            )
        );
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/admin/assets/admin.css\">"));
    }
    assert_offline(STYLESHEET);
    assert_offline(SCRIPT);
    assert!(
        !STYLESHEET.contains("url("),
        "the stylesheet fetches nothing"
    );
    assert!(STYLESHEET.contains("prefers-color-scheme: dark"));
}

#[test]
fn the_login_page_escapes_its_error_and_carries_the_csrf_token() {
    let page = admin_ui::LoginPage {
        csrf_token: "tok3n".into(),
        error: Some("<script>alert(1)</script>".into()),
    };
    let html = askama::Template::render(&page).unwrap();
    assert!(html.contains("name=\"csrf\" value=\"tok3n\""));
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("id=\"login-form\""));
}
