"""One OCR request's work once its input is checked: its run folder, its pages read, its result kept in the
history, its progress task told each step."""

from __future__ import annotations

import asyncio
import logging

from dsocr.serving.workers import in_worker
from dsocr.store.changes import in_store
from dsocr.store.history import HistoryStore, new_entry_id
from dsocr.pipeline.ocr_request import OcrInput
from dsocr.pipeline.pages import EventSink, read_document
from dsocr.pipeline.progress import TaskReporter
from dsocr.pipeline.runs import RunStore
from dsocr.serving.submitter import PageSubmitter
from schemas import OcrResponse

log = logging.getLogger("deepseek_ocr")

# The longest an answer waits for the history to keep its result.
HISTORY_WRITE_WAIT_S = 3.0


async def convert(
    ocr: OcrInput, submitter: PageSubmitter, runs: RunStore, history: HistoryStore | None,
    reporter: TaskReporter, previews: bool, on_event: EventSink | None = None, owner: str = "", root_path: str = "",
) -> OcrResponse:
    """Reads the document in a run folder of its own (kept when it holds artifacts, removed on failure), and
    keeps the result in the history. `on_event` hears the pipeline's events, the raw text as it is generated
    included. Artifact URLs start with `root_path`."""
    run = runs.create(root_path)
    reporter.pages(len(ocr.document.numbers))

    def on_pipeline_event(name: str, data: dict) -> None:
        reporter.event(name, data)
        if on_event:
            on_event(name, data)

    try:
        response = await read_document(
            ocr, submitter, run, on_pipeline_event, previews, stream_text=on_event is not None
        )
        reporter.postprocessing()
        await in_worker(runs.keep, run)
    except OSError as exc:  # the run's folders and artifacts: a full disk is a 507 naming the runs folder
        runs.discard(run)
        failure = runs.write_failed(exc)
        if failure is exc:
            raise
        raise failure from None
    except BaseException:
        runs.discard(run)
        raise
    response = await remember(history, response, owner)
    reporter.complete()
    return response


async def remember(history: HistoryStore | None, response: OcrResponse, owner: str = "") -> OcrResponse:
    """The result with its `historyId`, once kept; a history that cannot be written (or not within
    HISTORY_WRITE_WAIT_S: a locked or slow database) never fails or holds up the answer, which then names no
    history id. A request that ends meanwhile (its deadline, its client gone), or a write that comes too late,
    leaves no entry: nobody got that id."""
    if history is None:
        return response
    entry_id = new_entry_id()
    kept = response.model_copy(update={"history_id": entry_id})
    adding = asyncio.ensure_future(in_store(history.add, entry_id, kept.model_dump(by_alias=True), owner))

    def forget(_: asyncio.Future) -> None:
        asyncio.ensure_future(in_store(history.remove, entry_id))

    try:
        stored = await asyncio.wait_for(asyncio.shield(adding), HISTORY_WRITE_WAIT_S)
    except asyncio.CancelledError:
        adding.add_done_callback(forget)
        raise
    except asyncio.TimeoutError:
        log.warning("the history did not take the result within %g s; answered without a history id",
                    HISTORY_WRITE_WAIT_S)
        adding.add_done_callback(forget)
        return response
    except Exception as exc:
        log.warning("could not keep the result in the history: %s", getattr(exc, "detail", exc))
        return response
    return kept if stored else response
