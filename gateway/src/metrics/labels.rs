//! The labels metrics carry: each an enum whose variants are every value it may take, so a
//! series never names a tenant, a session or a path, and every series exists from the start.

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label whose values are a fixed set: the variants of an enum.
pub trait Label: Copy + 'static {
    /// The label's name.
    const NAME: &'static str;
    /// Every value, each at its own index.
    const ALL: &'static [Self];
    fn value(self) -> &'static str;
    fn index(self) -> usize;
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident as $label:literal { $($(#[$vdoc:meta])* $variant:ident = $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn value(self) -> &'static str {
                match self { $($name::$variant => $value),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label! {
    /// What became of an event that reached a session's log.
    AppendOutcome as "outcome" {
        /// Committed to JetStream with a new seq.
        Appended = "appended",
        /// A retry of its producer's latest request: answered with the original seq.
        Deduped = "deduped",
        /// Refused by the session's rules (a 409 conflict), an unknown session, or too large
        /// for NATS; nothing was written.
        Rejected = "rejected",
        /// NATS was unavailable or did not confirm in time (a 503).
        Failed = "failed",
    }
}

label! {
    /// Why a commit refused by JetStream was decided again.
    Retry as "reason" {
        /// The session moved on (another gateway appended first): caught up and decided again.
        LostRace = "lost_race",
        /// JetStream already held this very decision: an earlier attempt whose acknowledgement
        /// timed out was stored after all (the client's retry after a 503 `nats_timeout`).
        Timeout = "timeout",
        /// Refused with nothing new on the stream (a replica behind, too many open batches).
        Transient = "transient",
        /// A group larger than NATS accepts, split into single appends.
        TooLarge = "too_large",
    }
}

label! {
    /// How a reader follows a log live.
    Transport as "transport" {
        /// A session tail over a WebSocket.
        WebSocket = "websocket",
        /// A session tail as Server-Sent Events (the admin console's live timeline too).
        Sse = "sse",
        /// A page of events that waits for the next one (`GET …/events?wait=N`).
        LongPoll = "long_poll",
        /// The lifecycle feed, over either.
        Lifecycle = "lifecycle",
    }
}

label! {
    /// Why a reader was told it does not continue right after its cursor.
    GapReason as "reason" {
        CursorExpired = "cursor_expired",
        ResumeInvalidated = "resume_invalidated",
    }
}

label! {
    /// Why a live stream ended.
    Disconnect as "reason" {
        /// Left its queue full too long (close 4002 / `overflow`), or took nothing for 30 s.
        SlowReader = "slow_reader",
        /// Its token expired (close 4001 / `token_expired`).
        TokenExpired = "token_expired",
        /// The gateway shut down (close 1001 / `going_away`).
        Shutdown = "shutdown",
        /// The client closed it or went away.
        Client = "client",
        /// Reading the log failed (close 1011 / `storage_error`).
        StorageError = "storage_error",
    }
}

label! {
    /// Why a request was refused authentication (401).
    AuthFailure as "reason" {
        /// No bearer token.
        Missing = "missing",
        /// Not exactly one `Authorization: Bearer <token>`.
        Malformed = "malformed",
        /// A token that does not verify: signature, key, issuer, audience, expiry, claims.
        Invalid = "invalid",
    }
}

label! {
    /// Which per-caller limit refused a request (429).
    Limit as "limit" {
        /// The tenant's append rate (`rate_limited`).
        AppendRate = "append_rate",
        /// The token holder's live streams (`too_many_tails`).
        TailsPerToken = "tails_per_token",
    }
}

label! {
    /// Which stream a storage figure describes.
    StreamRole as "stream" {
        /// The events stream.
        Events = "events",
        /// The stream behind the sessions bucket.
        Sessions = "sessions",
    }
}

/// One handle per value of a label, registered as one family.
pub struct ByLabel<L, M> {
    handles: Vec<M>,
    _label: std::marker::PhantomData<L>,
}

impl<L: Label, M: Clone> ByLabel<L, M> {
    pub fn get(&self, label: L) -> &M {
        &self.handles[label.index()]
    }
}

pub(super) type OneLabel = [(&'static str, &'static str); 1];

pub(super) fn by_label<L, M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: Family<OneLabel, M, impl Fn() -> M + Send + Sync + 'static>,
) -> ByLabel<L, M>
where
    L: Label,
    M: Clone
        + std::fmt::Debug
        + EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Send
        + Sync
        + 'static,
{
    let handles = L::ALL
        .iter()
        .map(|label| family.get_or_create_owned(&[(L::NAME, label.value())]))
        .collect();
    registry.register(name, help, family);
    ByLabel {
        handles,
        _label: std::marker::PhantomData,
    }
}

pub(super) fn counters<L: Label>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> ByLabel<L, Counter> {
    by_label(
        registry,
        name,
        help,
        Family::new_with_constructor(Counter::default),
    )
}

pub(super) fn gauges<L: Label>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> ByLabel<L, Gauge> {
    by_label(
        registry,
        name,
        help,
        Family::new_with_constructor(Gauge::default),
    )
}
