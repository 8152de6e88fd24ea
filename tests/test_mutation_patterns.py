"""Every mutation of ``scripts/mutations.py`` still applies to the package as it is.

The mutation check runs only in CI (it takes minutes); a refactoring that moves a mutated line
must fail here, in the suite everyone runs, and not only at the end of CI.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_mutations() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutations", ROOT / "scripts" / "mutations.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutations", module)  # dataclasses looks the module up by name
    spec.loader.exec_module(module)
    return module


MUTATIONS: tuple[Any, ...] = _load_mutations().MUTATIONS
"""``scripts/`` is not a package: loaded by path, its ``Mutation`` type is not known to mypy."""


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_the_pattern_is_found_exactly_once(mutation: Any) -> None:
    source = (ROOT / "aiohttp_wsapp" / mutation.module).read_text()
    assert source.count(mutation.old) == 1


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_the_tests_that_catch_it_exist(mutation: Any) -> None:
    for node in mutation.tests:
        path, _, name = node.partition("::")
        assert (ROOT / path).is_file(), node
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), node
