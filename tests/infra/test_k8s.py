"""infra/k8s: each overlay rendered by real kustomize, core resources validated with
kubernetes-validate (strict), the RayCluster against KubeRay's own CRD schema, and the wiring
between objects (selectors, references, capacity) that no schema sees."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.infra._manifests import OVERLAYS, ROOT, by_kind, is_moeplane_image, pod_specs, render

# KubeRay's CRDs as data, in shared/ beside the repository (see its README)
KUBERAY = ROOT.parent / "shared" / "schemas" / "kuberay"
# the oldest Kubernetes we support and the newest the validator knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
TARGETS = ("base", *OVERLAYS)


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (the API server prunes them silently, so a
    misspelt field would otherwise pass and do nothing)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _crd_validator(kind: str) -> jsonschema.protocols.Validator:
    if not KUBERAY.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY}")
    for path in KUBERAY.glob("ray.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            schema = _strict(version["schema"]["openAPIV3Schema"])
            return jsonschema.Draft7Validator(schema)
    raise AssertionError(f"no CRD for {kind} in {KUBERAY}")


def _is_kuberay(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith("ray.io/")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_are_valid_kubernetes(target: str, version: str):
    """Strict: an unknown (misspelt) field fails, as with `kubectl apply --validate=strict`."""
    docs = [d for d in render(target) if not _is_kuberay(d)]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


@pytest.mark.parametrize("target", TARGETS)
def test_rayclusters_match_kuberay_crd_schema(target: str):
    clusters = [d for d in render(target) if _is_kuberay(d)]
    assert [d["kind"] for d in clusters] == ["RayCluster"]
    validator = _crd_validator("RayCluster")
    for doc in clusters:
        assert doc["apiVersion"] == "ray.io/v1"
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        assert errors == []


def test_crd_validation_catches_a_misspelt_field():
    cluster = copy.deepcopy(by_kind(render("prod"), "RayCluster")["moeplane"])
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not _crd_validator("RayCluster").is_valid(cluster)
    cluster = copy.deepcopy(by_kind(render("prod"), "RayCluster")["moeplane"])
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    assert not _crd_validator("RayCluster").is_valid(cluster)


@pytest.mark.parametrize("target", TARGETS)
def test_raycluster_autoscales_head_cpu_and_gpu_groups(target: str):
    import ray

    cluster = by_kind(render(target), "RayCluster")["moeplane"]["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == ray.__version__, "the image's Ray and the cluster's differ"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] or group["maxReplicas"] == 0
        assert group["minReplicas"] <= group["maxReplicas"]
    (gpu_container,) = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "cuda" in gpu_container["image"]
    (cpu_container,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "cuda" not in cpu_container["image"]
    # Ray token auth on every node and in the autoscaler
    for container in (
        *cluster["headGroupSpec"]["template"]["spec"]["containers"],
        gpu_container,
        cpu_container,
    ):
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env
    assert {e["name"] for e in cluster["autoscalerOptions"]["env"]} >= {"RAY_AUTH_TOKEN"}


def _ray_capacity(cluster: dict[str, Any]) -> tuple[float, float]:
    cpus = gpus = 0.0
    for group in cluster["spec"]["workerGroupSpecs"]:
        params = group["rayStartParams"]
        cpus += group["maxReplicas"] * float(params.get("num-cpus", 0))
        gpus += group["maxReplicas"] * float(params.get("num-gpus", 0))
    return cpus, gpus


@pytest.mark.parametrize("target", TARGETS)
def test_training_capacity_fits_the_ray_worker_groups(target: str):
    docs = render(target)
    config = by_kind(docs, "ConfigMap")["moeplane-config"]["data"]
    cpus, gpus = _ray_capacity(by_kind(docs, "RayCluster")["moeplane"])
    assert 0 < float(config["MOEPLANE_TRAINING_CPUS"]) <= cpus
    assert float(config["MOEPLANE_TRAINING_GPUS"]) <= gpus
    assert float(config["MOEPLANE_TRAINING_CPUS_PER_WORKER"]) <= float(
        config["MOEPLANE_TRAINING_CPUS"]
    )


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("target", TARGETS)
def test_api_deployment_service_hpa_ingress_and_pdb_are_wired(target: str):
    docs = render(target)
    deployment = by_kind(docs, "Deployment")["moeplane-api"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["moeplane", "api"]
    port_names = {p["name"] for p in container["ports"]}
    assert {container["readinessProbe"]["httpGet"]["path"]} == {"/readyz"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    service = by_kind(docs, "Service")["moeplane-api"]
    assert _labels_match(service["spec"]["selector"], pod_labels)
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names

    hpa = by_kind(docs, "HorizontalPodAutoscaler")["moeplane-api"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "moeplane-api",
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"

    ingress = by_kind(docs, "Ingress")["moeplane-api"]
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert backends and all(
        b["name"] == "moeplane-api" and b["port"]["name"] in service_ports for b in backends
    )
    pdb = by_kind(docs, "PodDisruptionBudget")["moeplane-api"]["spec"]
    assert _labels_match(pdb["selector"]["matchLabels"], pod_labels)
    assert pdb["minAvailable"] < hpa["minReplicas"], "the PDB would block every node drain"


@pytest.mark.parametrize("target", TARGETS)
def test_worker_beat_and_migration_job(target: str):
    docs = render(target)
    deployments = by_kind(docs, "Deployment")
    worker, beat = deployments["moeplane-worker"], deployments["moeplane-beat"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "moeplane",
        "worker",
    ]
    assert beat["spec"]["template"]["spec"]["containers"][0]["command"] == ["moeplane", "beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    job = by_kind(docs, "Job")["moeplane-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "moeplane db upgrade" in " ".join(container["command"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("target", TARGETS)
def test_every_reference_resolves(target: str):
    """ConfigMaps, Secrets (and their keys) and claims named by pods exist in the render."""
    docs = render(target)
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    claims = by_kind(docs, "PersistentVolumeClaim")
    secret_keys = {
        name: set(s.get("stringData", {})) | set(s.get("data", {})) for name, s in secrets.items()
    }
    checked = 0
    for doc in docs:
        containers_of = list(pod_specs(doc))
        if doc["kind"] == "RayCluster":
            containers_of.append(("autoscaler", {"containers": [doc["spec"]["autoscalerOptions"]]}))
        for where, spec in containers_of:
            for volume in spec.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, where
            mounts_ok = {v["name"] for v in spec.get("volumes", [])}
            for container in spec["containers"]:
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in mounts_ok, f"{where}: volume {mount['name']}"
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in configmaps, where
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets, where
                    checked += 1
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secret_keys.get(ref["name"], set()), (
                            f"{where}: {var['name']} -> {ref}"
                        )
                        checked += 1
    assert checked > 10


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_pin_the_image_and_set_a_namespace(target: str):
    docs = render(target)
    images = [
        c["image"]
        for doc in docs
        for _, spec in pod_specs(doc)
        for c in spec["containers"]
        if is_moeplane_image(c["image"])
    ]
    assert len(images) >= 7
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {
        by_kind(docs, "Namespace").popitem()[0]
    }
