"""Prometheus metrics of the service, in a registry of the app's own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# Seconds: from a fast page on a GPU to a long PDF on a CPU.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        self.requests = Counter("deepseek_ocr_requests", "OCR requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.queue_depth = Gauge("deepseek_ocr_queue_depth", "Pages waiting for the model", registry=r)
        self.running = Gauge("deepseek_ocr_running", "Pages in the batch the model is running", registry=r)
        self.admitted = Gauge("deepseek_ocr_admitted", "Requests admitted (queued, running or reading)", registry=r)
        self.pdf_workers_busy = Gauge("deepseek_ocr_pdf_workers_busy", "PDF worker processes opening or rendering a PDF",
                                      registry=r)
        self.admitted_pages = Gauge("deepseek_ocr_admitted_pages", "Pages of admitted requests not yet answered",
                                    registry=r)
        self.request_duration = Histogram("deepseek_ocr_request_duration_seconds", "End-to-end OCR request time",
                                          ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("deepseek_ocr_queue_wait_seconds", "Time a page waited for its batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("deepseek_ocr_inference_seconds", "Time the model took for a batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("deepseek_ocr_batch_size", "Pages per batch", buckets=BATCH_BUCKETS, registry=r)
        self.generated_tokens = Counter("deepseek_ocr_generated_tokens", "Tokens generated", registry=r)
        self.time_to_first_token = Histogram("deepseek_ocr_time_to_first_token_seconds",
                                             "From sending a page to vLLM to its first token", buckets=LATENCY_BUCKETS,
                                             registry=r)
        self.vllm_inflight = Gauge("deepseek_ocr_vllm_inflight", "Pages in flight on each vLLM server", ["server"],
                                   registry=r)
        self.vllm_requests = Counter("deepseek_ocr_vllm_requests", "Pages sent to each vLLM server, by outcome",
                                     ["server", "outcome"], registry=r)
        self.vllm_healthy = Gauge("deepseek_ocr_vllm_healthy", "1 while a vLLM server answers its health probe",
                                  ["server"], registry=r)
        self.page_retries = Counter("deepseek_ocr_page_retries", "Pages that did not read cleanly the first time "
                                    "(token cap or repeated tail), by how they ended: recovered, cut or unresolved",
                                    ["outcome"], registry=r)
        self.failures = Counter("deepseek_ocr_failures", "Failed OCR requests and pages, by reason", ["reason"],
                                registry=r)
