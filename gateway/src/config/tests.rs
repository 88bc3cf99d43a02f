//! The configuration as read from flags and variables: precedence, defaults, refusals.

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

/// The configuration `args` and `env` give; a refusal fails the test with its message.
fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
    match config(args, env) {
        Ok(Invocation::Run(config)) => *config,
        other => panic!("expected a config, got {other:?}"),
    }
}

/// The message refusing what `args` and `env` give.
fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    match config(args, env) {
        Err(err) => err.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn nothing_set_gives_the_defaults() {
    assert_eq!(config(&[], &[]), Ok(Invocation::Run(Box::default())));
}

#[test]
fn flags_win_over_variables() {
    let config = run(
        &["--listen", "127.0.0.1:5000", "--duplicate-window=5m"],
        &[
            ("STARCITE_LISTEN", "127.0.0.1:6000"),
            ("STARCITE_NATS_URL", "nats://a:1, nats://b:2"),
        ],
    );
    assert_eq!(config.listen.port(), 5000);
    assert_eq!(config.nats.duplicate_window, Duration::from_secs(300));
    assert_eq!(config.nats.urls, vec!["nats://a:1", "nats://b:2"]);
}

#[test]
fn a_bad_value_names_its_variable() {
    let err = refusal(&[], &[("STARCITE_STREAM_REPLICAS", "7")]);
    assert!(err.starts_with("STARCITE_STREAM_REPLICAS"), "{err}");
    let err = refusal(&[], &[("STARCITE_LISTEN", "localhost")]);
    assert!(err.contains("STARCITE_LISTEN"), "{err}");
    let err = refusal(&[], &[("STARCITE_DUPLICATE_WINDOW", "soon")]);
    assert!(err.contains("STARCITE_DUPLICATE_WINDOW"), "{err}");
    let err = refusal(&[], &[("STARCITE_STREAM", "a.b")]);
    assert!(err.contains("STARCITE_STREAM"), "{err}");
}

#[test]
fn the_ops_listener_is_an_address_of_its_own() {
    let unset = run(&[], &[]);
    assert_eq!(unset.ops_listen, None);
    let set = run(&[], &[("STARCITE_OPS_LISTEN", " 0.0.0.0:9090 ")]);
    assert_eq!(set.ops_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9090))));
    let flag = run(
        &["--ops-listen=[::1]:9091"],
        &[("STARCITE_OPS_LISTEN", "127.0.0.1:9090")],
    );
    assert_eq!(flag.ops_listen, Some("[::1]:9091".parse().unwrap()));
    for off in ["", "off", "OFF"] {
        let off = run(&[], &[("STARCITE_OPS_LISTEN", off)]);
        assert_eq!(off.ops_listen, None);
    }
    let err = refusal(&[], &[("STARCITE_OPS_LISTEN", "localhost:9090")]);
    assert!(err.starts_with("STARCITE_OPS_LISTEN"), "{err}");
    let err = refusal(&[], &[("STARCITE_OPS_LISTEN", "9090")]);
    assert!(err.contains("--ops-listen"), "{err}");
    let err = refusal(
        &["--listen", "127.0.0.1:4000"],
        &[("STARCITE_OPS_LISTEN", "127.0.0.1:4000")],
    );
    assert!(err.contains("must differ"), "{err}");
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
    let paths = run(
        &["--nats-tls-ca", "/etc/starcite/ca.pem"],
        &[
            ("STARCITE_NATS_CREDS", " /run/secrets/starcite.creds "),
            ("STARCITE_NATS_TLS_CA", "/elsewhere/ca.pem"),
        ],
    );
    assert_eq!(
        paths.nats.creds.as_deref(),
        Some(std::path::Path::new("/run/secrets/starcite.creds"))
    );
    assert_eq!(
        paths.nats.tls_ca.as_deref(),
        Some(std::path::Path::new("/etc/starcite/ca.pem"))
    );
    // Empty means unset, so a blank variable in a compose file or unit changes nothing.
    let blank = run(
        &[],
        &[("STARCITE_NATS_CREDS", ""), ("STARCITE_NATS_TLS_CA", " ")],
    );
    assert_eq!((blank.nats.creds, blank.nats.tls_ca), (None, None));
}

