#!/usr/bin/env bash
# Generates the Python SDK's wire types (clients/python/starcite/models.py, committed) and the
# TypeScript client from the committed openapi.json, with standard generators, lints and
# type-checks the Python SDK and type-checks the TypeScript flow. The e2e tests then drive both
# against a live gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
clients/python/generate.sh
(cd clients/python && ../../tools/venv/bin/ruff check --quiet . && ../../tools/venv/bin/ruff format --check --quiet . && ../../tools/venv/bin/mypy starcite)

cd clients/typescript
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent generate
npm run --silent check
