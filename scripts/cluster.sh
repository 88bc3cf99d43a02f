#!/usr/bin/env bash
# Starts a local 3-node JetStream cluster (deploy/nats-cluster, data under ./data/cluster) and
# two gateways on 127.0.0.1:4000 and :4001 with every stream replicated 3 times; Ctrl-C (or
# SIGTERM) stops all five. Arguments are passed to both gateways.
set -euo pipefail
cd "$(dirname "$0")/.."

pids=()
stop() {
  trap - INT TERM EXIT
  # SIGTERM: the gateways close their tails and the servers leave the cluster cleanly.
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT
# Background jobs of a script ignore SIGINT, so Ctrl-C reaches only this shell: turn it into an
# exit, whose trap stops every child.
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background with its output prefixed by <label>, so the five logs can be told
# apart; remembers its pid (not the prefixer's) for stop.
start() { # <label> <command...>
  local label=$1
  shift
  "$@" > >(sed -u "s/^/[$label] /") 2>&1 &
  pids+=($!)
}

mkdir -p data/cluster
for node in 1 2 3; do
  start "n$node" tools/venv/bin/nats-server --config "deploy/nats-cluster/node$node.conf"
done

# In the background so a signal during a long build stops everything at once.
cargo build -p gateway --bin starcite &
pids+=($!)
wait "${pids[-1]}"
unset 'pids[-1]'

urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for port in 4000 4001; do
  start "gw$port" env STARCITE_NATS_URL="$urls" STARCITE_STREAM_REPLICAS=3 \
    STARCITE_LISTEN="127.0.0.1:$port" target/debug/starcite "$@"
done
echo "cluster: NATS on 127.0.0.1:4222-4224, gateways on http://127.0.0.1:4000 and :4001; Ctrl-C stops all" >&2

# Returns once every process has exited (stopping one node leaves the rest running) or a signal
# arrives.
wait
