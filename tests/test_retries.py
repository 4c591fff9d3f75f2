"""Pages that loop are read again (dsocr.serving.retries): sampling at rising temperatures until a reading ends
cleanly, else the best reading with its repeated tail cut; per page `attempts` and `repetitionCut`, the stream's
`retry` and `replace` events, deepseek_ocr_page_retries_total and the request's log line.

The pages that loop under greedy decoding and read cleanly when sampled come from STAND-INS: the vLLM stand-in
(tests/openai_standin.py) answers by the request's temperature, and the native engine runs the tiny random
checkpoint with a logits processor that forces a loop (a random model loops on no page of its own). The
remote-code engine's ladder is in test_remote_code.py.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import LogitsProcessor

from dsocr.catalogue import V2_MODES
from dsocr.engines.loading import load_engine
from dsocr.serving.retries import temperature_of_retry
from helpers import app_starter, image_bytes, make_settings, metric_value, parse_events, post, wait_until
from ocr_engine import PageRequest
from openai_standin import OpenAIStandIn
from settings import Settings, SettingsError, load_settings

PAGE = image_bytes((600, 400))
INTRO = "# Notice\n\nThe tenant shall pay the rent on the first day of each month.\n"
CLAUSE = "The landlord may enter the premises with 24 hours notice.\n"
LOOP = [INTRO, *[CLAUSE] * 20, "The landlord may"]  # the token cap cuts the last copy short
CUT = INTRO + CLAUSE.rstrip()
CLEAN = ["# Notice\n\n", "The tenant shall pay the rent.\n", "Pets are allowed."]


@pytest.fixture
def standin() -> Iterator[OpenAIStandIn]:
    server = OpenAIStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def start_vllm_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`start(url, **overrides)`: the app in front of the vLLM stand-in at `url`."""
    def settings_for(url: str, **overrides: object) -> Settings:
        return load_settings(ocr_engine="vllm", ocr_vllm_urls=url, ocr_runs_dir=tmp_path / "runs",
                             ocr_history_dir=tmp_path / "history", ocr_data_dir=tmp_path / "data",
                             ocr_vllm_probe_interval_s=0.05, **overrides)

    yield from app_starter(settings_for)


def retries(client: TestClient, outcome: str) -> float:
    return metric_value(client.get("/metrics").text, "deepseek_ocr_page_retries_total", outcome=outcome)


def stream(client: TestClient, data: bytes) -> list[tuple[str, dict]]:
    with client.stream("POST", "/api/ocr/stream", files={"image": ("page.png", data, "image/png")}) as response:
        assert response.status_code == 200
        return parse_events(response.iter_lines())


# --- through vLLM ------------------------------------------------------------------------------------------------

def test_a_page_that_loops_greedily_is_read_again_sampling_and_the_clean_reading_wins(
    start_vllm_client, standin: OpenAIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    standin.script.sampled = (CLEAN, "stop")
    client = start_vllm_client(standin.url)
    with caplog.at_level(logging.INFO, logger="deepseek_ocr.request"):
        response = post(client, PAGE)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["rawText"], answer["finishReason"]) == ("".join(CLEAN), "stop")
    [page] = answer["pages"]
    assert (page["attempts"], page["repetitionCut"], page["finishReason"]) == (2, False, "stop")
    assert [body["temperature"] for body in standin.bodies] == [0, 0.2]
    assert standin.bodies[1]["vllm_xargs"] == standin.bodies[0]["vllm_xargs"]  # the repetition guard stays on
    assert retries(client, "recovered") == 1 and retries(client, "cut") == 0
    [line] = [record for record in caplog.records if getattr(record, "fields", {}).get("path") == "/api/ocr"]
    assert line.fields["attempts"] == [2]


def test_with_retries_off_the_repeated_tail_is_cut_and_flagged(start_vllm_client, standin: OpenAIStandIn) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    standin.script.sampled = (CLEAN, "stop")
    client = start_vllm_client(standin.url, ocr_page_retries=0)
    answer = post(client, PAGE).json()
    assert (answer["rawText"], answer["finishReason"]) == (CUT, "length")
    [page] = answer["pages"]
    assert (page["attempts"], page["repetitionCut"]) == (1, True)
    assert len(standin.bodies) == 1
    assert retries(client, "cut") == 1 and retries(client, "recovered") == 0


def test_when_no_reading_is_clean_the_longest_once_cut_is_kept(start_vllm_client, standin: OpenAIStandIn) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    longer = [INTRO, "A second paragraph the greedy reading missed.\n", *[CLAUSE] * 20]
    standin.script.sampled = (longer, "length")
    client = start_vllm_client(standin.url, ocr_retry_temperatures="0.3,0.7")
    [page] = post(client, PAGE).json()["pages"]
    assert [body["temperature"] for body in standin.bodies] == [0, 0.3, 0.7]
    assert (page["attempts"], page["repetitionCut"], page["finishReason"]) == (3, True, "length")
    assert page["rawText"] == INTRO + "A second paragraph the greedy reading missed.\n" + CLAUSE.rstrip()
    assert retries(client, "cut") == 1


