#!/usr/bin/env bash
# Checks deploy/prometheus with promtool: the scrape configuration (and the rule files it
# names, found relative to it as in the container), the alert rules, and their unit tests.
# promtool comes with Debian's `prometheus` package, which .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "promtool is missing: install Debian's prometheus package" \
    "(apt-get install --no-install-recommends prometheus), as .ci/run does" >&2
  exit 1
fi
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
