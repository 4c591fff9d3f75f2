"""The `front` image (Containerfile) as a user runs it: podman runs the image that .ci/container.sh built and names
in DSOCR_TEST_IMAGE, on the host's network, in front of the STAND-IN vLLM server (tests/openai_standin.py) on
loopback. It answers /health and a page over /api/ocr, writes under its /data volume as a non-root user, passes its
own HEALTHCHECK, and on `podman stop` drains its admitted work and exits 0.

Without DSOCR_TEST_IMAGE the module is skipped: building the image needs root, podman and a
base image, which .ci/container.sh provides."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Iterator

import httpx
import pytest

from dsocr import __version__
from helpers import image_bytes, wait_until
from live_server import free_port, wait_healthy
from openai_standin import OpenAIStandIn

IMAGE = os.environ.get("DSOCR_TEST_IMAGE", "")
# Skipped only when no image is named: with one named, a missing podman is a failure, not a silent skip.
pytestmark = pytest.mark.skipif(not IMAGE, reason="DSOCR_TEST_IMAGE unset: .ci/container.sh builds the image and runs these")

# Every container this module starts carries this label, so that .ci/container.sh removes leftovers whatever happens.
CI_LABEL = "io.github.deepseek-ocr-service.ci=container-test"
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 40  # podman stop's grace, above the drain below
GRACE_S = 30  # DEEPSEEK_OCR_SHUTDOWN_GRACE_S inside the container
COMMAND_TIMEOUT_S = 60


def podman(*args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout_s)


class Container:
    """One run of the image on the host's network, listening on a free loopback port."""

    def __init__(self, standin: OpenAIStandIn) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"dsocr-test-{os.getpid()}-{self.port}"
        started = podman(
            # --read-only as the Kubernetes manifests run it (readOnlyRootFilesystem): only /data and /tmp written.
            "run", "--detach", "--name", self.name, "--label", CI_LABEL, "--network", "host", "--read-only",
            "--env", "HOST=127.0.0.1", "--env", f"PORT={self.port}",
            "--env", f"DEEPSEEK_OCR_VLLM_URLS={standin.url}",
            "--env", "DEEPSEEK_OCR_VLLM_PROBE_INTERVAL_S=0.2",
            "--env", f"DEEPSEEK_OCR_SHUTDOWN_GRACE_S={GRACE_S}",
            IMAGE,
        )
        assert started.returncode == 0, started.stderr

    def logs(self) -> str:
        shown = podman("logs", self.name)  # the container's stdout and stderr, apart
        return shown.stdout + shown.stderr

    def state(self, field: str) -> str:
        return podman("inspect", "--format", "{{.State.%s}}" % field, self.name).stdout.strip()

    def wait_ready(self) -> None:
        wait_healthy(self.url, lambda: self.state("Running") == "true", self.logs, STARTUP_TIMEOUT_S, interval_s=0.2)

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "0", self.name)  # and its anonymous /data volume


@pytest.fixture(scope="module")
def container(module_standin: OpenAIStandIn) -> Iterator[Container]:
    running = Container(module_standin)
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def test_the_image_is_labelled_and_runs_as_a_user_with_a_data_volume() -> None:
    inspected = podman("image", "inspect", "--format",
                       "{{.Config.User}}|{{index .Config.Labels \"org.opencontainers.image.version\"}}|"
                       "{{range $path, $_ := .Config.Volumes}}{{$path}} {{end}}", IMAGE)
    user, version, volumes = inspected.stdout.strip().split("|")
    assert not user.startswith(("0", "root")) and user, user
    assert version == __version__
    assert volumes.split() == ["/data"]


def test_health_names_the_vllm_engine_and_the_servers_model(container: Container, module_standin: OpenAIStandIn) -> None:
    health = httpx.get(f"{container.url}/health", timeout=10).json()
    assert (health["engine"], health["model"]) == ("vllm", module_standin.model_id)
    assert httpx.get(f"{container.url}/health/live", timeout=10).json() == {"status": "alive"}


def test_the_images_own_healthcheck_passes(container: Container) -> None:
    checked = podman("healthcheck", "run", container.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_page_over_api_ocr_comes_back_from_the_vllm_server(container: Container, module_standin: OpenAIStandIn) -> None:
    before = len(module_standin.bodies)
    response = httpx.post(f"{container.url}/api/ocr", files={"image": ("page.png", image_bytes(), "image/png")},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "# Title\n\nSome text."
    assert len(module_standin.bodies) == before + 1


def test_what_the_service_keeps_is_written_under_the_data_volume_by_its_user(container: Container) -> None:
    # The image's /data is empty: after the page above, the service's runs and history (or database) are there.
    listed = podman("exec", container.name, "sh", "-c", 'id -u; find /data -mindepth 1 -maxdepth 1; '
                                                         'find /data -mindepth 1 ! -user "$(id -u)"')
    assert listed.returncode == 0, listed.stderr
    uid, *entries = listed.stdout.split()
    assert uid != "0"
    assert entries and all(entry.startswith("/data/") for entry in entries), listed.stdout
    assert "/data/history" in entries or any(entry.endswith((".sqlite3", ".db")) for entry in entries), entries


def test_podman_stop_drains_admitted_work_and_the_service_exits_0(container: Container, module_standin: OpenAIStandIn) -> None:
    release = threading.Event()
    module_standin.script.hold = release
    answers: list[httpx.Response] = []
    admitted = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{container.url}/api/ocr", files={"image": ("page.png", image_bytes(), "image/png")}, timeout=120)))
    admitted.start()
    wait_until(lambda: module_standin.active >= 1, timeout_s=60)

    stopping = threading.Thread(target=lambda: podman("stop", "--time", str(STOP_TIMEOUT_S), container.name,
                                                      timeout_s=STOP_TIMEOUT_S + 30))
    started = time.monotonic()
    stopping.start()
    wait_until(lambda: httpx.get(f"{container.url}/health", timeout=5).status_code == 503, timeout_s=30)
    assert httpx.get(f"{container.url}/health", timeout=5).json()["status"] == "draining"
    refused = httpx.post(f"{container.url}/api/ocr", files={"image": ("page.png", image_bytes(), "image/png")},
                         timeout=30)
    assert refused.status_code == 503

    release.set()
    admitted.join(60)
    stopping.join(STOP_TIMEOUT_S + 30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    # Exit code 0 before podman's grace ran out: SIGTERM reached uvicorn (PID 1), not a SIGKILL (137).
    assert container.state("ExitCode") == "0", container.logs()
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert "draining" in container.logs().lower()
