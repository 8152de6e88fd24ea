"""Sphinx configuration of the aiohttp-wsapp documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. Every Python code
block in these pages is run by ``tests/test_docs.py``.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp_wsapp

project = "aiohttp-wsapp"
author = "aiohttp-wsapp developers"
copyright = "aiohttp-wsapp developers"
release = aiohttp_wsapp.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]
# A literal block (``::``) is plain text: code is shown with an explicit ``code-block`` language,
# and every ``code-block:: python`` is run by the tests.
highlight_language = "none"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_type_aliases = {"Endpoint": "Endpoint"}

html_theme = "alabaster"
html_title = f"aiohttp-wsapp {release}"
html_theme_options = {
    "description": "WebSocket endpoints as aiohttp sub-applications",
    "fixed_sidebar": True,
}


@cache
def _attribute_docstrings() -> dict[str, list[str]]:
    """The docstrings of the package's module-level names, wherever they are defined."""
    from sphinx.pycode import ModuleAnalyzer

    docs: dict[str, list[str]] = {}
    for module in ("aiohttp_wsapp", "aiohttp_wsapp.app", "aiohttp_wsapp.errors"):
        for (scope, name), lines in ModuleAnalyzer.for_module(module).find_attr_docs().items():
            if not scope:
                docs[name] = list(lines)
    return docs


def _data_docstring(
    app: Any, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    # ``aiohttp_wsapp`` re-exports its constants from submodules: autodoc looks for their
    # docstrings in ``__init__.py`` and, finding none, would show the docstring of ``str`` or of
    # ``RequestKey``. Show the docstring written where the constant is defined, or nothing.
    if what == "data" and name.startswith("aiohttp_wsapp."):
        lines[:] = _attribute_docstrings().get(name.rpartition(".")[2], ())


def _hub_connection(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    # ``WebSocketApp`` inherits its connections, groups and broadcast from ``Hub``, written for
    # any connection type (the type variable ``aiohttp_wsapp.hub.Connection``): link it to the
    # endpoint's connections, :class:`aiohttp_wsapp.Connection`.
    if node.get("reftarget") != "aiohttp_wsapp.hub.Connection":
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, "class", "aiohttp_wsapp.Connection", node, contnode
    )


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _data_docstring)
    app.connect("missing-reference", _hub_connection)
