//! The gateway's one typed configuration, read from `STARCITE_*` variables and matching flags.
//!
//! A flag wins over its variable, which wins over the default. A value that does not parse
//! stops start-up with a message naming the variable, never a silent fallback. Settings come
//! in groups, one per part of the gateway, and each part is handed its group.

mod admin;
mod auth;
mod catalog;
mod limits;
mod nats;
mod tail;
#[cfg(test)]
mod tests;
mod values;

use std::net::SocketAddr;
use std::time::Duration;

use crate::telemetry::LogFormat;
use values::{
    Named, address, duration, hidden, name, name_of, named, number_in, optional, or, path, secret,
    shown, subject_prefix, switch, text, unless_off, url_list,
};

pub use admin::AdminConfig;
pub use auth::{AuthConfig, AuthMode};
pub use catalog::CatalogConfig;
pub use limits::LimitsConfig;
pub use nats::NatsConfig;
pub use tail::TailConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP and WebSocket API listens on.
    pub listen: SocketAddr,
    /// Address of the operator's endpoints (`/metrics`, `/health/*`), which are then not served
    /// on `listen`; `None` serves them on `listen`.
    pub ops_listen: Option<SocketAddr>,
    pub nats: NatsConfig,
    pub tail: TailConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub catalog: CatalogConfig,
    /// How many sessions' write state one gateway caches.
    pub session_cache_size: usize,
    /// How long shutdown waits for open requests and tails to finish.
    pub shutdown_timeout: Duration,
    /// A `tracing` filter such as `info` or `gateway=debug,info`.
    pub log: String,
    /// Log lines as text or JSON.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            ops_listen: None,
            nats: NatsConfig::default(),
            tail: TailConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
            catalog: CatalogConfig::default(),
            session_cache_size: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} (or {flag}): {reason}")]
    Invalid {
        variable: &'static str,
        flag: &'static str,
        reason: String,
    },
    #[error("unknown argument `{0}`; try --help")]
    UnknownArgument(String),
    #[error("{0} needs a value")]
    MissingValue(String),
}

/// One configurable value: where it comes from, how it is parsed, how its default reads.
struct Setting {
    variable: &'static str,
    flag: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
    show: fn(&Config) -> String,
}

/// Turns `field: VARIABLE --flag, parser, display;` rows into `Setting`s: each setting names
/// its field once, so a parser and a display can never belong to different fields.
macro_rules! settings {
    ($($($field:ident).+ : $variable:literal $flag:literal, $parse:expr, $show:expr;)*) => {
        &[$(Setting {
            variable: $variable,
            flag: $flag,
            apply: |config, raw| {
                config.$($field).+ = $parse(raw)?;
                Ok(())
            },
            show: |config| $show(&config.$($field).+),
        }),*]
    };
}

