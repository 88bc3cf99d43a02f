//! The gateway's one typed configuration, read from `STARCITE_*` variables and matching flags.
//!
//! A flag wins over its variable, which wins over the default. A value that does not parse
//! stops start-up with a message naming the variable, never a silent fallback.

use std::net::SocketAddr;
use std::time::Duration;

use crate::telemetry::LogFormat;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP and WebSocket API listens on.
    pub listen: SocketAddr,
    /// Address of the operator's endpoints (`/metrics`, `/health/*`), which are then not served
    /// on `listen`; `None` serves them on `listen`.
    pub ops_listen: Option<SocketAddr>,
    /// NATS servers to connect to; several for a cluster.
    pub nats_urls: Vec<String>,
    /// A NATS credentials file (user JWT and nkey seed) for servers that require one.
    pub nats_creds: Option<std::path::PathBuf>,
    /// PEM CA bundle that signed the NATS servers' certificates; setting it requires TLS.
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// The JetStream stream that holds every session's events.
    pub stream: String,
    /// Subject prefix of the events stream; a session's events go to `<prefix>.<session token>`.
    pub subject_prefix: String,
    /// The JetStream key-value bucket that holds session headers.
    pub sessions_bucket: String,
    /// Replicas of the stream and the bucket: 1 for one server, 3 for a production cluster.
    pub stream_replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` for dedupe.
    pub duplicate_window: Duration,
    /// The most consumers the events stream allows; a tail borrows one only while it replays.
    pub stream_max_consumers: i32,
    /// How long to wait for any NATS reply before answering 503 `nats_timeout`.
    pub nats_timeout: Duration,
    /// How often an idle tail sends a WebSocket ping (or an SSE comment).
    pub tail_ping_interval: Duration,
    /// How many frames one live reader may have waiting.
    pub tail_buffer: usize,
    /// Live streams one token holder may have open at once through this gateway (with
    /// authentication on).
    pub tails_per_token: usize,
    /// How long a reader may leave its buffer full before it is disconnected (close code 4002)
    /// to resume from its cursor.
    pub tail_stall_timeout: Duration,
    /// Retention, applied by JetStream: events older than this are dropped (`None`: kept).
    pub retention_max_age: Option<Duration>,
    /// Retention: the stream's size limit in bytes; the oldest events go first (`None`: none).
    pub retention_max_bytes: Option<i64>,
    /// Retention: at most this many events are kept per session (`None`: all).
    pub retention_max_events_per_session: Option<i64>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How many sessions' write state one gateway caches.
    pub session_cache_size: usize,
    /// How long shutdown waits for open requests and tails to finish.
    pub shutdown_timeout: Duration,
    /// A `tracing` filter such as `info` or `gateway=debug,info`.
    pub log: String,
    /// Log lines as text or JSON.
    pub log_format: LogFormat,
    /// Serve the admin console at `/admin`.
    pub admin: bool,
    /// Signs console logins (with authentication on); every gateway needs the same one. Without
    /// it each gateway makes its own, and a login holds on that gateway only.
    pub admin_secret: Option<String>,
    /// `none` for local runs; `jwt` in production: every `/v1` request needs a bearer token.
    pub auth_mode: AuthMode,
    /// Where the signing keys are published (JSON Web Key Set, over http).
    pub auth_jwks_url: Option<String>,
    /// A PEM public key, for setups without a JWKS endpoint.
    pub auth_key_file: Option<std::path::PathBuf>,
    /// The `iss` every token must carry.
    pub auth_jwt_issuer: Option<String>,
    /// The `aud` every token must carry (or include).
    pub auth_jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub auth_jwt_leeway_seconds: u64,
    /// Appends per second one tenant may make through this gateway (`None`: unlimited).
    pub append_rate: Option<u32>,
    /// How many appends a tenant may make at once above its rate (defaults to the rate).
    pub append_burst: Option<u32>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            ops_listen: None,
            nats_urls: vec!["nats://127.0.0.1:4222".to_owned()],
            nats_creds: None,
            nats_tls_ca: None,
            stream: "STARCITE_EVENTS".to_owned(),
            subject_prefix: "starcite.events".to_owned(),
            sessions_bucket: "starcite_sessions".to_owned(),
            stream_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            stream_max_consumers: 10_000,
            nats_timeout: Duration::from_secs(3),
            tail_ping_interval: Duration::from_secs(15),
            tail_buffer: 1024,
            tails_per_token: 100,
            tail_stall_timeout: Duration::from_secs(10),
            retention_max_age: None,
            retention_max_bytes: None,
            retention_max_events_per_session: None,
            max_body_bytes: 1024 * 1024,
            session_cache_size: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            admin: true,
            admin_secret: None,
            auth_mode: AuthMode::None,
            auth_jwks_url: None,
            auth_key_file: None,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
            auth_jwt_leeway_seconds: 1,
            append_rate: None,
            append_burst: None,
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

const SETTINGS: &[Setting] = &[
    Setting {
        variable: "STARCITE_LISTEN",
        flag: "--listen",
        apply: |config, raw| {
            config.listen = raw.parse().map_err(|err| format!("{err}: `{raw}`"))?;
            Ok(())
        },
        show: |config| config.listen.to_string(),
    },
    Setting {
        variable: "STARCITE_OPS_LISTEN",
        flag: "--ops-listen",
        apply: |config, raw| {
            config.ops_listen = if raw.is_empty() || raw.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(raw.parse().map_err(|err| format!("{err}: `{raw}`"))?)
            };
            Ok(())
        },
        show: |config| {
            config
                .ops_listen
                .map_or("off (served on --listen)".into(), |address| {
                    address.to_string()
                })
        },
    },
    Setting {
        variable: "STARCITE_NATS_URL",
        flag: "--nats-url",
        apply: |config, raw| {
            config.nats_urls = url_list(raw)?;
            Ok(())
        },
        show: |config| config.nats_urls.join(","),
    },
    Setting {
        variable: "STARCITE_NATS_CREDS",
        flag: "--nats-creds",
        apply: |config, raw| {
            config.nats_creds = optional_path(raw);
            Ok(())
        },
        show: |config| shown_path(config.nats_creds.as_deref()),
    },
    Setting {
        variable: "STARCITE_NATS_TLS_CA",
        flag: "--nats-tls-ca",
        apply: |config, raw| {
            config.nats_tls_ca = optional_path(raw);
            Ok(())
        },
        show: |config| shown_path(config.nats_tls_ca.as_deref()),
    },
    Setting {
        variable: "STARCITE_STREAM",
        flag: "--stream",
        apply: |config, raw| {
            config.stream = name(raw)?;
            Ok(())
        },
        show: |config| config.stream.clone(),
    },
    Setting {
        variable: "STARCITE_SUBJECT_PREFIX",
        flag: "--subject-prefix",
        apply: |config, raw| {
            config.subject_prefix = subject_prefix(raw)?;
            Ok(())
        },
        show: |config| config.subject_prefix.clone(),
    },
    Setting {
        variable: "STARCITE_SESSIONS_BUCKET",
        flag: "--sessions-bucket",
        apply: |config, raw| {
            config.sessions_bucket = name(raw)?;
            Ok(())
        },
        show: |config| config.sessions_bucket.clone(),
    },
    Setting {
        variable: "STARCITE_STREAM_REPLICAS",
        flag: "--stream-replicas",
        apply: |config, raw| {
            config.stream_replicas = number_in(raw, 1, 5)?;
            Ok(())
        },
        show: |config| config.stream_replicas.to_string(),
    },
    Setting {
        variable: "STARCITE_DUPLICATE_WINDOW",
        flag: "--duplicate-window",
        apply: |config, raw| {
            config.duplicate_window = duration(raw)?;
            Ok(())
        },
        show: |config| humantime::format_duration(config.duplicate_window).to_string(),
    },
    Setting {
        variable: "STARCITE_STREAM_MAX_CONSUMERS",
        flag: "--stream-max-consumers",
        apply: |config, raw| {
            config.stream_max_consumers = number_in(raw, 1, i32::MAX as usize)? as i32;
            Ok(())
        },
        show: |config| config.stream_max_consumers.to_string(),
    },
    Setting {
        variable: "STARCITE_NATS_TIMEOUT",
        flag: "--nats-timeout",
        apply: |config, raw| {
            config.nats_timeout = duration(raw)?;
            Ok(())
        },
        show: |config| humantime::format_duration(config.nats_timeout).to_string(),
    },
    Setting {
        variable: "STARCITE_TAIL_PING_INTERVAL",
        flag: "--tail-ping-interval",
        apply: |config, raw| {
            config.tail_ping_interval = duration(raw)?;
            Ok(())
        },
        show: |config| humantime::format_duration(config.tail_ping_interval).to_string(),
    },
    Setting {
        variable: "STARCITE_TAIL_BUFFER",
        flag: "--tail-buffer",
        apply: |config, raw| {
            config.tail_buffer = number_in(raw, 1, 1_000_000)?;
            Ok(())
        },
        show: |config| config.tail_buffer.to_string(),
    },
    Setting {
        variable: "STARCITE_TAILS_PER_TOKEN",
        flag: "--tails-per-token",
        apply: |config, raw| {
            config.tails_per_token = number_in(raw, 1, 1_000_000)?;
            Ok(())
        },
        show: |config| config.tails_per_token.to_string(),
    },
    Setting {
        variable: "STARCITE_TAIL_STALL_TIMEOUT",
        flag: "--tail-stall-timeout",
        apply: |config, raw| {
            config.tail_stall_timeout = duration(raw)?;
            Ok(())
        },
        show: |config| humantime::format_duration(config.tail_stall_timeout).to_string(),
    },
    Setting {
        variable: "STARCITE_RETENTION_MAX_AGE",
        flag: "--retention-max-age",
        apply: |config, raw| {
            config.retention_max_age = unless_off(raw, duration)?;
            Ok(())
        },
        show: |config| {
            config.retention_max_age.map_or("off".into(), |age| {
                humantime::format_duration(age).to_string()
            })
        },
    },
    Setting {
        variable: "STARCITE_RETENTION_MAX_BYTES",
        flag: "--retention-max-bytes",
        apply: |config, raw| {
            config.retention_max_bytes = unless_off(raw, |raw| {
                Ok(number_in(raw, 1024, i64::MAX as usize)? as i64)
            })?;
            Ok(())
        },
        show: |config| {
            config
                .retention_max_bytes
                .map_or("off".into(), |bytes| bytes.to_string())
        },
    },
    Setting {
        variable: "STARCITE_RETENTION_MAX_EVENTS_PER_SESSION",
        flag: "--retention-max-events-per-session",
        apply: |config, raw| {
            config.retention_max_events_per_session =
                unless_off(raw, |raw| Ok(number_in(raw, 1, i64::MAX as usize)? as i64))?;
            Ok(())
        },
        show: |config| {
            config
                .retention_max_events_per_session
                .map_or("off".into(), |events| events.to_string())
        },
    },
    Setting {
        variable: "STARCITE_MAX_BODY_BYTES",
        flag: "--max-body-bytes",
        apply: |config, raw| {
            config.max_body_bytes = number_in(raw, 1024, 64 * 1024 * 1024)?;
            Ok(())
        },
        show: |config| config.max_body_bytes.to_string(),
    },
    Setting {
        variable: "STARCITE_SESSION_CACHE_SIZE",
        flag: "--session-cache-size",
        apply: |config, raw| {
            config.session_cache_size = number_in(raw, 1, usize::MAX)?;
            Ok(())
        },
        show: |config| config.session_cache_size.to_string(),
    },
    Setting {
        variable: "STARCITE_SHUTDOWN_TIMEOUT",
        flag: "--shutdown-timeout",
        apply: |config, raw| {
            config.shutdown_timeout = duration(raw)?;
            Ok(())
        },
        show: |config| humantime::format_duration(config.shutdown_timeout).to_string(),
    },
    Setting {
        variable: "STARCITE_ADMIN",
        flag: "--admin",
        apply: |config, raw| {
            config.admin = match raw {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => return Err(format!("expected `on` or `off`, got `{raw}`")),
            };
            Ok(())
        },
        show: |config| {
            if config.admin {
                "on".into()
            } else {
                "off".into()
            }
        },
    },
    Setting {
        variable: "STARCITE_ADMIN_SECRET",
        flag: "--admin-secret",
        apply: |config, raw| {
            if !raw.is_empty() && raw.len() < 32 {
                return Err("use at least 32 characters".into());
            }
            config.admin_secret = Some(raw.to_owned()).filter(|secret| !secret.is_empty());
            Ok(())
        },
        show: |config| {
            if config.admin_secret.is_some() {
                "set".into()
            } else {
                "none".into()
            }
        },
    },
    Setting {
        variable: "STARCITE_APPEND_RATE",
        flag: "--append-rate",
        apply: |config, raw| {
            config.append_rate =
                unless_off(raw, |raw| Ok(number_in(raw, 1, u32::MAX as usize)? as u32))?;
            Ok(())
        },
        show: |config| {
            config
                .append_rate
                .map_or("off".into(), |rate| rate.to_string())
        },
    },
    Setting {
        variable: "STARCITE_APPEND_BURST",
        flag: "--append-burst",
        apply: |config, raw| {
            config.append_burst =
                unless_off(raw, |raw| Ok(number_in(raw, 1, u32::MAX as usize)? as u32))?;
            Ok(())
        },
        show: |config| {
            config
                .append_burst
                .map_or("the rate".into(), |burst| burst.to_string())
        },
    },
    Setting {
        variable: "STARCITE_AUTH_MODE",
        flag: "--auth-mode",
        apply: |config, raw| {
            config.auth_mode = match raw {
                "none" => AuthMode::None,
                "jwt" => AuthMode::Jwt,
                _ => return Err(format!("expected `none` or `jwt`, got `{raw}`")),
            };
            Ok(())
        },
        show: |config| {
            if config.auth_mode == AuthMode::Jwt {
                "jwt".into()
            } else {
                "none".into()
            }
        },
    },
    Setting {
        variable: "STARCITE_AUTH_JWKS_URL",
        flag: "--auth-jwks-url",
        apply: |config, raw| {
            config.auth_jwks_url = Some(raw.to_owned()).filter(|url| !url.is_empty());
            Ok(())
        },
        show: |config| {
            config
                .auth_jwks_url
                .clone()
                .unwrap_or_else(|| "none".into())
        },
    },
    Setting {
        variable: "STARCITE_AUTH_KEY_FILE",
        flag: "--auth-key-file",
        apply: |config, raw| {
            config.auth_key_file =
                Some(raw.into()).filter(|path: &std::path::PathBuf| !path.as_os_str().is_empty());
            Ok(())
        },
        show: |config| {
            config
                .auth_key_file
                .as_ref()
                .map_or("none".into(), |path| path.display().to_string())
        },
    },
    Setting {
        variable: "STARCITE_AUTH_JWT_ISSUER",
        flag: "--auth-jwt-issuer",
        apply: |config, raw| {
            config.auth_jwt_issuer = Some(raw.to_owned()).filter(|issuer| !issuer.is_empty());
            Ok(())
        },
        show: |config| {
            config
                .auth_jwt_issuer
                .clone()
                .unwrap_or_else(|| "none".into())
        },
    },
    Setting {
        variable: "STARCITE_AUTH_JWT_AUDIENCE",
        flag: "--auth-jwt-audience",
        apply: |config, raw| {
            config.auth_jwt_audience = Some(raw.to_owned()).filter(|audience| !audience.is_empty());
            Ok(())
        },
        show: |config| {
            config
                .auth_jwt_audience
                .clone()
                .unwrap_or_else(|| "none".into())
        },
    },
    Setting {
        variable: "STARCITE_AUTH_JWT_LEEWAY_SECONDS",
        flag: "--auth-jwt-leeway-seconds",
        apply: |config, raw| {
            config.auth_jwt_leeway_seconds = number_in(raw, 0, 3600)? as u64;
            Ok(())
        },
        show: |config| config.auth_jwt_leeway_seconds.to_string(),
    },
    Setting {
        variable: "STARCITE_LOG",
        flag: "--log",
        apply: |config, raw| {
            config.log = raw.to_owned();
            Ok(())
        },
        show: |config| config.log.clone(),
    },
    Setting {
        variable: "STARCITE_LOG_FORMAT",
        flag: "--log-format",
        apply: |config, raw| {
            config.log_format = match raw {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(format!("expected `text` or `json`, got `{raw}`")),
            };
            Ok(())
        },
        show: |config| match config.log_format {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        },
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Jwt,
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
        config.check_auth()?;
        config.check_retention()?;
        config.check_ops_listen()?;
        Ok(Invocation::Run(Box::new(config)))
    }
}

impl Config {
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

    /// JWT mode cannot start half-configured: name the first missing variable.
    /// JetStream refuses a stream whose duplicate window outlasts its retention age.
    fn check_retention(&self) -> Result<(), ConfigError> {
        match self.retention_max_age {
            Some(age) if age < self.duplicate_window => Err(ConfigError::Invalid {
                variable: "STARCITE_RETENTION_MAX_AGE",
                flag: "--retention-max-age",
                reason: format!(
                    "must be at least the duplicate window ({})",
                    humantime::format_duration(self.duplicate_window)
                ),
            }),
            _ => Ok(()),
        }
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        if self.auth_mode != AuthMode::Jwt {
            return Ok(());
        }
        let missing = |variable, flag| ConfigError::Invalid {
            variable,
            flag,
            reason: "required with STARCITE_AUTH_MODE=jwt".into(),
        };
        if self.auth_jwks_url.is_none() && self.auth_key_file.is_none() {
            return Err(missing(
                "STARCITE_AUTH_JWKS_URL",
                "--auth-jwks-url (or STARCITE_AUTH_KEY_FILE)",
            ));
        }
        if self.auth_jwt_issuer.is_none() {
            return Err(missing("STARCITE_AUTH_JWT_ISSUER", "--auth-jwt-issuer"));
        }
        if self.auth_jwt_audience.is_none() {
            return Err(missing("STARCITE_AUTH_JWT_AUDIENCE", "--auth-jwt-audience"));
        }
        Ok(())
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

fn url_list(raw: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("expected one or more comma-separated NATS URLs".to_owned());
    }
    for url in &urls {
        url.parse::<async_nats::ServerAddr>()
            .map_err(|err| format!("`{url}`: {err}"))?;
    }
    Ok(urls)
}

/// JetStream stream and bucket names: letters, digits, `-` and `_`.
fn name(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        return Err(format!(
            "`{raw}` is not a valid JetStream name (letters, digits, - and _)"
        ));
    }
    Ok(raw.to_owned())
}

fn subject_prefix(raw: &str) -> Result<String, String> {
    let valid = raw.split('.').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    });
    if !valid {
        return Err(format!(
            "`{raw}` is not a valid subject prefix (dot-separated tokens)"
        ));
    }
    Ok(raw.to_owned())
}

/// A file path, or `None` when empty (so an empty variable means unset).
fn optional_path(raw: &str) -> Option<std::path::PathBuf> {
    Some(std::path::PathBuf::from(raw)).filter(|path| !path.as_os_str().is_empty())
}

fn shown_path(path: Option<&std::path::Path>) -> String {
    path.map_or("none".into(), |path| path.display().to_string())
}

fn number_in(raw: &str, min: usize, max: usize) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!(
            "expected an integer from {min} to {max}, got `{raw}`"
        )),
    }
}

/// `off` (or empty) for no limit, else a value `parse` accepts.
fn unless_off<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if raw.is_empty() || raw.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse(raw).map(Some)
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "expected a duration such as `500ms`, `5s` or `2m`, got `{raw}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(args.iter().map(|arg| arg.to_string()), move |variable| {
            env.iter()
                .find(|(k, _)| k == variable)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        assert_eq!(config(&[], &[]), Ok(Invocation::Run(Box::default())));
    }

    #[test]
    fn flags_win_over_variables() {
        let Ok(Invocation::Run(config)) = config(
            &["--listen", "127.0.0.1:5000", "--duplicate-window=5m"],
            &[
                ("STARCITE_LISTEN", "127.0.0.1:6000"),
                ("STARCITE_NATS_URL", "nats://a:1, nats://b:2"),
            ],
        ) else {
            panic!("expected a config");
        };
        assert_eq!(config.listen.port(), 5000);
        assert_eq!(config.duplicate_window, Duration::from_secs(300));
        assert_eq!(config.nats_urls, vec!["nats://a:1", "nats://b:2"]);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = config(&[], &[("STARCITE_STREAM_REPLICAS", "7")]).unwrap_err();
        assert!(
            err.to_string().starts_with("STARCITE_STREAM_REPLICAS"),
            "{err}"
        );
        let err = config(&[], &[("STARCITE_LISTEN", "localhost")]).unwrap_err();
        assert!(err.to_string().contains("STARCITE_LISTEN"), "{err}");
        let err = config(&[], &[("STARCITE_DUPLICATE_WINDOW", "soon")]).unwrap_err();
        assert!(
            err.to_string().contains("STARCITE_DUPLICATE_WINDOW"),
            "{err}"
        );
        let err = config(&[], &[("STARCITE_STREAM", "a.b")]).unwrap_err();
        assert!(err.to_string().contains("STARCITE_STREAM"), "{err}");
    }

    #[test]
    fn the_ops_listener_is_an_address_of_its_own() {
        let Ok(Invocation::Run(unset)) = config(&[], &[]) else {
            panic!("expected a config");
        };
        assert_eq!(unset.ops_listen, None);
        let Ok(Invocation::Run(set)) = config(&[], &[("STARCITE_OPS_LISTEN", " 0.0.0.0:9090 ")])
        else {
            panic!("expected a config");
        };
        assert_eq!(set.ops_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9090))));
        let Ok(Invocation::Run(flag)) = config(
            &["--ops-listen=[::1]:9091"],
            &[("STARCITE_OPS_LISTEN", "127.0.0.1:9090")],
        ) else {
            panic!("expected a config");
        };
        assert_eq!(flag.ops_listen, Some("[::1]:9091".parse().unwrap()));
        for off in ["", "off", "OFF"] {
            let Ok(Invocation::Run(off)) = config(&[], &[("STARCITE_OPS_LISTEN", off)]) else {
                panic!("expected a config");
            };
            assert_eq!(off.ops_listen, None);
        }
        let err = config(&[], &[("STARCITE_OPS_LISTEN", "localhost:9090")]).unwrap_err();
        assert!(err.to_string().starts_with("STARCITE_OPS_LISTEN"), "{err}");
        let err = config(&[], &[("STARCITE_OPS_LISTEN", "9090")]).unwrap_err();
        assert!(err.to_string().contains("--ops-listen"), "{err}");
        let err = config(
            &["--listen", "127.0.0.1:4000"],
            &[("STARCITE_OPS_LISTEN", "127.0.0.1:4000")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
        // Two free ports picked by the system never clash.
        assert!(
            config(
                &["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"],
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn nats_credentials_and_tls_ca_are_paths() {
        let Ok(Invocation::Run(paths)) = config(
            &["--nats-tls-ca", "/etc/starcite/ca.pem"],
            &[
                ("STARCITE_NATS_CREDS", " /run/secrets/starcite.creds "),
                ("STARCITE_NATS_TLS_CA", "/elsewhere/ca.pem"),
            ],
        ) else {
            panic!("expected a config");
        };
        assert_eq!(
            paths.nats_creds.as_deref(),
            Some(std::path::Path::new("/run/secrets/starcite.creds"))
        );
        assert_eq!(
            paths.nats_tls_ca.as_deref(),
            Some(std::path::Path::new("/etc/starcite/ca.pem"))
        );
        // Empty means unset, so a blank variable in a compose file or unit changes nothing.
        let Ok(Invocation::Run(blank)) = config(
            &[],
            &[("STARCITE_NATS_CREDS", ""), ("STARCITE_NATS_TLS_CA", " ")],
        ) else {
            panic!("expected a config");
        };
        assert_eq!((blank.nats_creds, blank.nats_tls_ca), (None, None));
    }

    #[test]
    fn jwt_mode_needs_its_settings() {
        let err = config(&[], &[("STARCITE_AUTH_MODE", "jwt")]).unwrap_err();
        assert!(err.to_string().contains("STARCITE_AUTH_JWKS_URL"), "{err}");
        let err = config(
            &[],
            &[
                ("STARCITE_AUTH_MODE", "jwt"),
                ("STARCITE_AUTH_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("STARCITE_AUTH_JWT_ISSUER"),
            "{err}"
        );
        let err = config(&[], &[("STARCITE_AUTH_MODE", "sometimes")]).unwrap_err();
        assert!(err.to_string().contains("STARCITE_AUTH_MODE"), "{err}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        let Ok(Invocation::Run(json)) = config(&[], &[("STARCITE_LOG_FORMAT", "json")]) else {
            panic!("expected a config");
        };
        assert_eq!(json.log_format, LogFormat::Json);
        let err = config(&[], &[("STARCITE_LOG_FORMAT", "yaml")]).unwrap_err();
        assert!(err.to_string().contains("STARCITE_LOG_FORMAT"), "{err}");
    }

    #[test]
    fn unknown_flags_and_help() {
        assert!(matches!(
            config(&["--nope", "1"], &[]),
            Err(ConfigError::UnknownArgument(_))
        ));
        let Ok(Invocation::Help(text)) = config(&["--help"], &[]) else {
            panic!("expected help")
        };
        for setting in SETTINGS {
            assert!(text.contains(setting.variable));
        }
    }
}
