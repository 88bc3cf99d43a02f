#!/usr/bin/env bash
# Generates the Python and TypeScript clients from the committed openapi.json, with standard
# generators, and type-checks the TypeScript flow. The e2e test `generated_clients` then drives
# both against a live gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
venv=tools/venv
rm -rf target/clients/python
mkdir -p target/clients/python
"$venv/bin/openapi-python-client" generate --path openapi.json \
  --config clients/python/config.yml --meta none \
  --output-path target/clients/python/starcite_client

cd clients/typescript
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent generate
npm run --silent check
