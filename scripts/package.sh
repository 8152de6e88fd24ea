#!/bin/sh
# Build the sdist and the wheel as a release would, and check them:
#   1. python -m build into a fresh temporary directory (or $DIST_DIR, e.g. dist/, to keep them);
#   2. twine check --strict (metadata, README rendering);
#   3. scripts/check_dist.py: LICENSE in both, py.typed and every module in the wheel and nothing
#      else, the version of aiohttp_wsapp/__init__.py in the metadata and in CHANGES.rst, and in
#      the sdist everything its tests need;
#   4. the sdist unpacked: its tests collect with its own pyproject.toml, importing its own copy
#      of the package, and tests/test_frames.py passes there.
# Uses .venv (as scripts/test.sh does; $VENV to use another), installing build and twine into it;
# step 4 needs the test dependencies that scripts/test.sh installs.
set -eu
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PYTHON="$(cd "$VENV" && pwd)/bin/python" # absolute: step 4 runs in the unpacked sdist
"$PYTHON" -m pip install --quiet build twine

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DIST="${DIST_DIR:-$WORK/dist}"
rm -rf "$DIST"
mkdir -p "$DIST"

"$PYTHON" -m build --outdir "$DIST" . >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log"
    exit 1
}
"$PYTHON" -m twine check --strict "$DIST"/*
"$PYTHON" scripts/check_dist.py "$DIST"

# The unpacked sdist, on the import path ahead of any installed copy.
tar -xzf "$DIST"/*.tar.gz -C "$WORK"
UNPACKED="$(find "$WORK" -maxdepth 1 -type d -name 'aiohttp_wsapp-*')"
(
    cd "$UNPACKED"
    export PYTHONPATH="$UNPACKED"
    imported="$("$PYTHON" -c 'import aiohttp_wsapp; print(aiohttp_wsapp.__file__)')"
    case "$imported" in
    "$UNPACKED"/*) ;;
    *)
        echo "the unpacked sdist imports aiohttp_wsapp from $imported" >&2
        exit 1
        ;;
    esac
    "$PYTHON" -m pytest --collect-only -q -p no:cacheprovider >"$WORK/collect.log" 2>&1 || {
        cat "$WORK/collect.log"
        exit 1
    }
    echo "sdist: $(tail -n 1 "$WORK/collect.log")"
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_frames.py
)
echo "package: built and checked $(ls "$DIST" | tr '\n' ' ')"
