#!/usr/bin/env bash
# The client libraries' tools: installs what their tests need (the Python SDK's generator,
# linters and dependencies into ./tools/venv, the TypeScript SDK's node_modules), lints and
# type-checks both. `scripts/clients.sh generate` (`make clients`) first writes their committed
# wire types from openapi.json and rebuilds the TypeScript SDK's committed dist/; `make test`
# does not, so its drift tests catch generated files that were not committed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
cd clients/typescript
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
cd ../..

if [[ "${1:-}" == "generate" ]]; then
  clients/python/generate.sh
  (cd clients/typescript && npm run --silent generate >/dev/null && rm -rf dist && npm run --silent build)
fi

(cd clients/python && ../../tools/venv/bin/ruff check --quiet . \
  && ../../tools/venv/bin/ruff format --check --quiet . && ../../tools/venv/bin/mypy starcite)
(cd clients/typescript && npm run --silent check)
