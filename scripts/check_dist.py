"""Check what the built sdist and wheel hold; exit 1, listing every problem, if anything is off.

    python scripts/check_dist.py DIST_DIR

Run by ``scripts/package.sh`` after ``python -m build --outdir DIST_DIR``. The wheel must hold
every module of the package, ``py.typed`` and the ``LICENSE``, and nothing else; its metadata
the version of ``aiohttp_wsapp/__init__.py`` (the one place it is written) and the MIT licence.
The sdist must hold the same package, the ``LICENSE``, and everything its tests need to run
from the unpacked archive: every file of ``tests/``, ``docs/`` and ``examples/``, the README and
``CHANGES.rst``, which must have an entry for the version.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from email.parser import Parser
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiohttp_wsapp"
#: Directories whose every file the sdist carries, for its tests (see MANIFEST.in).
SDIST_TREES = ("tests", "docs", "examples")
SDIST_FILES = ("LICENSE", "README.md", "CHANGES.rst", "pyproject.toml", "PKG-INFO")
#: Never shipped: build output, caches, virtualenvs.
JUNK = ("__pycache__", ".pyc", ".venv/", "docs/_build/", ".pytest_cache", ".mypy_cache")


def version() -> str:
    """``__version__`` as ``aiohttp_wsapp/__init__.py`` assigns it."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise SystemExit(f"no __version__ in {PACKAGE}/__init__.py")


def source_files(top: str) -> set[str]:
    """Every file under ``top`` in the source tree, as a relative path, caches left out."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / top).rglob("*")
        if path.is_file() and not any(junk in path.as_posix() for junk in JUNK)
    }


def check_wheel(wheel: Path, expected_version: str) -> list[str]:
    """Problems with the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"{PACKAGE}-{expected_version}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        license_path = f"{dist_info}/licenses/LICENSE"
        shipped_license = archive.read(license_path) if license_path in names else None
    problems = [f"wheel: no {name}" for name in sorted(source_files(PACKAGE) - names)]
    if f"{PACKAGE}/py.typed" not in names:
        problems.append("wheel: no py.typed")
    if shipped_license != (ROOT / "LICENSE").read_bytes():
        problems.append(f"wheel: {license_path} missing or not the repository's LICENSE")
    strays = [n for n in names if not n.startswith((f"{PACKAGE}/", f"{dist_info}/"))]
    problems += [f"wheel: stray file {name}" for name in sorted(strays)]
    if metadata["Version"] != expected_version:
        problems.append(f"wheel: version {metadata['Version']}, not {expected_version}")
    if metadata["License-Expression"] != "MIT":
        problems.append(f"wheel: License-Expression {metadata['License-Expression']!r}")
    if "LICENSE" not in (metadata.get_all("License-File") or []):
        problems.append("wheel: no License-File: LICENSE in METADATA")
    return problems


def check_sdist(sdist: Path, expected_version: str) -> list[str]:
    """Problems with the sdist."""
    prefix = f"{PACKAGE}-{expected_version}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    wanted = source_files(PACKAGE) | set(SDIST_FILES)
    for top in SDIST_TREES:
        wanted |= source_files(top)
    problems = [f"sdist: no {name}" for name in sorted(wanted - names)]
    problems += [f"sdist: junk {name}" for name in sorted(names) if any(j in name for j in JUNK)]
    return problems


def check_changes(expected_version: str) -> list[str]:
    """A problem if CHANGES.rst has no section for the version."""
    lines = (ROOT / "CHANGES.rst").read_text().splitlines()
    for title, underline in pairwise(lines):
        if title.split(" ")[0] == expected_version and set(underline) == {"="}:
            return []
    return [f"CHANGES.rst: no section for {expected_version} (a title '{expected_version} ...')"]


def main() -> int:
    """Check the archives in the directory given; print the verdict."""
    dist = Path(sys.argv[1])
    expected_version = version()
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    problems = check_wheel(wheels[0], expected_version)
    problems += check_sdist(sdists[0], expected_version) + check_changes(expected_version)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{wheels[0].name} and {sdists[0].name}: contents as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
