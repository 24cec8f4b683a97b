"""The Dockerfile, checked without a Docker engine.

Static checks of deploy/docker/Dockerfile (base image, non-root user matching the
manifests, how the project is installed, every COPY source present), and a real
`pip wheel` of the project compared with the source tree: what a regular
`pip install .` (the image's install) would leave behind.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from ._k8s import DEPLOY, K8S, REPO

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
IGNOREFILE = DEPLOY / "docker" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined: list[str] = []
    buffer = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        joined.append(buffer + line)
        buffer = ""
    result = []
    for line in joined:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def test_base_image_is_python_311_slim() -> None:
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_runtime_user_is_numeric_non_root_and_matches_manifests() -> None:
    runtime = stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric UID, so runAsNonRoot can verify it"
    manifests = "\n".join(p.read_text() for p in (K8S / "base").glob("*.yaml"))
    uids = set(re.findall(r"runAsUser: (\d+)", manifests))
    assert uids == {uid}, f"manifests run as {uids}, the image as {uid}"
    assert gid == uid


def test_installs_with_constraints_and_generates_stubs() -> None:
    build = " ; ".join(rest for word, rest in stages()[0] if word == "RUN")
    assert re.search(r"pip install [^;]*-c constraints\.txt \.(\s|$)", build)
    assert "python tools/gen_protos.py" in build
    assert "check_install.py" in build
    runtime = stages()[-1]
    assert any(
        word == "COPY" and rest.startswith("--from=build /opt/obol") for word, rest in runtime
    )
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "read-only root filesystem: no .pyc writes"


def test_copy_sources_exist_and_are_in_the_context() -> None:
    ignore = IGNOREFILE.read_text()
    for word, rest in instructions():
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repo"
            top = source.rstrip("/")
            assert f"!{top}" in ignore, f"{source} is excluded by Dockerfile.dockerignore"


def test_gen_protos_plugins_are_pinned() -> None:
    """gen_protos.py calls protoc-gen-mypy: the build installs mypy-protobuf, pinned."""
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^mypy-protobuf==", constraints, re.M)
    assert "mypy-protobuf" in DOCKERFILE.read_text()


def _load_check_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "obol_check_install", DEPLOY / "docker" / "check_install.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_regular_install_carries_every_project_file(tmp_path: Path) -> None:
    """Build the wheel `pip install .` would install and compare it with the sources."""
    check = _load_check_install()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, src / name)
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    for folder in {Path(f).parts[0] for f in package_dirs.values()}:
        shutil.copytree(
            REPO / folder,
            src / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"could not build the wheel: {result.stderr[-500:]}"
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = sorted(check.expected_files(src) - shipped)
    assert not missing, (
        f"a regular `pip install .` (the image) would lack {missing}; declare data files in "
        "[tool.setuptools.package-data] and subpackages in [tool.setuptools] packages"
    )
