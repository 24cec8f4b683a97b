"""Hygiene of the Kubernetes manifests, checked on what `kubectl kustomize` renders.

Every overlay is rendered offline; the assertions are the deployment rules of
docs/deploy.md: probes, resources, restricted security context, labels, pinned images,
secrets only by reference, PDBs/HPAs, network policies, the write-behind shard count,
the data-store settings that keep money safe, and (when kubernetes-validate is installed)
the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest

from ._k8s import (
    K8S,
    REPO,
    SERVING_KINDS,
    WORKLOAD_KINDS,
    Doc,
    by_kind,
    config_value,
    containers,
    docs,
    env_value,
    find_prefixed,
    get,
    iter_env,
    matches,
    pod_spec,
    render,
)

GRPC_SERVICES = {"obol-wallet": 50051, "obol-pricing": 50052, "obol-costs": 50053}
SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "OBOL_API_KEYS", "OBOL_API_KEY"}
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|REDIS_URL)", re.I)
CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]*:[^/\s@]+@")
NAMESPACE = {"dev": "obol-dev", "prod": "obol"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
RECOMMENDED = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
BUILTIN_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
}


def workloads(objs: list[Doc]) -> list[Doc]:
    return by_kind(objs, *WORKLOAD_KINDS)


def name_of(obj: Doc) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def secret_data(secret: Doc) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


def hpa_for(objs: list[Doc], workload: Doc) -> Doc | None:
    for hpa in by_kind(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == workload["kind"] and ref["name"] == workload["metadata"]["name"]:
            return hpa
    return None


def replica_floor(objs: list[Doc], workload: Doc) -> int:
    hpa = hpa_for(objs, workload)
    if hpa is not None:
        return int(hpa["spec"].get("minReplicas", 1))
    return int(workload["spec"].get("replicas", 1))


# ------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("path", ["base", "overlays/dev", "overlays/prod"])
def test_kustomization_renders(kubectl: str, path: str) -> None:
    out = render(kubectl, str(K8S / path))
    assert "kind: Deployment" in out


def test_base_is_namespace_agnostic_and_secret_free(base: list[Doc]) -> None:
    assert not by_kind(base, "Namespace")
    assert not by_kind(base, "Secret"), "the base must not define secrets"
    for obj in base:
        assert "namespace" not in obj["metadata"], f"{name_of(obj)} pins a namespace"


def test_base_leaves_the_image_to_the_overlays(base: list[Doc]) -> None:
    for workload in workloads(base):
        for container in containers(workload):
            assert container["image"] == "obol", name_of(workload)


def test_every_manifest_file_is_referenced() -> None:
    """No orphan YAML: each file is named by the kustomization.yaml next to it."""
    orphans = []
    for path in sorted(K8S.rglob("*")):
        if path.suffix not in {".yaml", ".yml", ".env"} or path.name == "kustomization.yaml":
            continue
        kustomization = path.parent / "kustomization.yaml"
        rel = path.name
        if not kustomization.exists():  # e.g. overlays/x/patches/*.yaml
            kustomization = path.parent.parent / "kustomization.yaml"
            rel = f"{path.parent.name}/{path.name}"
        if not kustomization.exists() or rel not in kustomization.read_text():
            orphans.append(str(path.relative_to(REPO)))
    assert not orphans, f"files no kustomization.yaml references: {orphans}"


# ----------------------------------------------------------------------- per-overlay rules


def test_everything_lands_in_the_overlay_namespace(overlay: tuple[str, list[Doc]]) -> None:
    name, objs = overlay
    namespaces = by_kind(objs, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE[name]]
    for obj in objs:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE[name], name_of(obj)


def test_names_are_unique_per_kind(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    seen = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(seen) == len(set(seen))


def test_expected_workloads(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    found = {name_of(w) for w in workloads(objs)}
    assert found == {
        "Deployment/obol-wallet",
        "Deployment/obol-pricing",
        "Deployment/obol-costs",
        "Deployment/obol-portal-bff",
        "StatefulSet/obol-wallet-writebehind",
        "Job/obol-migrate",
    }


def test_recommended_labels(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for obj in objs:
        if obj["kind"] in {"Namespace", "Secret", "ConfigMap", "ExternalSecret"}:
            continue
        labels = obj["metadata"].get("labels", {})
        for key in RECOMMENDED:
            assert labels.get(key), f"{name_of(obj)} lacks label {key}"
        assert labels["app.kubernetes.io/part-of"] == "obol", name_of(obj)
    for workload in workloads(objs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for key in RECOMMENDED:
            assert labels.get(key), f"pods of {name_of(workload)} lack label {key}"
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if workload["kind"] != "Job":
            assert selector and matches(selector, labels), name_of(workload)


def test_pod_security_restricted(overlay: tuple[str, list[Doc]]) -> None:
    """Every Obol pod meets the `restricted` Pod Security Standard, and more."""
    _, objs = overlay
    for workload in workloads(objs):
        spec = pod_spec(workload)
        where = name_of(workload)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("runAsUser", 0) > 0, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec.get("enableServiceLinks") is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        for container in containers(workload):
            sc = container.get("securityContext", {})
            cwhere = f"{where} container {container['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, cwhere
            assert sc.get("readOnlyRootFilesystem") is True, cwhere
            assert sc.get("privileged", False) is False, cwhere
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cwhere
            assert not sc.get("capabilities", {}).get("add"), cwhere
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, cwhere
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{cwhere}: read-only root needs a writable /tmp"


def test_service_accounts(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind(objs, "ServiceAccount")}
    for workload in workloads(objs):
        sa_name = pod_spec(workload).get("serviceAccountName")
        assert sa_name and sa_name != "default", name_of(workload)
        assert sa_name in accounts, f"{name_of(workload)} uses missing SA {sa_name}"
    for sa in accounts.values():
        assert sa.get("automountServiceAccountToken") is False, name_of(sa)


def test_resources(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for workload in workloads(objs):
        for container in containers(workload):
            res = container.get("resources", {})
            where = f"{name_of(workload)} container {container['name']}"
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert res.get(kind, {}).get(resource), f"{where}: no {kind}.{resource}"


def test_images_pinned(overlay: tuple[str, list[Doc]]) -> None:
    name, objs = overlay
    images = {c["image"] for w in workloads(objs) for c in containers(w)}
    assert len(images) == 1, f"one image for every workload, got {images}"
    image = images.pop()
    if name == "prod":
        assert DIGEST.search(image), f"prod image not pinned by digest: {image}"
    else:
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"dev image not pinned to a tag: {image}"
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        assert tag == version, f"dev image tag {tag} is not the project version {version}"
    for workload in workloads(objs):
        for container in containers(workload):
            assert container.get("imagePullPolicy") == "IfNotPresent", name_of(workload)


def test_operator_images_pinned(dev: list[Doc]) -> None:
    images = [
        get(dev, "Cluster", "obol-pg")["spec"]["imageName"],
        get(dev, "RedisCluster", "obol-redis")["spec"]["kubernetesConfig"]["image"],
        get(dev, "OpenTelemetryCollector", "otel")["spec"]["image"],
    ]
    for image in images:
        _, _, tag = image.rpartition(":")
        assert re.match(r"v?\d", tag), f"not pinned to a version: {image}"


def test_probes(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for workload in by_kind(objs, *SERVING_KINDS):
        for container in pod_spec(workload)["containers"]:
            where = f"{name_of(workload)} container {container['name']}"
            ports = {p["containerPort"] for p in container.get("ports", [])}
            names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where}: no {probe}"
            readiness, liveness = container["readinessProbe"], container["livenessProbe"]
            if "grpc" in readiness:
                # Native gRPC probes on grpc.health.v1: "readiness" (NOT_SERVING while
                # Postgres/Redis are unreachable) vs "" (process alive).
                assert readiness["grpc"]["service"] == "readiness", where
                assert liveness["grpc"].get("service", "") == "", where
                assert readiness["grpc"]["port"] in ports, where
                assert liveness["grpc"]["port"] in ports, where
            else:
                assert readiness["httpGet"]["path"] == "/readyz", where
                assert liveness["httpGet"]["path"] == "/healthz", where
                assert readiness["httpGet"]["port"] in names, where


def test_grpc_services_probe_their_own_port(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for name, port in GRPC_SERVICES.items():
        container = pod_spec(get(objs, "Deployment", name))["containers"][0]
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": "readiness"}
        env_port = name.removeprefix("obol-").upper()
        assert env_value(container, f"OBOL_{env_port}_PORT") == str(port)


def test_graceful_shutdown_budget(overlay: tuple[str, list[Doc]]) -> None:
    """terminationGracePeriodSeconds > preStop sleep + the app's own drain grace."""
    _, objs = overlay
    grace = int(config_value(objs, "OBOL_SHUTDOWN_GRACE_SECONDS"))
    for workload in by_kind(objs, *SERVING_KINDS):
        spec = pod_spec(workload)
        budget = spec.get("terminationGracePeriodSeconds", 30)
        for container in spec["containers"]:
            sleep = 0
            pre_stop = container.get("lifecycle", {}).get("preStop")
            if pre_stop:
                if "sleep" in pre_stop:
                    sleep = int(pre_stop["sleep"]["seconds"])
                else:
                    command = pre_stop["exec"]["command"]
                    assert command[0] == "sleep", name_of(workload)
                    sleep = int(command[1])
            elif workload["kind"] == "Deployment":
                pytest.fail(f"{name_of(workload)} has no preStop sleep")
            assert budget > sleep + grace, (
                f"{name_of(workload)}: grace period {budget}s <= preStop {sleep}s + drain {grace}s"
            )