def test_a_page_ended_by_the_cap_without_a_loop_is_read_again_and_kept_uncut(
    start_vllm_client, standin: OpenAIStandIn
) -> None:
    standin.script.pieces, standin.script.finish_reason = ["A long page, cut short by the cap"], "length"
    client = start_vllm_client(standin.url, ocr_page_retries=1)
    [page] = post(client, PAGE).json()["pages"]
    assert (page["attempts"], page["repetitionCut"], page["finishReason"]) == (2, False, "length")
    assert page["rawText"] == "A long page, cut short by the cap"
    assert retries(client, "unresolved") == 1


def test_a_clean_page_is_read_once(start_vllm_client, standin: OpenAIStandIn) -> None:
    table = "<table>" + "".join(f"<tr><td>Item {i}</td><td>{i}.00</td></tr>" for i in range(40)) + "</table>"
    standin.script.pieces = [table]
    client = start_vllm_client(standin.url)
    [page] = post(client, PAGE).json()["pages"]
    assert (page["attempts"], page["repetitionCut"], page["rawText"]) == (1, False, table)
    assert len(standin.bodies) == 1
    assert sum(retries(client, outcome) for outcome in ("recovered", "cut", "unresolved")) == 0


def test_a_stream_says_the_page_is_read_again_and_its_new_text_replaces_the_old(
    start_vllm_client, standin: OpenAIStandIn
) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    standin.script.sampled = (CLEAN, "stop")
    events = stream(start_vllm_client(standin.url), PAGE)
    names = [name for name, _ in events]
    retry = names.index("retry")
    assert events[retry][1] == {"page": 1, "attempt": 2, "temperature": 0.2, "reason": "repetition"}
    before = "".join(data["text"] for name, data in events[:retry] if name == "delta")
    after = "".join(data["text"] for name, data in events[retry:] if name == "delta")
    assert before == "".join(LOOP) and after == "".join(CLEAN)
    assert "replace" not in names  # what was streamed last is the answer
    assert events[-1][0] == "result" and events[-1][1]["rawText"] == after


def test_a_stream_hears_the_cut_text_that_replaces_the_streamed_loop(start_vllm_client, standin: OpenAIStandIn) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    events = stream(start_vllm_client(standin.url, ocr_page_retries=0), PAGE)
    names = [name for name, _ in events]
    assert "retry" not in names
    [replace] = [data for name, data in events if name == "replace"]
    assert replace == {"page": 1, "text": CUT}
    assert names.index("replace") < names.index("result")
    assert events[-1][1]["pages"][0]["repetitionCut"] is True


def test_a_jobs_page_that_loops_is_read_again_within_its_one_attempt(start_vllm_client, standin: OpenAIStandIn) -> None:
    standin.script.pieces, standin.script.finish_reason = LOOP, "length"
    standin.script.sampled = (CLEAN, "stop")
    client = start_vllm_client(standin.url)
    job = client.post("/api/jobs", files=[("file", ("page.png", PAGE, "image/png"))]).json()
    view: dict = {}

    def ended() -> bool:
        nonlocal view
        view = client.get(f"/api/jobs/{job['jobId']}", params={"wait": 5}).json()
        return view["status"] in ("succeeded", "partial", "failed", "cancelled")

    wait_until(ended)
    assert (view["status"], view["pagesDone"], view["pagesFailed"]) == ("succeeded", 1, 0)
    [page] = client.get(f"/api/jobs/{job['jobId']}/result").json()["documents"][0]["pages"]
    assert (page["attempts"], page["finishReason"], page["rawText"]) == (2, "stop", "".join(CLEAN))
    assert len(standin.bodies) == 2


# --- the native engine -------------------------------------------------------------------------------------------

LOOP_MARGIN = 0.3  # end-of-sentence trails the loop by this: never chosen greedily, soon sampled at 0.2 (e^-1.5)


class LoopsUnlessSampled(LogitsProcessor):
    """TEST INSTRUMENT: makes the tiny random model loop under greedy decoding. Every step the next token of
    `span` comes first and end-of-sentence LOOP_MARGIN behind, everything else nowhere: greedy decoding goes round
    the span to the token cap; sampling soon ends the answer."""

    def __init__(self, span: list[int], eos_id: int) -> None:
        self.span = span
        self.eos_id = eos_id
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.span[self.step % len(self.span)]] = 0.0
        forced[:, self.eos_id] = -LOOP_MARGIN
        self.step += 1
        return forced


