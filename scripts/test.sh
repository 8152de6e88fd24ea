#!/bin/sh
# Set up .venv with the package and its test tools, then run every check:
# ruff, mypy --strict, and the whole test suite (pytest arguments pass through).
set -eu
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --editable '.[test,redis]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
