"""GET /metrics: the Prometheus series docs/operations.md lists, moving as requests are served."""

from __future__ import annotations

from helpers import TEST_MAX_NEW_TOKENS, image_bytes, metric_value

REQUIRED = (
    "deepseek_ocr_requests_total", "deepseek_ocr_queue_depth", "deepseek_ocr_running",
    "deepseek_ocr_request_duration_seconds", "deepseek_ocr_queue_wait_seconds", "deepseek_ocr_inference_seconds",
    "deepseek_ocr_batch_size", "deepseek_ocr_generated_tokens_total", "deepseek_ocr_failures_total",
    "deepseek_ocr_page_retries_total",
)


def test_metrics_are_exposed_in_prometheus_format(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for name in REQUIRED:
        assert f"# TYPE {name.removesuffix('_total')}" in response.text, name
    assert "# TYPE deepseek_ocr_inference_seconds histogram" in response.text
    assert "# TYPE deepseek_ocr_batch_size histogram" in response.text


def test_requests_tokens_batches_and_failures_are_counted(start_client) -> None:
    client = start_client()  # its own app: the counts start at zero
    assert client.post("/api/ocr", files={"image": ("a.png", image_bytes())}).status_code == 200
    assert client.post("/api/ocr", files={"image": ("a.txt", b"text")}).status_code == 415
    text = client.get("/metrics").text
    assert metric_value(text, "deepseek_ocr_requests_total", endpoint="/api/ocr", status="200") == 1
    assert metric_value(text, "deepseek_ocr_requests_total", endpoint="/api/ocr", status="415") == 1
    assert metric_value(text, "deepseek_ocr_failures_total", reason="unsupported_type") == 1
    assert metric_value(text, "deepseek_ocr_generated_tokens_total") == TEST_MAX_NEW_TOKENS  # the cap, reached
    assert metric_value(text, "deepseek_ocr_batch_size_count") == 1 and metric_value(text, "deepseek_ocr_batch_size_sum") == 1
    assert metric_value(text, "deepseek_ocr_inference_seconds_count") == 1
    assert metric_value(text, "deepseek_ocr_request_duration_seconds_count", endpoint="/api/ocr") == 2
    assert metric_value(text, "deepseek_ocr_queue_depth") == 0 and metric_value(text, "deepseek_ocr_running") == 0
