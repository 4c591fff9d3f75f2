"""GET /metrics: the Prometheus series the README lists, moving as requests are served."""

from __future__ import annotations

import re

from conftest import image_bytes

REQUIRED = (
    "deepseek_ocr_requests_total", "deepseek_ocr_queue_depth", "deepseek_ocr_running",
    "deepseek_ocr_request_duration_seconds", "deepseek_ocr_queue_wait_seconds", "deepseek_ocr_inference_seconds",
    "deepseek_ocr_batch_size", "deepseek_ocr_generated_tokens_total", "deepseek_ocr_failures_total",
)


def sample(text: str, series: str) -> float:
    match = re.search("^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_are_exposed_in_prometheus_format(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for name in REQUIRED:
        assert f"# TYPE {name.removesuffix('_total')}" in response.text, name
    assert "# TYPE deepseek_ocr_inference_seconds histogram" in response.text
    assert "# TYPE deepseek_ocr_batch_size histogram" in response.text


def test_requests_tokens_batches_and_failures_are_counted(client) -> None:
    assert client.post("/api/ocr", files={"image": ("a.png", image_bytes())}).status_code == 200
    assert client.post("/api/ocr", files={"image": ("a.txt", b"text")}).status_code == 415
    text = client.get("/metrics").text
    assert sample(text, 'deepseek_ocr_requests_total{endpoint="/api/ocr",status="200"}') == 1
    assert sample(text, 'deepseek_ocr_requests_total{endpoint="/api/ocr",status="415"}') == 1
    assert sample(text, 'deepseek_ocr_failures_total{reason="unsupported_type"}') == 1
    assert sample(text, "deepseek_ocr_generated_tokens_total") == 6  # the tests' token cap, reached
    assert sample(text, "deepseek_ocr_batch_size_count") == 1 and sample(text, "deepseek_ocr_batch_size_sum") == 1
    assert sample(text, "deepseek_ocr_inference_seconds_count") == 1
    assert sample(text, 'deepseek_ocr_request_duration_seconds_count{endpoint="/api/ocr"}') == 2
    assert sample(text, "deepseek_ocr_queue_depth") == 0 and sample(text, "deepseek_ocr_running") == 0