#[test]
fn jwt_mode_needs_its_settings() {
    let err = refusal(&[], &[("STARCITE_AUTH_MODE", "jwt")]);
    assert!(err.contains("STARCITE_AUTH_JWKS_URL"), "{err}");
    let err = refusal(
        &[],
        &[
            ("STARCITE_AUTH_MODE", "jwt"),
            ("STARCITE_AUTH_JWKS_URL", "http://127.0.0.1:1/jwks"),
        ],
    );
    assert!(err.contains("STARCITE_AUTH_JWT_ISSUER"), "{err}");
    let err = refusal(&[], &[("STARCITE_AUTH_MODE", "sometimes")]);
    assert!(err.contains("STARCITE_AUTH_MODE"), "{err}");
}

#[test]
fn log_format_is_text_or_json() {
    let json = run(&[], &[("STARCITE_LOG_FORMAT", "json")]);
    assert_eq!(json.log_format, LogFormat::Json);
    let err = refusal(&[], &[("STARCITE_LOG_FORMAT", "yaml")]);
    assert!(err.contains("STARCITE_LOG_FORMAT"), "{err}");
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

#[test]
fn every_setting_reaches_its_field() {
    let config = run(
        &[],
        &[
            ("STARCITE_LISTEN", "127.0.0.1:5000"),
            ("STARCITE_OPS_LISTEN", "127.0.0.1:5001"),
            ("STARCITE_NATS_URL", "nats://a:1"),
            ("STARCITE_NATS_CREDS", "/run/nats.creds"),
            ("STARCITE_NATS_TLS_CA", "/run/ca.pem"),
            ("STARCITE_STREAM", "EVENTS"),
            ("STARCITE_SUBJECT_PREFIX", "app.events"),
            ("STARCITE_SESSIONS_BUCKET", "headers"),
            ("STARCITE_STREAM_REPLICAS", "3"),
            ("STARCITE_STREAM_SHARDS", "4"),
            ("STARCITE_DUPLICATE_WINDOW", "1m"),
            ("STARCITE_STREAM_MAX_CONSUMERS", "20"),
            ("STARCITE_NATS_TIMEOUT", "4s"),
            ("STARCITE_TAIL_PING_INTERVAL", "5s"),
            ("STARCITE_TAIL_BUFFER", "64"),
            ("STARCITE_TAILS_PER_TOKEN", "7"),
            ("STARCITE_TAIL_STALL_TIMEOUT", "2s"),
            ("STARCITE_RETENTION_MAX_AGE", "1h"),
            ("STARCITE_RETENTION_MAX_BYTES", "2048"),
            ("STARCITE_RETENTION_MAX_EVENTS_PER_SESSION", "50"),
            ("STARCITE_MAX_BODY_BYTES", "4096"),
            ("STARCITE_CATALOG_DIR", "/var/lib/starcite/catalog"),
            ("STARCITE_CATALOG_LOADING_WAIT", "250ms"),
            ("STARCITE_SESSION_CACHE_SIZE", "30"),
            ("STARCITE_SHUTDOWN_TIMEOUT", "6s"),
            ("STARCITE_ADMIN", "false"),
            ("STARCITE_ADMIN_SECRET", "0123456789abcdef0123456789abcdef"),
            ("STARCITE_APPEND_RATE", "10"),
            ("STARCITE_APPEND_BURST", "OFF"),
            ("STARCITE_PRODUCE_WINDOW", "32"),
            ("STARCITE_LONG_POLL_TIMEOUT", "3s"),
            ("STARCITE_AUTH_MODE", "jwt"),
            ("STARCITE_AUTH_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ("STARCITE_AUTH_KEY_FILE", "/run/key.pem"),
            ("STARCITE_AUTH_JWT_ISSUER", "issuer"),
            ("STARCITE_AUTH_JWT_AUDIENCE", "audience"),
            ("STARCITE_AUTH_JWT_LEEWAY_SECONDS", "0"),
            ("STARCITE_LOG", "debug"),
            ("STARCITE_LOG_FORMAT", "json"),
        ],
    );
    let expected = Config {
        listen: "127.0.0.1:5000".parse().unwrap(),
        ops_listen: Some("127.0.0.1:5001".parse().unwrap()),
        nats: NatsConfig {
            urls: vec!["nats://a:1".to_owned()],
            creds: Some("/run/nats.creds".into()),
            tls_ca: Some("/run/ca.pem".into()),
            timeout: Duration::from_secs(4),
            stream: "EVENTS".to_owned(),
            subject_prefix: "app.events".to_owned(),
            sessions_bucket: "headers".to_owned(),
            stream_replicas: 3,
            stream_shards: 4,
            duplicate_window: Duration::from_secs(60),
            stream_max_consumers: 20,
            retention_max_age: Some(Duration::from_secs(3600)),
            retention_max_bytes: Some(2048),
            retention_max_events_per_session: Some(50),
        },
        tail: TailConfig {
            ping_interval: Duration::from_secs(5),
            buffer: 64,
            stall_timeout: Duration::from_secs(2),
            tails_per_token: 7,
        },
        limits: LimitsConfig {
            max_body_bytes: 4096,
            append_rate: Some(10),
            append_burst: None,
            produce_window: 32,
            long_poll_timeout: Duration::from_secs(3),
        },
        catalog: CatalogConfig {
            dir: "/var/lib/starcite/catalog".into(),
            loading_wait: Duration::from_millis(250),
        },
        auth: AuthConfig {
            mode: AuthMode::Jwt,
            jwks_url: Some("http://127.0.0.1:1/jwks".to_owned()),
            key_file: Some("/run/key.pem".into()),
            issuer: Some("issuer".to_owned()),
            audience: Some("audience".to_owned()),
            leeway_seconds: 0,
        },
        admin: AdminConfig {
            enabled: false,
            secret: Some("0123456789abcdef0123456789abcdef".to_owned()),
        },
        session_cache_size: 30,
        shutdown_timeout: Duration::from_secs(6),
        log: "debug".to_owned(),
        log_format: LogFormat::Json,
    };
    assert_eq!(config, expected);
}

#[test]
fn help_shows_every_default() {
    let Ok(Invocation::Help(text)) = config(&["--help"], &[]) else {
        panic!("expected help")
    };
    let defaults: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.trim().split_once(" default: "))
        .map(|(names, default)| (names.split_whitespace().next().unwrap_or_default(), default))
        .collect();
    let catalog_dir = std::env::temp_dir().join("starcite-catalog");
    let catalog_dir = catalog_dir.display().to_string();
    assert_eq!(
        defaults,
        [
            ("--listen", "127.0.0.1:4000"),
            ("--ops-listen", "off (served on --listen)"),
            ("--nats-url", "nats://127.0.0.1:4222"),
            ("--nats-creds", "none"),
            ("--nats-tls-ca", "none"),
            ("--stream", "STARCITE_EVENTS"),
            ("--subject-prefix", "starcite.events"),
            ("--sessions-bucket", "starcite_sessions"),
            ("--stream-replicas", "1"),
            ("--stream-shards", "1"),
            ("--duplicate-window", "2m"),
            ("--stream-max-consumers", "10000"),
            ("--nats-timeout", "3s"),
            ("--tail-ping-interval", "15s"),
            ("--tail-buffer", "1024"),
            ("--tails-per-token", "100"),
            ("--tail-stall-timeout", "10s"),
            ("--retention-max-age", "off"),
            ("--retention-max-bytes", "off"),
            ("--retention-max-events-per-session", "off"),
            ("--max-body-bytes", "1048576"),
            ("--catalog-dir", catalog_dir.as_str()),
            ("--catalog-loading-wait", "5s"),
            ("--session-cache-size", "10000"),
            ("--shutdown-timeout", "10s"),
            ("--admin", "on"),
            ("--admin-secret", "none"),
            ("--append-rate", "off"),
            ("--append-burst", "the rate"),
            ("--produce-window", "256"),
            ("--long-poll-timeout", "30s"),
            ("--auth-mode", "none"),
            ("--auth-jwks-url", "none"),
            ("--auth-key-file", "none"),
            ("--auth-jwt-issuer", "none"),
            ("--auth-jwt-audience", "none"),
            ("--auth-jwt-leeway-seconds", "1"),
            ("--log", "info"),
            ("--log-format", "text"),
        ]
    );
}