def force_loops(engine, text: str) -> None:
    """Puts LoopsUnlessSampled first among the processors of each of the engine's `generate` calls."""
    tokenizer = engine.tokenizer
    span = tokenizer.encode(text, add_special_tokens=False)
    generate = engine.model.generate

    def looping_generate(**kwargs):
        kwargs["logits_processor"] = [LoopsUnlessSampled(span, tokenizer.eos_token_id), *kwargs["logits_processor"]]
        return generate(**kwargs)

    engine.model.generate = looping_generate


# Off: the n-gram guard would break this exact loop; on real pages loops escape it with periods past its window.
NATIVE = {"ocr_max_new_tokens": 160, "ocr_ngram_size": 0}


def test_the_native_engine_samples_only_the_sequences_read_again(native_checkpoint: Path, tmp_path: Path) -> None:
    engine = load_engine(make_settings(native_checkpoint, tmp_path / "runs", **NATIVE), str(native_checkpoint))
    force_loops(engine, "Total due this month. ")
    torch.manual_seed(0)
    image = Image.new("RGB", (64, 64), "white")
    requests = [PageRequest(image, "<image>\nFree OCR.", V2_MODES[0], tmp_path, temperature=temperature)
                for temperature in (None, 0.2, None)]
    greedy, sampled, other = engine.read_batch(requests)
    assert (greedy.finish_reason, greedy.generated_tokens) == ("length", 160)
    assert greedy.raw_text.startswith("Total due this month. Total due this month.")
    assert other == greedy  # the batch's other greedy row is untouched
    assert sampled.finish_reason == "stop" and sampled.generated_tokens < 160


def test_the_native_engine_reads_a_looping_page_again_and_answers_the_clean_reading(start_client) -> None:
    client = start_client(ocr_page_retries=2, **NATIVE)
    force_loops(client.app.state.model.engine, "Total due this month. ")
    torch.manual_seed(0)
    answer = post(client, PAGE, mode="base").json()
    [page] = answer["pages"]
    assert (page["attempts"], page["finishReason"], page["repetitionCut"]) == (2, "stop", False)
    assert retries(client, "recovered") == 1


def test_the_native_engine_with_retries_off_cuts_the_loop(start_client) -> None:
    client = start_client(ocr_page_retries=0, **NATIVE)
    force_loops(client.app.state.model.engine, "Total due this month. ")
    [page] = post(client, PAGE, mode="base").json()["pages"]
    assert (page["attempts"], page["finishReason"], page["repetitionCut"]) == (1, "length", True)
    assert page["rawText"] == "Total due this month."
    assert retries(client, "cut") == 1


# --- the ladder's settings ---------------------------------------------------------------------------------------

def test_retries_take_the_temperatures_in_turn_and_the_last_again_past_the_end() -> None:
    assert [temperature_of_retry([0.2, 0.5], retry) for retry in (1, 2, 3, 4)] == [0.2, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("value, words", [("0", "above 0"), ("0.2,3", "at most 2"), ("", "at least one"),
                                          ("warm", "number")])
def test_a_temperature_that_cannot_sample_is_refused_naming_the_variable(clean_env, value: str, words: str) -> None:
    with pytest.raises(SettingsError, match="DEEPSEEK_OCR_RETRY_TEMPERATURES") as refused:
        load_settings(ocr_retry_temperatures=value)
    assert words in str(refused.value)
    with pytest.raises(SettingsError, match="DEEPSEEK_OCR_PAGE_RETRIES"):
        load_settings(ocr_page_retries=-1)


def test_a_retry_that_fails_keeps_the_first_reading() -> None:
    """The ladder itself, with a reader that loops and then fails (an unreachable server, say)."""
    from dsocr.serving.metrics import Metrics
    from dsocr.serving.retries import read_until_clean
    from ocr_engine import PageResult, Timings

    calls: list[float | None] = []

    async def read(request: PageRequest) -> tuple[PageResult, Timings]:
        calls.append(request.temperature)
        if request.temperature is None:
            return PageResult("".join(LOOP), "length", 300), Timings(1.0, 2.0, 1)
        raise RuntimeError("the server went away")

    request = PageRequest(Image.new("RGB", (8, 8)), "<image>\nFree OCR.", V2_MODES[0], Path("."))
    result, timings = asyncio.run(read_until_clean(read, request, None, 2, [0.2, 0.5], Metrics()))
    assert calls == [None, 0.2]
    assert (result.raw_text, result.attempts, result.repetition_cut) == (CUT, 1, True)
    assert (timings.queue_ms, timings.inference_ms) == (1.0, 2.0)
