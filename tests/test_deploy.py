"""The deployment files as a cluster or compose would read them, without either: the Kubernetes manifests against
the Kubernetes API schemas (kubernetes-validate ships them), deploy/compose.yaml against the Compose
specification's schema (check-jsonschema ships it), and what must agree between them, the Containerfile and the
service's settings. Running the image itself is tests/test_container.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from settings import ENV_PREFIX, Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes release still maintained when these were written, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
DEFAULT_SHUTDOWN_GRACE_S = Settings.model_fields["ocr_shutdown_grace_s"].default


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "Kustomization"]
    return documents


def manifest(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def compose(**variables: str) -> dict[str, Any]:
    """deploy/compose.yaml as compose reads it with these variables set: ${NAME:-default} and ${NAME:?error}."""

    def value(match: re.Match[str]) -> str:
        name, operator, word = match.groups()
        if name in variables:
            return variables[name]
        assert operator == ":-", f"compose would stop: {word}"
        return word

    text = re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", value, (DEPLOY / "compose.yaml").read_text())
    return yaml.safe_load(text)


def containerfile_instructions() -> list[str]:
    """The Containerfile's instructions, one string each: continuation lines joined, comments left out."""
    instructions: list[str] = []
    pending = ""
    for line in (ROOT / "Containerfile").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line.removesuffix("\\").strip() + " "
            continue
        instructions.append(pending + line)
        pending = ""
    return instructions


