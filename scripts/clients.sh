#!/usr/bin/env bash
# Generates the Python SDK's wire types (clients/python/starcite/models.py, committed) and the
# TypeScript client from the committed openapi.json, with standard generators, and type-checks
# the TypeScript flow. The e2e tests then drive both against a live gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
clients/python/generate.sh

cd clients/typescript
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent generate
npm run --silent check
