"""Sections of benchmarks/RESULTS.md that one tool writes and every other keeps.

``python -m benchmarks`` rewrites the report whole; ``python -m benchmarks.callgrind`` writes one
section of it. A kept section sits between ``<!-- keep: NAME -->`` and ``<!-- /keep: NAME -->``
lines: its tool replaces it in place, and the full run carries it over to its new report.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["kept_sections", "replace_section"]

_KEPT = re.compile(r"^<!-- keep: (?P<name>[\w-]+) -->$.*?^<!-- /keep: (?P=name) -->$", re.M | re.S)


def kept_sections(path: Path) -> list[str]:
    """Every kept section of the report at ``path``, markers included (none if it is absent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [match.group(0) for match in _KEPT.finditer(text)]


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` into the report at ``path`` as the kept section ``name``.

    An existing section of that name is replaced where it stands; a new one goes at the end.
    """
    section = f"<!-- keep: {name} -->\n{body.strip()}\n<!-- /keep: {name} -->"
    text = path.read_text() if path.exists() else ""
    for match in _KEPT.finditer(text):
        if match.group("name") == name:
            text = text[: match.start()] + section + text[match.end() :]
            break
    else:
        text = f"{text.rstrip()}\n\n{section}" if text.strip() else section
    path.write_text(text.rstrip() + "\n")