# --- Kubernetes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_manifest_is_valid_for_the_kubernetes_api(version: str) -> None:
    documents = manifests()
    assert {doc["kind"] for doc in documents} >= {"Deployment", "Service", "StatefulSet", "Secret"}
    for document in documents:
        # strict: a misspelt field is an error, as `kubectl apply --validate=strict` makes it.
        kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelt_field_fails_the_schema_check() -> None:
    front = manifest("Deployment", "deepseek-ocr-front")
    container_of(front)["readinessProbe"]["httpGet"]["pth"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="pth"):
        kubernetes_validate.validate(front, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_the_front_is_ready_on_health_ready_alive_on_health_live_and_outlasts_its_drain() -> None:
    front = manifest("Deployment", "deepseek-ocr-front")
    container = container_of(front)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    pause_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert front["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > DEFAULT_SHUTDOWN_GRACE_S + pause_s
    assert front["spec"]["replicas"] >= 2
    service = manifest("Service", "deepseek-ocr")
    assert service["spec"]["selector"] == front["spec"]["selector"]["matchLabels"]


def test_the_front_runs_as_the_images_user_on_a_read_only_root_with_a_writable_data_folder() -> None:
    pod = manifest("Deployment", "deepseek-ocr-front")["spec"]["template"]["spec"]
    [user] = [line.split()[1] for line in containerfile_instructions() if line.startswith("USER ") and "root" not in line]
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    container = container_of(manifest("Deployment", "deepseek-ocr-front"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/data", "/tmp"}


def test_the_front_names_every_vllm_server_and_each_server_has_one_gpu() -> None:
    servers = manifest("StatefulSet", "deepseek-ocr-vllm")
    service = manifest("Service", servers["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name a server
    port = service["spec"]["ports"][0]["port"]
    expected = [f"http://{servers['metadata']['name']}-{i}.{service['metadata']['name']}:{port}"
                for i in range(servers["spec"]["replicas"])]
    front_env = env_of(container_of(manifest("Deployment", "deepseek-ocr-front")))
    assert front_env["DEEPSEEK_OCR_VLLM_URLS"].split(",") == expected
    resources = container_of(servers)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1


def test_every_secret_the_pods_read_is_in_the_secret() -> None:
    secret = manifest("Secret", "deepseek-ocr")
    keys = set(secret["stringData"])
    read = set()
    for workload in manifests():
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = workload["spec"]["template"]["spec"]
        for value in env_of(container_of(workload)).values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                assert value["secretKeyRef"]["name"] == secret["metadata"]["name"]
                read.add(value["secretKeyRef"]["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == secret["metadata"]["name"]
                read |= {item["key"] for item in volume["secret"]["items"]}
    assert read and read <= keys
    database = urlsplit(secret["stringData"]["database-url"])
    assert database.hostname == manifest("Service", "deepseek-ocr-postgres")["metadata"]["name"]
    assert database.password == secret["stringData"]["postgres-password"]


# --- Compose ----------------------------------------------------------------------------------------------------

def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_the_compose_file_is_valid_for_the_compose_specification(tmp_path: Path) -> None:
    checked = check_compose_schema(DEPLOY / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    misspelt = tmp_path / "compose.yaml"
    misspelt.write_text((DEPLOY / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    assert "stop_grace_perod" in check_compose_schema(misspelt).stdout


def test_compose_stops_without_a_postgres_password() -> None:
    with pytest.raises(AssertionError, match="set POSTGRES_PASSWORD"):
        compose()


def test_compose_puts_nginx_before_two_fronts_that_share_postgres_and_reach_one_vllm_server_per_gpu() -> None:
    services = compose(POSTGRES_PASSWORD="s3cret")["services"]
    fronts = sorted(name for name, service in services.items() if service.get("build", {}).get("target") == "front")
    vllm = sorted(name for name, service in services.items() if "vllm-openai" in service.get("image", ""))
    assert len(fronts) == 2 and len(vllm) >= 1

    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", (DEPLOY / "nginx.conf").read_text(), re.MULTILINE)
    assert sorted(host for host, _ in upstream) == fronts
    assert {port for _, port in upstream} == {"8000"}
    [mount] = [volume for volume in services["lb"]["volumes"] if "nginx.conf" in volume]
    assert mount.startswith("./nginx.conf:")

    gpus = [device for name in vllm for device in services[name]["deploy"]["resources"]["reservations"]["devices"]]
    assert [device["device_ids"] for device in gpus] == [[str(i)] for i in range(len(vllm))]
    for name in fronts:
        front = services[name]
        assert front["environment"]["DEEPSEEK_OCR_VLLM_URLS"].split(",") == [f"http://{v}:8000" for v in vllm]
        database = urlsplit(front["environment"]["DEEPSEEK_OCR_DATABASE_URL"])
        assert (database.hostname, database.password) == ("postgres", "s3cret")
        assert front["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert int(front["stop_grace_period"].removesuffix("s")) > DEFAULT_SHUTDOWN_GRACE_S
        assert "runs:/data/runs" in front["volumes"]  # artifact URLs work through either replica


# --- What the files must agree on -------------------------------------------------------------------------------

def test_every_deepseek_variable_the_deployment_files_set_is_a_setting_of_the_service() -> None:
    settings = {env_name(field) for field in Settings.model_fields}
    files = [ROOT / "Containerfile", DEPLOY / "compose.yaml", *sorted(KUBERNETES.glob("*.yaml"))]
    named = {name for path in files for name in re.findall(ENV_PREFIX + r"[A-Z0-9_]+", path.read_text())}
    assert named and named <= settings, named - settings


def test_the_image_holds_every_top_level_module_and_has_both_targets() -> None:
    instructions = containerfile_instructions()
    stages = [line.split()[-1] for line in instructions if line.startswith("FROM ")]
    assert {"front", "gpu"} <= set(stages) and stages[-1] == "front"  # `podman build .` makes the small one
    modules = {path.name for path in ROOT.glob("*.py")}
    for target in ("front", "gpu"):
        start = instructions.index(next(line for line in instructions if line.endswith(f" AS {target}")))
        stage = instructions[start + 1:]
        stage = stage[:next((i for i, line in enumerate(stage) if line.startswith("FROM ")), len(stage))]
        copied = {name for line in stage if line.startswith("COPY ") and "--from" not in line for name in line.split()[1:-1]}
        assert modules | {"dsocr/"} <= copied, (target, modules - copied)
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    assert all(f"!{module}" in allowed for module in modules) and "!dsocr/" in allowed


def test_the_image_probes_liveness_and_hands_sigterm_to_uvicorn() -> None:
    instructions = containerfile_instructions()
    [healthcheck] = [line for line in instructions if line.startswith("HEALTHCHECK ")]
    assert "/health/live" in healthcheck
    [command] = [line for line in instructions if line.startswith("CMD ")]
    assert '"exec python -m uvicorn app:app' in command  # exec: uvicorn is PID 1 and gets SIGTERM itself
