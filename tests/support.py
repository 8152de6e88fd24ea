"""Helpers for tests that need a program or module this machine may lack."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ALL = os.environ.get("AIOHTTP_WSAPP_REQUIRE_ALL") == "1"
"""Set by ``.ci/run``: a test whose program is missing fails instead of skipping."""


def require_program(program: str, install_hint: str) -> str:
    """Return the path of ``program``, or skip the test (fail in CI) when it is not installed."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed ({install_hint})"
        if REQUIRE_ALL:
            pytest.fail(message + "; AIOHTTP_WSAPP_REQUIRE_ALL=1 makes this mandatory")
        pytest.skip(message)
    return path


def require_module(module: str, install_hint: str) -> None:
    """Skip the test (fail in CI) when the Python module ``module`` cannot be imported."""
    try:
        __import__(module)
    except ImportError:
        message = f"Python module {module} is not installed ({install_hint})"
        if REQUIRE_ALL:
            pytest.fail(message + "; AIOHTTP_WSAPP_REQUIRE_ALL=1 makes this mandatory")
        pytest.skip(message)
