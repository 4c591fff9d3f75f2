"""Jobs against an engine that answers at once: how many one-page jobs a second the service gets through, how long
a submit takes, and what the job store costs per page.

    python bench/jobs.py                  # both parts below, 200 jobs, 16 submits in flight
    python bench/jobs.py --part service   # only the HTTP service
    python bench/jobs.py --part store     # only the store (SQLite, then PostgreSQL when one can be started)

- **service**: `uvicorn app:app` in a subprocess with DEEPSEEK_OCR_ENGINE=vllm in front of the STAND-IN vLLM
  server (tests/openai_standin.py, in this process, instant answers), its data, runs and history in a temporary
  folder. `--jobs` one-page jobs are submitted with `--concurrency` submits in flight, then each is long-polled
  (?wait=60) until it ends: jobs/s from the first submit to the last end, and the submits' p50/p99. Jobs still
  unfinished after `--timeout` seconds are counted as "not ended" (and left out of jobs/s).
- **store**: the JobStore driven directly, in this process, on a fresh SQLite file (and on a throwaway PostgreSQL
  server, tests/postgres.py, which needs the `postgres` user: run as root or as that user). The calls a job's page
  costs, in the order the service makes them: submit, claim (in batches of `--concurrency`, as the worker claims
  up to its free slots), content (the upload, once per document), finish_page. Prints the milliseconds per page,
  in all and per call. Goal: under 5 ms a page on SQLite, on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the service's code, and the tests' helpers

from helpers import image_bytes  # noqa: E402
from live_server import Server  # noqa: E402
from openai_standin import OpenAIStandIn  # noqa: E402

from dsocr.store.database import Database  # noqa: E402
from dsocr.store.jobs import JobStore, NewDocument  # noqa: E402
from dsocr.store.migrations import migrate  # noqa: E402

FINAL = ("succeeded", "partial", "failed", "cancelled")
WORKER = "bench"
LEASE_S = 60.0
# A page's answer of a realistic size: about 2 KB of markdown, as /api/ocr's `pages[]` carries it.
PAGE_TEXT = "# A heading\n\n" + "Some recognised text on the page, a sentence of it. " * 40


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# --- the service over HTTP -------------------------------------------------------------------------------------------


async def drive_service(url: str, jobs: int, concurrency: int, page: bytes, timeout_s: float
                        ) -> tuple[float, float, list[float], dict]:
    """Submits `jobs` one-page jobs, `concurrency` at a time, then waits for all of them (at most `timeout_s` in
    all); returns the seconds the submits took, the seconds until the last job ended, each submit's latency, and how
    many jobs ended in each status ("not ended" for those still unfinished at the deadline)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def submit(number: int) -> str:
            async with gate:
                sent = time.perf_counter()
                answer = await client.post("/api/jobs", files={"file": (f"page-{number}.png", page, "image/png")})
                latencies.append(time.perf_counter() - sent)
            assert answer.status_code == 202, answer.text
            return answer.json()["jobId"]

        async def ended(job_id: str, deadline: float) -> tuple[str, float]:
            async with gate:
                while (left := deadline - time.perf_counter()) > 0:
                    view = (await client.get(f"/api/jobs/{job_id}", params={"wait": min(60, left)})).json()
                    if view["status"] in FINAL:
                        return view["status"], time.perf_counter()
                return "not ended", started

        started = time.perf_counter()
        ids = await asyncio.gather(*(submit(number) for number in range(jobs)))
        submitted = time.perf_counter() - started
        ends = await asyncio.gather(*(ended(job_id, started + timeout_s) for job_id in ids))
    outcomes: dict[str, int] = defaultdict(int)
    for status, _ in ends:
        outcomes[status] += 1
    return submitted, max(end for _, end in ends) - started, latencies, dict(outcomes)


