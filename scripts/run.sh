#!/usr/bin/env bash
# Starts a local nats-server (nats.conf, data under ./data) and the gateway; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p data
tools/venv/bin/nats-server --config nats.conf &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true' EXIT

cargo build --release -p gateway
STARCITE_NATS_URL="${STARCITE_NATS_URL:-nats://127.0.0.1:4222}" target/release/starcite "$@"
