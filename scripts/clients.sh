#!/usr/bin/env bash
# Generates the Python client and the TypeScript SDK's types from the committed openapi.json,
# with standard generators, and builds the SDK. The e2e tests then drive both against a live
# gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
venv=tools/venv
rm -rf target/clients/python
mkdir -p target/clients/python
"$venv/bin/openapi-python-client" generate --path openapi.json \
  --config clients/python/config.yml --meta none \
  --output-path target/clients/python/starcite_client

# The TypeScript SDK: its types from openapi.json and its build in dist/, both committed (a test
# fails when they differ from a fresh generation), then a type check of the SDK and its tests.
cd clients/typescript
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent generate >/dev/null
rm -rf dist
npm run --silent build
npm run --silent check