def bench_service(jobs: int, concurrency: int, timeout_s: float) -> None:
    standin = OpenAIStandIn().start()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as folder:
        server = Server({
            "DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": standin.url,
            "DEEPSEEK_OCR_DATA_DIR": f"{folder}/data", "DEEPSEEK_OCR_RUNS_DIR": f"{folder}/runs",
            "DEEPSEEK_OCR_HISTORY_DIR": f"{folder}/history", "DEEPSEEK_OCR_LOG_LEVEL": "warning",
        })
        try:
            server.wait_ready()
            submitted, elapsed, latencies, outcomes = asyncio.run(
                drive_service(server.url, jobs, concurrency, image_bytes((640, 480)), timeout_s))
        finally:
            server.stop()  # SIGTERM to its process id, then SIGKILL if it lingers
            standin.stop()
    ms = [latency * 1000 for latency in latencies]
    ended = jobs - outcomes.get("not ended", 0)
    print(f"service (SQLite, vLLM stand-in): {jobs} one-page jobs, {concurrency} in flight: "
          f"{ended / elapsed:.1f} jobs/s ({elapsed:.2f} s from the first submit to the last end; the submits took "
          f"{submitted:.2f} s); submit p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms; "
          f"ended: {outcomes}; the stand-in answered {standin.completed} pages")


# --- the store in this process ---------------------------------------------------------------------------------------


class Timings:
    """Seconds spent in each store call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def timed(self, name: str, call: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1


def drive_store(url: str, jobs: int, batch: int, page: bytes) -> tuple[Timings, int]:
    """Submits `jobs` one-page jobs, claims them `batch` at a time and finishes each; returns the timings and how
    many jobs ended succeeded."""
    database = Database(url, Path(tempfile.gettempdir()))
    migrate(database)
    store = JobStore(database, max_queued_pages=jobs * 2)
    timings = Timings()
    result = {"page": 1, "pageIndex": 0, "text": PAGE_TEXT, "raw": PAGE_TEXT, "regions": [], "finishReason": "stop"}
    try:
        for number in range(jobs):
            document = NewDocument(f"page-{number}.png", len(page), False, [1], page)
            timings.timed("submit", store.submit, "owner", "gundam", "<image>\nConvert.", None, None, [document])
        while claimed := timings.timed("claim", store.claim, WORKER, batch, LEASE_S, 3):
            for held in claimed:
                timings.timed("content", store.content, held.document_id)
                event = {"documentId": held.document_id, "page": 1, "pageIndex": 0, "text": PAGE_TEXT,
                         "finishReason": "stop"}
                timings.timed("finish_page", store.finish_page, held, WORKER, result, event)
        succeeded = len(store.listing("owner", "succeeded", jobs))
    finally:
        database.close()
    return timings, succeeded


def report_store(backend: str, jobs: int, batch: int, timings: Timings, succeeded: int) -> None:
    total = sum(timings.seconds.values())
    calls = ", ".join(f"{name} {seconds * 1000 / jobs:.2f}" for name, seconds in timings.seconds.items())
    print(f"store ({backend}): {jobs} one-page jobs, claimed {batch} at a time: {total * 1000 / jobs:.2f} ms per page "
          f"({calls}); {total:.2f} s in all; {succeeded} of {jobs} jobs succeeded")


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A throwaway PostgreSQL server's URL, or None (with the reason printed) when one cannot be started here."""
    import pytest
    from postgres import fresh_database, postgres_server

    servers = contextlib.contextmanager(postgres_server)()
    try:
        url = servers.__enter__()
    except pytest.skip.Exception as skipped:
        print(f"store (PostgreSQL): skipped: {skipped}")
        yield None
        return
    except Exception as exc:  # e.g. not root and not the postgres user: initdb or pg_ctl refuse
        print(f"store (PostgreSQL): skipped: a server could not be started ({type(exc).__name__}: {exc})")
        yield None
        return
    try:
        yield fresh_database(url)
    finally:
        servers.__exit__(None, None, None)


def bench_store(jobs: int, batch: int, with_postgres: bool) -> None:
    page = image_bytes((640, 480))
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        timings, succeeded = drive_store(f"sqlite:///{folder}/bench.sqlite3", jobs, batch, page)
        report_store("SQLite", jobs, batch, timings, succeeded)
    if not with_postgres:
        return
    with postgres() as url:
        if url is not None:
            timings, succeeded = drive_store(url, jobs, batch, page)
            report_store("PostgreSQL 15, fsync off as in the tests", jobs, batch, timings, succeeded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "service", "store"), default="all")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300, help="seconds the service gets to end every job")
    parser.add_argument("--no-postgres", action="store_true", help="the store on SQLite only")
    args = parser.parse_args()
    if args.part in ("all", "service"):
        bench_service(args.jobs, args.concurrency, args.timeout)
    if args.part in ("all", "store"):
        bench_store(args.jobs, args.concurrency, not args.no_postgres)


if __name__ == "__main__":
    main()
