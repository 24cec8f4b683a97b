"""Fail the image build when `pip install .` left part of the project behind.

The dev setup installs the project editable (`pip install -e .`), which maps whole source
folders, so a subpackage or data file (SQL migrations, templates, static assets) that
pyproject.toml does not declare still works there - and is silently missing from a
regular install such as the image's. This compares every file under each package folder
of `[tool.setuptools.package-dir]` with what got installed.

    python deploy/docker/check_install.py [SOURCE_ROOT]

tests/deploy uses `expected_files` on a built wheel, so the same gap shows up in
`make test` without Docker.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

IGNORED_DIRS = {"__pycache__"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}


def package_dirs(root: Path) -> dict[str, Path]:
    """Top-level import name -> source folder, from pyproject.toml."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items() if name}


def expected_files(root: Path) -> set[str]:
    """Every file an install must carry, as `package/relative/path` (POSIX)."""
    files: set[str] = set()
    for name, folder in package_dirs(root).items():
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if path.is_dir() or IGNORED_DIRS.intersection(rel.parts):
                continue
            if path.suffix in IGNORED_SUFFIXES:
                continue
            files.add(f"{name}/{rel.as_posix()}")
    return files


def missing_from_install(root: Path) -> list[str]:
    missing = []
    for entry in sorted(expected_files(root)):
        package, _, rel = entry.partition("/")
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not any((Path(location) / rel).is_file() for location in locations):
            missing.append(entry)
    return missing


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    missing = missing_from_install(root)
    if missing:
        sys.exit(
            "the installed project lacks files that the source tree has (declare them in "
            "pyproject.toml: subpackages in [tool.setuptools] packages, data files in "
            "[tool.setuptools.package-data]):\n  " + "\n  ".join(missing)
        )
    print(f"install complete: {len(expected_files(root))} project files present")


if __name__ == "__main__":
    main()
