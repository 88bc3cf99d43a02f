#!/usr/bin/env bash
# Installs the Durable Streams conformance suite and the official TypeScript client (pinned in
# tests/durable-streams/package-lock.json), which the e2e tests `durable_streams` run against a
# live gateway.
set -euo pipefail
cd "$(dirname "$0")/../tests/durable-streams"

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
