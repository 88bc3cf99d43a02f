//! The system page: what NATS, each shard's stream, the buckets and this gateway say of themselves,
//! and the charts of the gateway's recent history.

use std::time::{Duration, SystemTime};

use admin_ui::{Chart, Charts, Figure, NodeRow, NodeTable, Series, SystemCharts, SystemPage};

use super::{Admin, history};
use crate::catalog::{BuildProgress, Catalog};
use crate::metrics::{Label, Transport};

pub async fn page(admin: &Admin) -> SystemPage {
    let figure = |label: &str, value: String| Figure {
        label: label.to_owned(),
        value,
    };
    let server = admin.store.server();
    let nats = vec![
        figure(
            "Connection",
            if server.connected {
                "connected".into()
            } else {
                "disconnected".into()
            },
        ),
        figure("Server", server.server_name),
        figure("Version", server.version),
        figure("Address", server.address),
        figure(
            "Cluster peers",
            if server.peers.is_empty() {
                "none".into()
            } else {
                server.peers.join(", ")
            },
        ),
    ];
    let stream_figures = |stream: crate::nats::StreamFigures| {
        vec![
            figure("Name", stream.name),
            figure("Messages", stream.messages.to_string()),
            figure("Bytes", stream.bytes.to_string()),
            figure("Subjects", stream.subjects.to_string()),
            figure("Consumers", stream.consumers.to_string()),
            figure("Replicas", stream.replicas.to_string()),
            figure("Leader", stream.leader.unwrap_or_else(|| "—".into())),
            figure(
                "Peers",
                if stream.cluster_peers.is_empty() {
                    "—".into()
                } else {
                    stream.cluster_peers.join(", ")
                },
            ),
        ]
    };
    let mut nodes = Vec::new();
    let (events_stream, event_shards, sessions_bucket) = match admin.store.storage().await {
        Ok((shards, sessions)) => {
            for events in &shards {
                nodes.extend(match events.shard {
                    0 => node_table("events-nodes", "Events stream nodes", events),
                    shard => node_table(
                        &format!("events-nodes-{shard}"),
                        &format!("Events stream nodes, shard {shard}"),
                        events,
                    ),
                });
            }
            nodes.extend(node_table(
                "sessions-nodes",
                "Sessions bucket nodes",
                &sessions,
            ));
            let mut shards = shards.into_iter().map(stream_figures);
            let first = shards.next().unwrap_or_default();
            (first, shards.collect(), stream_figures(sessions))
        }
        Err(err) => {
            let unavailable = vec![figure("Status", format!("unavailable: {err}"))];
            (unavailable.clone(), Vec::new(), unavailable)
        }
    };
    let uptime = Duration::from_secs(admin.figures.started.elapsed().as_secs());
    let gateway = vec![
        figure("Version", env!("CARGO_PKG_VERSION").to_owned()),
        figure("Up for", humantime::format_duration(uptime).to_string()),
        figure("Open tails", admin.figures.open_tails().to_string()),
        figure("Appends served", admin.figures.appends().to_string()),
        figure(
            "Sessions in the catalog",
            admin.catalog.session_count().to_string(),
        ),
        figure("Catalog view", catalog_view_state(&admin.catalog)),
        figure(
            "Last fresh catalog build",
            match admin.catalog.last_build() {
                Some(build) => format!(
                    "{:.1} s, {:.1} s of it replaying the bucket",
                    build.total.as_secs_f64(),
                    build.replay.as_secs_f64()
                ),
                None => "none since this gateway started".to_owned(),
            },
        ),
    ];
    SystemPage {
        nats,
        events_stream,
        event_shards,
        sessions_bucket,
        gateway,
        charts: history_charts(&admin.history.samples()),
        nodes,
    }
}

/// Whether lists can read the view, and how far a fresh one's build has come.
fn catalog_view_state(catalog: &Catalog) -> String {
    match (catalog.build_progress(), catalog.readable_revision()) {
        (Some(BuildProgress { read, pending: 0 }), _) => {
            format!("building: merging the {read} header versions read into the view")
        }
        (Some(BuildProgress { read, pending }), _) => {
            let percent = read as f64 * 100.0 / (read + pending) as f64;
            format!(
                "building: {read} header versions read from the bucket, {pending} to go \
                 ({percent:.0} %)"
            )
        }
        (None, Some(revision)) => {
            format!("serving lists, applied through bucket revision {revision}")
        }
        (None, None) => "being checked against the bucket".to_owned(),
    }
}

/// The charts alone, for the system page's script.
pub fn charts(admin: &Admin) -> SystemCharts {
    SystemCharts {
        charts: history_charts(&admin.history.samples()),
    }
}

/// A replicated stream's leader and followers; nothing for a single replica.
fn node_table(id: &str, title: &str, stream: &crate::nats::StreamFigures) -> Option<NodeTable> {
    if stream.replicas <= 1 && stream.followers.is_empty() {
        return None;
    }
    let leader = stream.leader.iter().map(|leader| NodeRow {
        name: leader.clone(),
        role: "leader".to_owned(),
        current: true,
        lag: 0,
        offline: false,
    });
    let followers = stream.followers.iter().map(|follower| NodeRow {
        name: follower.name.clone(),
        role: "follower".to_owned(),
        current: follower.current,
        lag: follower.lag,
        offline: follower.offline,
    });
    Some(NodeTable {
        id: id.to_owned(),
        title: title.to_owned(),
        rows: leader.chain(followers).collect(),
    })
}

/// The system page's charts from the sampled history (oldest first).
fn history_charts(samples: &[history::Sample]) -> Charts {
    let now = samples.last().map_or_else(
        || history::unix_seconds(SystemTime::now()),
        |sample| sample.at,
    );
    let window = history::WINDOW.as_secs();
    let series = |name: &str, value: &dyn Fn(&history::Sample) -> Option<f64>| Series {
        name: name.to_owned(),
        values: samples
            .iter()
            .map(|sample| (sample.at, value(sample)))
            .collect(),
    };
    let milliseconds = |seconds: Option<f64>| seconds.map(|seconds| seconds * 1000.0);
    let live = Transport::ALL
        .iter()
        .enumerate()
        .map(|(index, transport)| {
            series(transport.value(), &|sample: &history::Sample| {
                Some(sample.live[index] as f64)
            })
        })
        .collect();
    Charts {
        refresh_url: "/admin/system/charts".to_owned(),
        refresh_seconds: history::INTERVAL.as_secs(),
        sampled_at: samples.last().map_or(0, |sample| sample.at),
        window_label: format!("{} minutes", history::WINDOW.as_secs() / 60),
        charts: vec![
            Chart::plot(
                "appends",
                "Appends",
                "events/s",
                now,
                window,
                vec![series("appended", &|sample| {
                    Some(sample.appends_per_second)
                })],
            ),
            Chart::plot(
                "deliveries",
                "Deliveries to live readers",
                "events/s",
                now,
                window,
                vec![series("delivered", &|sample| {
                    Some(sample.deliveries_per_second)
                })],
            ),
            Chart::plot(
                "append-latency",
                "Append latency",
                "ms",
                now,
                window,
                vec![
                    series("p50", &|sample| milliseconds(sample.append_p50)),
                    series("p99", &|sample| milliseconds(sample.append_p99)),
                ],
            ),
            Chart::plot("live-streams", "Live streams", "open", now, window, live),
            Chart::plot(
                "server-errors",
                "Server errors (5xx)",
                "responses/s",
                now,
                window,
                vec![series("5xx", &|sample| {
                    Some(sample.server_errors_per_second)
                })],
            ),
        ],
    }
}