/// Every setting, in the order `--help` lists them.
const SETTINGS: &[Setting] = settings! {
    listen: "STARCITE_LISTEN" "--listen", address, shown;
    ops_listen: "STARCITE_OPS_LISTEN" "--ops-listen",
        unless_off(address), or("off (served on --listen)");
    nats.urls: "STARCITE_NATS_URL" "--nats-url", url_list, shown;
    nats.creds: "STARCITE_NATS_CREDS" "--nats-creds", optional(path), or("none");
    nats.tls_ca: "STARCITE_NATS_TLS_CA" "--nats-tls-ca", optional(path), or("none");
    nats.stream: "STARCITE_STREAM" "--stream", name, shown;
    nats.subject_prefix: "STARCITE_SUBJECT_PREFIX" "--subject-prefix", subject_prefix, shown;
    nats.sessions_bucket: "STARCITE_SESSIONS_BUCKET" "--sessions-bucket", name, shown;
    nats.stream_replicas: "STARCITE_STREAM_REPLICAS" "--stream-replicas", number_in(1, 5), shown;
    nats.stream_shards: "STARCITE_STREAM_SHARDS" "--stream-shards",
        number_in(1, crate::nats::MAX_SHARDS), shown;
    nats.duplicate_window: "STARCITE_DUPLICATE_WINDOW" "--duplicate-window", duration, shown;
    nats.stream_max_consumers: "STARCITE_STREAM_MAX_CONSUMERS" "--stream-max-consumers",
        number_in(1, i32::MAX), shown;
    nats.timeout: "STARCITE_NATS_TIMEOUT" "--nats-timeout", duration, shown;
    tail.ping_interval: "STARCITE_TAIL_PING_INTERVAL" "--tail-ping-interval", duration, shown;
    tail.buffer: "STARCITE_TAIL_BUFFER" "--tail-buffer", number_in(1, 1_000_000), shown;
    tail.tails_per_token: "STARCITE_TAILS_PER_TOKEN" "--tails-per-token",
        number_in(1, 1_000_000), shown;
    tail.stall_timeout: "STARCITE_TAIL_STALL_TIMEOUT" "--tail-stall-timeout", duration, shown;
    nats.retention_max_age: "STARCITE_RETENTION_MAX_AGE" "--retention-max-age",
        unless_off(duration), or("off");
    nats.retention_max_bytes: "STARCITE_RETENTION_MAX_BYTES" "--retention-max-bytes",
        unless_off(number_in(1024, i64::MAX)), or("off");
    nats.retention_max_events_per_session:
        "STARCITE_RETENTION_MAX_EVENTS_PER_SESSION" "--retention-max-events-per-session",
        unless_off(number_in(1, i64::MAX)), or("off");
    limits.max_body_bytes: "STARCITE_MAX_BODY_BYTES" "--max-body-bytes",
        number_in(1024, 64 * 1024 * 1024), shown;
    catalog.dir: "STARCITE_CATALOG_DIR" "--catalog-dir", path, shown;
    catalog.loading_wait: "STARCITE_CATALOG_LOADING_WAIT" "--catalog-loading-wait", duration, shown;
    session_cache_size: "STARCITE_SESSION_CACHE_SIZE" "--session-cache-size",
        number_in(1, usize::MAX), shown;
    shutdown_timeout: "STARCITE_SHUTDOWN_TIMEOUT" "--shutdown-timeout", duration, shown;
    admin.enabled: "STARCITE_ADMIN" "--admin", switch, shown;
    admin.secret: "STARCITE_ADMIN_SECRET" "--admin-secret", optional(secret), hidden;
    limits.append_rate: "STARCITE_APPEND_RATE" "--append-rate",
        unless_off(number_in(1, u32::MAX)), or("off");
    limits.append_burst: "STARCITE_APPEND_BURST" "--append-burst",
        unless_off(number_in(1, u32::MAX)), or("the rate");
    limits.produce_window: "STARCITE_PRODUCE_WINDOW" "--produce-window",
        number_in(1, 65_536), shown;
    limits.long_poll_timeout: "STARCITE_LONG_POLL_TIMEOUT" "--long-poll-timeout", duration, shown;
    auth.mode: "STARCITE_AUTH_MODE" "--auth-mode", named, name_of;
    auth.jwks_url: "STARCITE_AUTH_JWKS_URL" "--auth-jwks-url", optional(text), or("none");
    auth.key_file: "STARCITE_AUTH_KEY_FILE" "--auth-key-file", optional(path), or("none");
    auth.issuer: "STARCITE_AUTH_JWT_ISSUER" "--auth-jwt-issuer", optional(text), or("none");
    auth.audience: "STARCITE_AUTH_JWT_AUDIENCE" "--auth-jwt-audience", optional(text), or("none");
    auth.leeway_seconds: "STARCITE_AUTH_JWT_LEEWAY_SECONDS" "--auth-jwt-leeway-seconds",
        number_in(0, 3600), shown;
    log: "STARCITE_LOG" "--log", text, shown;
    log_format: "STARCITE_LOG_FORMAT" "--log-format", named, name_of;
};

impl Named for LogFormat {
    const NAMES: &'static [(&'static str, LogFormat)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Run(Box<Config>),
    Help(String),
}

impl Config {
    /// Reads the process's arguments and environment.
    pub fn from_process() -> Result<Invocation, ConfigError> {
        Config::from_sources(std::env::args().skip(1), |variable| {
            std::env::var(variable).ok()
        })
    }

    /// Reads flags from `args` and variables through `env`, so tests need no process state.
    pub fn from_sources(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Invocation, ConfigError> {
        let flags = parse_flags(args)?;
        let Some(flags) = flags else {
            return Ok(Invocation::Help(help()));
        };
        let mut config = Config::default();
        for setting in SETTINGS {
            let flag_value = flags.iter().rev().find(|(flag, _)| flag == setting.flag);
            let raw = match flag_value {
                Some((_, value)) => Some(value.clone()),
                None => env(setting.variable),
            };
            if let Some(raw) = raw {
                (setting.apply)(&mut config, raw.trim()).map_err(|reason| {
                    ConfigError::Invalid {
                        variable: setting.variable,
                        flag: setting.flag,
                        reason,
                    }
                })?;
            }
        }
        config.auth.check()?;
        config.nats.check_retention()?;
        config.check_ops_listen()?;
        Ok(Invocation::Run(Box::new(config)))
    }

    /// The operator's endpoints need an address of their own (port 0 picks a free one each).
    fn check_ops_listen(&self) -> Result<(), ConfigError> {
        match self.ops_listen {
            Some(ops) if ops == self.listen && ops.port() != 0 => Err(ConfigError::Invalid {
                variable: "STARCITE_OPS_LISTEN",
                flag: "--ops-listen",
                reason: format!("must differ from STARCITE_LISTEN ({})", self.listen),
            }),
            _ => Ok(()),
        }
    }
}

/// `--flag value` and `--flag=value` pairs, or `None` when help was asked for.
fn parse_flags(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<Vec<(String, String)>>, ConfigError> {
    let mut flags = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), value.to_owned()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?;
                (arg, value)
            }
        };
        if !SETTINGS.iter().any(|setting| setting.flag == flag) {
            return Err(ConfigError::UnknownArgument(flag));
        }
        flags.push((flag, value));
    }
    Ok(Some(flags))
}

fn help() -> String {
    let defaults = Config::default();
    let mut text = String::from(
        "starcite: the Starcite gateway (HTTP + WebSocket API over NATS JetStream)\n\n\
         Every option is a flag or an environment variable; flags win.\n\n",
    );
    for setting in SETTINGS {
        text.push_str(&format!(
            "  {:<24} {:<32} default: {}\n",
            setting.flag,
            setting.variable,
            (setting.show)(&defaults)
        ));
    }
    text
}
