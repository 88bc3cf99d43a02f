#!/usr/bin/env bash
# Writes the SDK's wire types, generated from the repository's openapi.json, to the file given
# (the committed starcite/models.py by default). The e2e drift test writes them elsewhere and
# compares.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
output="${1:-$here/starcite/models.py}"
PYTHONWARNINGS=ignore "$root/tools/venv/bin/datamodel-codegen" \
  --input "$root/openapi.json" --input-file-type openapi \
  --output-model-type dataclasses.dataclass --keyword-only \
  --target-python-version 3.10 --use-standard-collections --use-union-operator \
  --strict-nullable --use-field-description --disable-timestamp \
  --formatters builtin --custom-file-header '# Generated from openapi.json by clients/python/generate.sh (`make clients`); do not edit.' \
  --output "$output"
