#!/usr/bin/env bash
# Lints the committed openapi.json with Spectral's OpenAPI rules (.spectral.yaml) and fails on
# any warning. Spectral is pinned, with its rulesets, by scripts/spectral/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

spectral=scripts/spectral
if [[ ! -d $spectral/node_modules ]] || [[ $spectral/package-lock.json -nt $spectral/node_modules ]]; then
  # SCARF_ANALYTICS=false: one of Spectral's dependencies reports installs unless told not to.
  (cd "$spectral" && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --loglevel=error)
fi
"$spectral/node_modules/.bin/spectral" lint openapi.json --ruleset .spectral.yaml \
  --fail-severity warn