def test_secrets_only_by_reference(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for workload in workloads(objs):
        for container in containers(workload):
            where = f"{name_of(workload)} container {container['name']}"
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{where}: envFrom a whole Secret"
            for entry in iter_env(container):
                if SECRETISH.search(entry["name"]):
                    assert "value" not in entry, f"{where}: {entry['name']} inlined"
                    assert "secretKeyRef" in entry.get("valueFrom", {}), where
                value = str(entry.get("value", ""))
                assert not CREDENTIAL_IN_URL.search(value), f"{where}: credentials in env"
    for config in by_kind(objs, "ConfigMap"):
        for key, value in config.get("data", {}).items():
            assert not SECRETISH.search(key), f"{name_of(config)} holds {key}"
            assert not CREDENTIAL_IN_URL.search(str(value)), f"{name_of(config)}:{key}"


def test_least_privilege_secret_keys(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay

    def keys(kind: str, name: str) -> set[str]:
        container = containers(get(objs, kind, name))[0]
        return {e["name"] for e in iter_env(container) if "secretKeyRef" in e.get("valueFrom", {})}

    all_keys = set(SECRET_ENV)
    assert keys("Deployment", "obol-wallet") == all_keys
    assert keys("Deployment", "obol-pricing") == all_keys - {"REDIS_URL"}
    assert keys("Deployment", "obol-costs") == all_keys - {"REDIS_URL"}
    assert keys("Deployment", "obol-portal-bff") == {"OBOL_API_KEYS", "OBOL_API_KEY"}
    assert keys("StatefulSet", "obol-wallet-writebehind") == {"DATABASE_URL", "REDIS_URL"}
    assert keys("Job", "obol-migrate") == {"DATABASE_URL"}


def test_references_resolve(overlay: tuple[str, list[Doc]]) -> None:
    """Every Secret/ConfigMap a pod names exists (dev) or is produced (prod)."""
    name, objs = overlay
    secrets = {s["metadata"]["name"]: secret_data(s) for s in by_kind(objs, "Secret")}
    external = {
        es["spec"]["target"]["name"]: {d["secretKey"] for d in es["spec"]["data"]}
        for es in by_kind(objs, "ExternalSecret")
    }
    configmaps = {c["metadata"]["name"] for c in by_kind(objs, "ConfigMap")}
    for workload in workloads(objs):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                ref = source["configMapRef"]["name"]
                assert ref in configmaps, f"{name_of(workload)} -> missing ConfigMap {ref}"
            for entry in iter_env(container):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if name == "dev":
                    assert ref["name"] in secrets, f"missing Secret {ref['name']}"
                    assert ref["key"] in secrets[ref["name"]], f"{ref['name']} lacks {ref['key']}"
                else:
                    assert ref["name"] == "obol-secrets"
                    assert ref["key"] in external["obol-secrets"], ref


def test_services_select_pods_and_ports(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    pods = [
        (w["spec"]["template"]["metadata"]["labels"], pod_spec(w))
        for w in by_kind(objs, *SERVING_KINDS)
    ]
    for service in by_kind(objs, "Service"):
        selector = service["spec"]["selector"]
        targets = [spec for labels, spec in pods if matches(selector, labels)]
        assert targets, f"{name_of(service)} selects no pods"
        for port in service["spec"]["ports"]:
            named = {p["name"] for spec in targets for c in spec["containers"] for p in c["ports"]}
            assert port["targetPort"] in named, f"{name_of(service)} targetPort {port}"
            assert port.get("appProtocol"), f"{name_of(service)} port without appProtocol"


def test_grpc_services_have_clusterip_and_headless(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    for name, port in GRPC_SERVICES.items():
        vip = get(objs, "Service", name)
        headless = get(objs, "Service", f"{name}-headless")
        assert vip["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert vip["spec"].get("clusterIP") != "None"
        assert headless["spec"]["clusterIP"] == "None"
        for service in (vip, headless):
            assert service["spec"]["ports"] == [
                {
                    "name": "grpc",
                    "port": port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ]
        target = name.removeprefix("obol-").upper()
        assert config_value(objs, f"OBOL_{target}_TARGET") == f"{name}-headless:{port}"


def test_network_policies_cover_every_pod(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    policies = by_kind(objs, "NetworkPolicy")
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)]
    for workload, labels in zip(workloads(objs), pod_labels, strict=True):
        covering = [
            p
            for p in policies
            if "Ingress" in p["spec"]["policyTypes"]
            and matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        ]
        assert covering, f"no ingress NetworkPolicy selects {name_of(workload)}"
        assert p_not_open_to_all(covering) or labels["app.kubernetes.io/name"] == "portal-bff"
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                selector = peer.get("podSelector", {}).get("matchLabels", {})
                if "namespaceSelector" in peer:
                    assert selector == {"obol.dev/api-client": "true"}, name_of(policy)
                else:  # an in-namespace peer must be one of ours
                    assert any(matches(selector, labels) for labels in pod_labels), (
                        f"{name_of(policy)} allows a peer that matches no Obol pod: {selector}"
                    )


def p_not_open_to_all(policies: list[Doc]) -> bool:
    """True unless some rule admits every source (a rule with no `from`)."""
    return all("from" in rule for p in policies for rule in p["spec"].get("ingress", []))


def test_wallet_callers(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    policy = get(objs, "NetworkPolicy", "obol-wallet")
    [rule] = policy["spec"]["ingress"]
    callers = {
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for peer in rule["from"]
        if "namespaceSelector" not in peer
    }
    assert callers == {"portal-bff", "pricing"}
    assert rule["ports"] == [{"port": 50051, "protocol": "TCP"}]


def test_pdbs(overlay: tuple[str, list[Doc]]) -> None:
    name, objs = overlay
    pdbs = by_kind(objs, "PodDisruptionBudget")
    for workload in by_kind(objs, *SERVING_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        [pdb] = [p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels)]
        spec = pdb["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec), name_of(pdb)
        if name == "prod":
            floor = replica_floor(objs, workload)
            assert "minAvailable" in spec, name_of(pdb)
            assert 1 <= int(spec["minAvailable"]) < floor, (
                f"{name_of(pdb)}: minAvailable {spec['minAvailable']} blocks drains (floor {floor})"
            )
        else:
            assert spec.get("maxUnavailable") == 1, name_of(pdb)


def test_hpas(overlay: tuple[str, list[Doc]]) -> None:
    name, objs = overlay
    hpas = {h["metadata"]["name"]: h for h in by_kind(objs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"obol-wallet", "obol-portal-bff"}
    for hpa_name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        target = get(objs, ref["kind"], ref["name"])
        assert "replicas" not in target["spec"], f"{hpa_name}: HPA target sets replicas"
        low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
        assert 1 <= low <= high
        if name == "dev":
            assert low == 1
        else:
            assert low >= 3 and high > low
        for metric in hpa["spec"]["metrics"]:
            resource = metric["resource"]["name"]
            for container in pod_spec(target)["containers"]:
                assert container["resources"]["requests"].get(resource), hpa_name


def test_dev_runs_one_of_each(dev: list[Doc]) -> None:
    for workload in by_kind(dev, *SERVING_KINDS):
        hpa = hpa_for(dev, workload)
        count = hpa["spec"]["minReplicas"] if hpa else workload["spec"]["replicas"]
        assert count == 1, name_of(workload)


def test_prod_runs_more(prod: list[Doc], dev: list[Doc]) -> None:
    for workload in by_kind(prod, *SERVING_KINDS):
        assert replica_floor(prod, workload) >= 3, name_of(workload)
        twin = get(dev, workload["kind"], workload["metadata"]["name"])
        prod_cpu = containers(workload)[0]["resources"]["requests"]["cpu"]
        dev_cpu = containers(twin)[0]["resources"]["requests"]["cpu"]
        assert prod_cpu != dev_cpu, f"{name_of(workload)}: prod uses dev-sized resources"


def test_wallet_spread(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    wallet = get(objs, "Deployment", "obol-wallet")
    constraints = pod_spec(wallet)["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    labels = wallet["spec"]["template"]["metadata"]["labels"]
    for constraint in constraints:
        assert matches(constraint["labelSelector"]["matchLabels"], labels)


def test_writebehind_shards_match_replicas(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    worker = get(objs, "StatefulSet", "obol-wallet-writebehind")
    container = pod_spec(worker)["containers"][0]
    assert env_value(container, "OBOL_WRITEBEHIND_SHARDS") == str(worker["spec"]["replicas"])
    assert env_value(container, "OBOL_WRITEBEHIND_CONSUMER") == "$(POD_NAME)"
    assert worker["spec"]["podManagementPolicy"] == "Parallel"
    assert container["command"] == ["python", "-m", "obol_wallet.writebehind"]


def test_commands(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    expected = {
        "obol-wallet": ["python", "-m", "obol_wallet"],
        "obol-pricing": ["python", "-m", "obol_pricing"],
        "obol-costs": ["python", "-m", "obol_costs"],
        "obol-portal-bff": ["python", "-m", "obol_portal"],
    }
    for name, command in expected.items():
        assert pod_spec(get(objs, "Deployment", name))["containers"][0]["command"] == command


def test_migration_job(overlay: tuple[str, list[Doc]]) -> None:
    _, objs = overlay
    job = get(objs, "Job", "obol-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/sync-wave"] == "-1"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["command"] == ["obol", "migrate"]
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"].get("activeDeadlineSeconds")


def wave(obj: Doc) -> int:
    annotations = obj["metadata"].get("annotations", {})
    return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))


def test_argo_cd_order(overlay: tuple[str, list[Doc]]) -> None:
    """Namespace < config, secrets, data stores < migration hook < workloads."""
    name, objs = overlay
    job = get(objs, "Job", "obol-migrate")
    assert wave(job) == -1
    [namespace] = by_kind(objs, "Namespace")
    needs = [get(objs, "ServiceAccount", pod_spec(job)["serviceAccountName"])]
    needs += by_kind(objs, "Cluster", "RedisCluster", "ExternalSecret")
    container = containers(job)[0]
    needs += [get(objs, "ConfigMap", s["configMapRef"]["name"]) for s in container["envFrom"]]
    if name == "dev":
        needs += by_kind(objs, "Secret")
        needs += [get(objs, "ConfigMap", "obol-redis-config")]
    for obj in needs:
        assert wave(namespace) < wave(obj) < wave(job), f"{name_of(obj)} wave {wave(obj)}"
    for workload in by_kind(objs, *SERVING_KINDS):
        assert wave(workload) > wave(job), name_of(workload)


def test_telemetry_endpoint(overlay: tuple[str, list[Doc]]) -> None:
    name, objs = overlay
    endpoint = urlsplit(config_value(objs, "OTEL_EXPORTER_OTLP_ENDPOINT"))
    assert endpoint.scheme == "http" and endpoint.port == 4317
    assert endpoint.hostname and endpoint.hostname.split(".")[0] == "otel-collector"
    assert config_value(objs, "OBOL_LOG_FORMAT") == "json"
    if name == "dev":
        # The OpenTelemetry Operator names the Service of collector `otel` otel-collector.
        collector = get(objs, "OpenTelemetryCollector", "otel")
        assert collector["apiVersion"] == "opentelemetry.io/v1beta1"
        receivers = collector["spec"]["config"]["receivers"]["otlp"]["protocols"]
        assert receivers["grpc"]["endpoint"].endswith(":4317")
    for workload in workloads(objs):
        container = containers(workload)[0]
        assert env_value(container, "OTEL_SERVICE_NAME") == workload["metadata"]["name"]


# --------------------------------------------------------------------------- data stores


def test_prod_services_run_without_ddl_rights(prod: list[Doc], dev: list[Doc]) -> None:
    """Prod: the migration Job migrates as the owner and grants the runtime role; every
    other workload connects as that role and only verifies. Dev keeps one owner role."""

    def database_key(container: Doc) -> str | None:
        for entry in iter_env(container):
            if entry["name"] == "DATABASE_URL":
                return str(entry["valueFrom"]["secretKeyRef"]["key"])
        return None

    assert config_value(prod, "OBOL_MIGRATIONS") == "verify"
    migrate = containers(get(prod, "Job", "obol-migrate"))[0]
    assert database_key(migrate) == "DATABASE_URL_OWNER"
    assert env_value(migrate, "OBOL_RUNTIME_ROLE") == "obol_runtime"
    others = [w for w in workloads(prod) if w["kind"] != "Job"]
    keys = {database_key(c) for w in others for c in containers(w)} - {None}
    assert keys == {"DATABASE_URL"}

    dev_config = find_prefixed(dev, "ConfigMap", "obol-config")["data"]
    assert dev_config.get("OBOL_MIGRATIONS", "apply") == "apply"
    assert database_key(containers(get(dev, "Job", "obol-migrate"))[0]) == "DATABASE_URL"


def test_prod_leaves_data_stores_out(prod: list[Doc]) -> None:
    for kind in ("Cluster", "RedisCluster", "Secret", "OpenTelemetryCollector"):
        assert not by_kind(prod, kind), f"prod renders a {kind}"
    secret = get(prod, "ExternalSecret", "obol-secrets")
    assert secret["spec"]["target"]["name"] == "obol-secrets"
    # The owner's URL too, for the migration Job alone (services run without DDL rights).
    assert {d["secretKey"] for d in secret["spec"]["data"]} == SECRET_ENV | {"DATABASE_URL_OWNER"}
    namespace = get(prod, "Namespace", "obol")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_dev_postgres(dev: list[Doc]) -> None:
    cluster = get(dev, "Cluster", "obol-pg")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 1
    assert "synchronous" not in spec["postgresql"], "one instance cannot wait for a standby"
    assert spec["storage"]["size"]
    initdb = spec["bootstrap"]["initdb"]
    owner = get(dev, "Secret", initdb["secret"]["name"])
    assert owner["type"] == "kubernetes.io/basic-auth"
    creds = secret_data(owner)
    assert creds["username"] == initdb["owner"]
    url = urlsplit(secret_data(find_prefixed(dev, "Secret", "obol-secrets"))["DATABASE_URL"])
    assert url.scheme in {"postgresql", "postgres"}
    assert (url.username, url.password) == (creds["username"], creds["password"])
    assert url.hostname == "obol-pg-rw" and url.path == f"/{initdb['database']}"


def test_data_component_defaults_are_durable(kubectl: str, tmp_path: Path) -> None:
    """The component as-is (what a prod that opts in gets): replicated, durable, no eviction."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        # kustomize refuses absolute paths here; a relative one may leave the root.
        f"components:\n  - {os.path.relpath(K8S / 'data', tmp_path)}\n"
    )
    objs = docs(kubectl, str(tmp_path))
    postgres = get(objs, "Cluster", "obol-pg")["spec"]
    assert postgres["instances"] >= 3
    assert postgres["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert postgres["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert postgres["enableSuperuserAccess"] is False
    redis = get(objs, "RedisCluster", "obol-redis")["spec"]
    assert redis["clusterSize"] >= 3 and redis["persistenceEnabled"] is True
    config = get(objs, "ConfigMap", "obol-redis-config")["data"]["redis-additional.conf"]
    lines = {line.strip() for line in config.splitlines()}
    assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction"} <= lines
    [maxmemory] = re.findall(r"^maxmemory (\d+)gb$", config, re.M)
    limit = redis["kubernetesConfig"]["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and int(maxmemory) < int(limit.removesuffix("Gi"))


def test_store_tls_component_mounts_the_ca_wherever_the_stores_are_reached(
    kubectl: str, tmp_path: Path
) -> None:
    """With components/store-tls, every container given DATABASE_URL or REDIS_URL finds the
    CA at /etc/obol/tls/ca.pem (read-only, from ConfigMap obol-store-ca); no other does."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'base', tmp_path)}\n"
        f"components:\n  - {os.path.relpath(K8S / 'components' / 'store-tls', tmp_path)}\n"
    )
    reaching = set()
    for workload in workloads(docs(kubectl, str(tmp_path))):
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        for container in containers(workload):
            env = {e["name"] for e in iter_env(container)}
            mounts = [m for m in container.get("volumeMounts", []) if m["name"] == "store-ca"]
            if not env & {"DATABASE_URL", "REDIS_URL"}:
                assert not mounts, f"{name_of(workload)} mounts a CA it has no use for"
                continue
            reaching.add(workload["metadata"]["name"])
            assert mounts == [
                {"name": "store-ca", "mountPath": "/etc/obol/tls", "readOnly": True}
            ], name_of(workload)
            source = volumes["store-ca"]["configMap"]
            assert source["name"] == "obol-store-ca"
            assert source["items"] == [{"key": "ca.pem", "path": "ca.pem"}]
    assert reaching == {
        "obol-wallet",
        "obol-wallet-writebehind",
        "obol-pricing",
        "obol-costs",
        "obol-migrate",
    }


def test_dev_redis_cluster(dev: list[Doc]) -> None:
    redis = get(dev, "RedisCluster", "obol-redis")
    assert redis["apiVersion"] == "redis.redis.opstreelabs.in/v1beta2"
    spec = redis["spec"]
    assert spec["clusterSize"] >= 3, "Redis Cluster needs at least three leaders"
    assert spec["persistenceEnabled"] is True
    assert spec["storage"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    assert spec["storage"]["nodeConfVolume"] is True
    for role in ("redisLeader", "redisFollower"):
        config_name = spec[role]["redisConfig"]["additionalRedisConfig"]
        config = get(dev, "ConfigMap", config_name)["data"]["redis-additional.conf"]
        lines = {line.strip() for line in config.splitlines()}
        assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction"} <= lines
    auth = spec["kubernetesConfig"]["redisSecret"]
    password = secret_data(get(dev, "Secret", auth["name"]))[auth["key"]]
    url = urlsplit(secret_data(find_prefixed(dev, "Secret", "obol-secrets"))["REDIS_URL"])
    assert url.scheme == "redis+cluster", "cluster mode is selected by the URL scheme"
    assert url.password == password
    assert url.hostname == "obol-redis-leader" and url.port == 6379


def test_redis_maxmemory_below_limit(dev: list[Doc]) -> None:
    redis = get(dev, "RedisCluster", "obol-redis")
    limit = redis["spec"]["kubernetesConfig"]["resources"]["limits"]["memory"]
    config = get(dev, "ConfigMap", "obol-redis-config")["data"]["redis-additional.conf"]
    [maxmemory] = re.findall(r"^maxmemory (\d+)mb$", config, re.M)
    limit_mib = int(limit.removesuffix("Mi")) if limit.endswith("Mi") else int(limit[:-2]) * 1024
    assert int(maxmemory) < limit_mib * 0.8


def test_dev_secrets_are_placeholders(dev: list[Doc]) -> None:
    for secret in by_kind(dev, "Secret"):
        for key, value in secret_data(secret).items():
            if key in {"username", "OBOL_API_KEYS"}:
                continue
            assert "NOT-A-SECRET" in value, f"{name_of(secret)}:{key} is not an obvious fake"
    data = secret_data(find_prefixed(dev, "Secret", "obol-secrets"))
    entries = data["OBOL_API_KEYS"].split(",")
    for entry in entries:
        assert re.fullmatch(r"[\w.-]+:(admin|ingest|read):[0-9a-f]{64}", entry), entry
    service_hash = hashlib.sha256(data["OBOL_API_KEY"].encode()).hexdigest()
    assert any(e.endswith(":" + service_hash) for e in entries), (
        "the service-to-service key must be one of the accepted keys"
    )


# ------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_kubernetes_schemas(kubectl: str, version: str) -> None:
    """Built-in kinds against the OpenAPI schemas (strict: unknown fields fail)."""
    for overlay_name in ("dev", "prod"):
        for obj in docs(kubectl, str(K8S / "overlays" / overlay_name)):
            if obj["apiVersion"] not in BUILTIN_GROUPS:
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                message = error.message[:300]
                pytest.fail(f"{overlay_name} {name_of(obj)} at {path}: {message}", pytrace=False)


def test_rollout_script_parses() -> None:
    import subprocess

    script = K8S / "rollout.sh"
    assert script.stat().st_mode & 0o111, "rollout.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_docs_exist() -> None:
    doc = Path(REPO / "docs" / "deploy.md")
    assert doc.exists()
    text = doc.read_text()
    for needle in ("kubectl apply -k deploy/k8s/overlays/dev", "CloudNativePG", "obol-secrets"):
        assert needle in text
