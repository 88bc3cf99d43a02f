//! What describes the gateway's state (readiness, NATS, the catalog, storage), read when
//! scraped instead of kept up to date.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Label, StreamRole};
use crate::nats::Traffic;

/// What the gateway's state is when scraped.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub ready: bool,
    pub nats: Traffic,
    pub catalog_sessions: u64,
    /// Lists wait for the catalog view: it is being built, or not yet checked against the
    /// bucket.
    pub catalog_loading: bool,
    /// Header versions this process applied to its catalog view.
    pub catalog_applied: u64,
    /// The fresh catalog view this process built last: seconds in all and replaying the
    /// bucket; zeros if it built none.
    pub catalog_build_seconds: f64,
    pub catalog_build_replay_seconds: f64,
    /// Header versions a fresh view's build has still to read from the bucket; 0 when none
    /// runs.
    pub catalog_build_pending: u64,
    /// Each events stream's (one per shard) and the sessions bucket's figures, when NATS
    /// answered in time.
    pub storage: Vec<(StreamRole, StreamState)>,
}

#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// The events shard the stream holds (0 for the sessions bucket's).
    pub shard: u32,
    /// The server leading the stream, when it has a leader and is clustered.
    pub leader: Option<String>,
    pub messages: u64,
    pub bytes: u64,
    pub subjects: u64,
    pub consumers: u64,
    /// Replicas configured.
    pub replicas: u64,
    /// Replicas caught up with the leader, the leader included.
    pub current_replicas: u64,
    /// Each follower's server name and how many operations it is behind the leader.
    pub follower_lag: Vec<(String, u64)>,
}

/// Writes one unlabelled metric.
pub(super) fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

fn flag(value: bool) -> ConstGauge<i64> {
    ConstGauge::new(i64::from(value))
}

