#!/bin/sh
# Set up .venv with the package, then start the demo server on 127.0.0.1.
set -eu
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --editable ".[redis]"
exec .venv/bin/python examples/chat/server.py "$@"
