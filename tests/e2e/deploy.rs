//! The deployment files, checked without a Docker engine: docker-compose accepts the compose
//! file with each profile, nats-server's configuration test accepts every NATS command line in
//! it and every node of `deploy/nats-cluster`, the gateway accepts every gateway's environment,
//! the `observability` profile's Prometheus scrapes every compose gateway and Grafana reads
//! `deploy/grafana`, and every published port is on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

use gateway::config::{Config, Invocation};

#[test]
fn docker_compose_accepts_every_profile() {
    compose(&["config", "-q"]);
    compose(&["--profile", "cluster", "config", "-q"]);
    compose(&["--profile", "observability", "config", "-q"]);
}

#[test]
fn every_published_port_is_on_loopback() {
    let services = services();
    let published: Vec<(&str, &str)> = services
        .iter()
        .flat_map(|service| {
            service
                .ports
                .iter()
                .map(|port| (service.name.as_str(), port.as_str()))
        })
        .collect();
    assert!(published.len() >= 6, "{published:?}");
    for (name, port) in published {
        assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port}");
    }
}

/// The observability profile's Prometheus reads `deploy/prometheus/prometheus.yml` (alerts.yml
/// beside it) and scrapes exactly the compose gateways, each on the port it listens on; Grafana
/// reads `deploy/grafana`'s provisioning, whose dashboard folder is where the dashboards are
/// mounted and whose data source is that Prometheus.
#[test]
fn the_observability_profile_scrapes_every_compose_gateway() {
    let services = services();
    let service = |name: &str| -> &Service {
        services
            .iter()
            .find(|service| service.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    };

    let prometheus = service("prometheus");
    assert!(prometheus.image.starts_with("prom/prometheus:"));
    let config = prometheus
        .command
        .iter()
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .expect("prometheus has no --config.file");
    let config = host_path(prometheus, config);
    assert_eq!(config, repo().join("deploy/prometheus/prometheus.yml"));
    let text = std::fs::read_to_string(&config).unwrap();
    let mut targets = scrape_targets(&text);
    targets.sort();
    let mut gateways: Vec<String> = services
        .iter()
        .filter_map(|service| {
            let listen = service
                .environment
                .iter()
                .find(|(name, _)| name == "STARCITE_LISTEN")?;
            let port = listen.1.rsplit(':').next().unwrap();
            Some(format!("{}:{port}", service.name))
        })
        .collect();
    gateways.sort();
    assert_eq!(targets, gateways, "scrape targets in {}", config.display());

    let grafana = service("grafana");
    assert!(grafana.image.starts_with("grafana/grafana:"));
    assert_eq!(
        host_path(grafana, "/etc/grafana/provisioning"),
        repo().join("deploy/grafana/provisioning")
    );
    let provider =
        std::fs::read_to_string(repo().join("deploy/grafana/provisioning/dashboards/starcite.yml"))
            .unwrap();
    let dashboards = yaml_value(&provider, "path").expect("no dashboard path");
    assert_eq!(
        host_path(grafana, &dashboards),
        repo().join("deploy/grafana/dashboards")
    );
    assert!(
        repo()
            .join("deploy/grafana/dashboards/starcite.json")
            .exists()
    );
    let datasource = std::fs::read_to_string(
        repo().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    let url = yaml_value(&datasource, "url").expect("no data source url");
    let port = prometheus
        .ports
        .iter()
        .find_map(|port| port.split('/').next()?.rsplit(':').next())
        .expect("prometheus publishes no port");
    assert_eq!(url, format!("http://prometheus:{port}"));
}

#[test]
fn every_nats_command_line_in_the_compose_file_passes_the_configuration_test() {
    let services = services();
    let nats: Vec<&Service> = services
        .iter()
        .filter(|service| service.image.starts_with("nats:"))
        .collect();
    let names: Vec<&str> = nats.iter().map(|service| service.name.as_str()).collect();
    assert_eq!(
        names,
        ["cluster-nats-1", "cluster-nats-2", "cluster-nats-3", "nats"]
    );
    for service in nats {
        // The image's entrypoint runs nats-server only when the command starts with a flag.
        assert!(
            service
                .command
                .first()
                .is_some_and(|arg| arg.starts_with('-')),
            "{}: {:?}",
            service.name,
            service.command
        );
        // Files the container sees through a bind mount are read from the repository.
        let args: Vec<String> = service
            .command
            .iter()
            .map(|arg| {
                service.volumes.iter().fold(arg.clone(), |arg, volume| {
                    let mut parts = volume.split(':');
                    match (parts.next(), parts.next()) {
                        (Some(host), Some(container)) if host.starts_with('/') => {
                            arg.replace(container, host)
                        }
                        _ => arg,
                    }
                })
            })
            .collect();
        config_test(&service.name, &args);
    }
}

#[test]
fn every_cluster_node_configuration_passes_the_configuration_test() {
    for node in 1..=3 {
        let path = repo().join(format!("deploy/nats-cluster/node{node}.conf"));
        config_test(
            &format!("node{node}.conf"),
            &["-c".to_owned(), path.display().to_string()],
        );
    }
}

#[test]
fn every_gateway_environment_in_the_compose_file_is_a_valid_configuration() {
    let services = services();
    let gateways: Vec<&Service> = services
        .iter()
        .filter(|service| {
            service
                .environment
                .iter()
                .any(|(name, _)| name == "STARCITE_NATS_URL")
        })
        .collect();
    let names: Vec<&str> = gateways
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    assert_eq!(names, ["cluster-gateway-1", "cluster-gateway-2", "gateway"]);
    for service in gateways {
        let parsed = Config::from_sources(Vec::new(), |variable| {
            service
                .environment
                .iter()
                .find(|(name, _)| name == variable)
                .map(|(_, value)| value.clone())
        });
        let Ok(Invocation::Run(config)) = parsed else {
            panic!("{}: {parsed:?}", service.name);
        };
        if service.name.starts_with("cluster-") {
            assert_eq!(config.nats.stream_replicas, 3, "{}", service.name);
            assert_eq!(config.nats.urls.len(), 3, "{}", service.name);
        }
    }
}

/// What the tests need of one service in `docker-compose config`'s normalized output.
#[derive(Debug, Default)]
struct Service {
    name: String,
    image: String,
    command: Vec<String>,
    volumes: Vec<String>,
    ports: Vec<String>,
    environment: Vec<(String, String)>,
}

/// Every service of every profile (the default ones included), read from the
/// normalized YAML docker-compose prints: services at two spaces, their keys at four, list
/// items and environment entries below those (list items may also sit at four spaces).
fn services() -> Vec<Service> {
    let text = compose(&[
        "--profile",
        "cluster",
        "--profile",
        "observability",
        "config",
    ]);
    let mut services: Vec<Service> = Vec::new();
    let mut in_services = false;
    let mut key = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if indent == 0 {
            in_services = line == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            services.push(Service {
                name: line.trim_end_matches(':').to_owned(),
                ..Service::default()
            });
            continue;
        }
        let Some(service) = services.last_mut() else {
            continue;
        };
        if let Some(item) = line.strip_prefix("- ") {
            match key.as_str() {
                "command" => service.command.push(unquote(item)),
                "volumes" => service.volumes.push(unquote(item)),
                "ports" => service.ports.push(unquote(item)),
                _ => {}
            }
        } else if indent == 4 {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            key = name.to_owned();
            if key == "image" {
                service.image = unquote(value);
            }
        } else if key == "environment"
            && let Some((name, value)) = line.split_once(':')
        {
            service.environment.push((name.to_owned(), unquote(value)));
        }
    }
    assert!(
        services.len() >= 9,
        "unexpected `docker-compose config` output:\n{text}"
    );
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Where `path` inside `service`'s container comes from in the repository, through its bind
/// mounts.
fn host_path(service: &Service, path: &str) -> PathBuf {
    service
        .volumes
        .iter()
        .find_map(|volume| {
            let mut parts = volume.split(':');
            let (host, container) = (parts.next()?, parts.next()?);
            let rest = path.strip_prefix(container)?;
            (host.starts_with('/') && (rest.is_empty() || rest.starts_with('/')))
                .then(|| PathBuf::from(format!("{host}{rest}")))
        })
        .unwrap_or_else(|| panic!("{}: nothing mounted at {path}", service.name))
}

/// Every `targets: [...]` entry of a Prometheus configuration (comments skipped).
fn scrape_targets(config: &str) -> Vec<String> {
    config
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| line.split_once("targets:").map(|(_, list)| list))
        .flat_map(|list| {
            list.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(unquote)
                .filter(|target| !target.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The value of the first `key: value` line of a YAML file (comments skipped).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.trim().trim_start_matches("- ").split_once(':')?;
            (name == key).then(|| unquote(value))
        })
}

/// Runs docker-compose in the repository and returns its output, failing on an error.
fn compose(args: &[&str]) -> String {
    let output = Command::new("docker-compose")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run docker-compose ({err}); these tests need it on PATH \
                 (Debian: apt-get install docker-compose, which .ci/run does)"
            )
        });
    assert!(
        output.status.success(),
        "docker-compose {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `nats-server -t <args>`: parses the configuration and the flags, binds nothing.
fn config_test(what: &str, args: &[String]) {
    let output = Command::new(nats_server())
        .arg("-t")
        .args(args)
        .output()
        .expect("nats-server not found: run `make tools` or set NATS_SERVER_BIN");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An unknown flag prints the usage and still exits 0: look for the verdict too.
    assert!(
        output.status.success() && stderr.contains("is valid"),
        "{what}: nats-server -t {} refused it:\n{stderr}",
        args.join(" ")
    );
}

/// The server named by `NATS_SERVER_BIN`, else the project's tools folder, else `PATH`.
fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return path.into();
    }
    let local = repo().join("tools/venv/bin/nats-server");
    if local.exists() {
        local
    } else {
        PathBuf::from("nats-server")
    }
}