pub(super) fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        encode_one(
            &mut encoder,
            "starcite_ready",
            "1 while /health/ready answers 200 (NATS connected, stream and buckets in place), \
             else 0.",
            &flag(self.ready),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_sessions",
            "Sessions in this gateway's catalog view.",
            &gauge(self.catalog_sessions),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_loading",
            "1 while lists wait for this gateway's catalog view (being built from the bucket), \
             else 0.",
            &flag(self.catalog_loading),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_view_applied",
            "Session header versions this process applied to its catalog view (a restart with \
             its view present applies only what changed since).",
            &ConstCounter::new(self.catalog_applied),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_view_build_seconds",
            "How long the last fresh catalog view this process built took, lists answering \
             catalog_loading meanwhile; 0 if it built none (its view resumed).",
            &ConstGauge::new(self.catalog_build_seconds),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_view_build_replay_seconds",
            "Of starcite_catalog_view_build_seconds, the replay of the sessions bucket's stream; \
             the rest is merging it into the view.",
            &ConstGauge::new(self.catalog_build_replay_seconds),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_view_build_pending",
            "Session header versions the fresh catalog view being built has still to read \
             from the sessions bucket; 0 when no build is reading it.",
            &gauge(self.catalog_build_pending),
        )?;
        let nats = &self.nats;
        encode_one(
            &mut encoder,
            "starcite_nats_connected",
            "1 while connected to a NATS server, else 0.",
            &flag(nats.connected),
        )?;
        let counters: [(&str, &str, u64); 5] = [
            (
                "starcite_nats_reconnects",
                "Connections to NATS made again after the first.",
                nats.connects.saturating_sub(1),
            ),
            (
                "starcite_nats_sent_bytes",
                "Payload bytes sent to NATS.",
                nats.sent_bytes,
            ),
            (
                "starcite_nats_received_bytes",
                "Payload bytes received from NATS.",
                nats.received_bytes,
            ),
            (
                "starcite_nats_sent_messages",
                "Messages sent to NATS.",
                nats.sent_messages,
            ),
            (
                "starcite_nats_received_messages",
                "Messages received from NATS.",
                nats.received_messages,
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        if self.storage.is_empty() {
            return Ok(());
        }
        type Figure = fn(&StreamState) -> u64;
        let figures: [(&str, &str, Figure); 6] = [
            (
                "starcite_stream_messages",
                "Messages stored in the stream (`events`: events; `sessions`: header versions).",
                |stream| stream.messages,
            ),
            (
                "starcite_stream_bytes",
                "Bytes stored in the stream.",
                |stream| stream.bytes,
            ),
            (
                "starcite_stream_subjects",
                "Subjects in the stream (`events`: sessions with events).",
                |stream| stream.subjects,
            ),
            (
                "starcite_stream_consumers",
                "Consumers on the stream (replays in progress, catalog followers).",
                |stream| stream.consumers,
            ),
            (
                "starcite_stream_replicas",
                "Replicas the stream is configured with.",
                |stream| stream.replicas,
            ),
            (
                "starcite_stream_current_replicas",
                "Replicas caught up with the stream's leader, the leader included (0: no leader).",
                |stream| stream.current_replicas,
            ),
        ];
        for (name, help, figure) in figures {
            let mut metric_encoder = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (role, stream) in &self.storage {
                let stream_name = stream_label(*role, stream);
                let labels = [(StreamRole::NAME, stream_name.as_str())];
                gauge(figure(stream)).encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        let mut metric_encoder = encoder.encode_descriptor(
            "starcite_stream_leader",
            "1 for the server leading the stream (clustered streams with a leader only).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (role, stream) in &self.storage {
            if let Some(leader) = &stream.leader {
                let stream_name = stream_label(*role, stream);
                let labels = [
                    (StreamRole::NAME, stream_name.as_str()),
                    ("server", leader.as_str()),
                ];
                gauge(1).encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        let mut metric_encoder = encoder.encode_descriptor(
            "starcite_stream_follower_lag",
            "Operations a follower replica is behind the stream's leader, by server (clustered \
             streams only).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (role, stream) in &self.storage {
            let stream_name = stream_label(*role, stream);
            for (peer, lag) in &stream.follower_lag {
                let labels = [
                    (StreamRole::NAME, stream_name.as_str()),
                    ("peer", peer.as_str()),
                ];
                gauge(*lag).encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The `stream` label: `events` for shard 0's events stream, as before there were shards,
/// `events_<shard>` for the others, `sessions` for the bucket's.
fn stream_label(role: StreamRole, stream: &StreamState) -> String {
    match (role, stream.shard) {
        (StreamRole::Events, shard) if shard > 0 => format!("{}_{shard}", role.value()),
        _ => role.value().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn state_is_rendered_when_scraped() {
        let metrics = Metrics::new();
        let state = State {
            ready: true,
            nats: Traffic {
                connected: true,
                connects: 3,
                ..Traffic::default()
            },
            catalog_sessions: 7,
            catalog_loading: true,
            catalog_applied: 12,
            catalog_build_seconds: 4.5,
            catalog_build_replay_seconds: 3.25,
            catalog_build_pending: 9,
            storage: vec![
                (
                    StreamRole::Events,
                    StreamState {
                        shard: 0,
                        leader: Some("n1".into()),
                        messages: 10,
                        bytes: 2048,
                        subjects: 2,
                        consumers: 0,
                        replicas: 3,
                        current_replicas: 2,
                        follower_lag: vec![("n2".into(), 0), ("n3".into(), 17)],
                    },
                ),
                (
                    StreamRole::Events,
                    StreamState {
                        shard: 2,
                        leader: Some("n3".into()),
                        messages: 5,
                        ..StreamState::default()
                    },
                ),
            ],
        };
        let text = metrics.render(state);
        for line in [
            "starcite_ready 1",
            "starcite_catalog_loading 1",
            "starcite_catalog_view_applied_total 12",
            "starcite_catalog_view_build_seconds 4.5",
            "starcite_catalog_view_build_replay_seconds 3.25",
            "starcite_catalog_view_build_pending 9",
            "starcite_nats_connected 1",
            "starcite_nats_reconnects_total 2",
            "starcite_catalog_sessions 7",
            "starcite_stream_messages{stream=\"events\"} 10",
            "starcite_stream_bytes{stream=\"events\"} 2048",
            "starcite_stream_replicas{stream=\"events\"} 3",
            "starcite_stream_current_replicas{stream=\"events\"} 2",
            "starcite_stream_follower_lag{stream=\"events\",peer=\"n3\"} 17",
            "starcite_stream_leader{stream=\"events\",server=\"n1\"} 1",
            "starcite_stream_messages{stream=\"events_2\"} 5",
            "starcite_stream_leader{stream=\"events_2\",server=\"n3\"} 1",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "no `{line}` in\n{text}"
            );
        }
        assert!(!text.contains("stream=\"sessions\""), "{text}");
    }
}
