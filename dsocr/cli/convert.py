"""`python -m dsocr convert PATH... --out DIR`: every image and PDF under the paths converted to markdown, one job
per document, against a server or the service embedded in this process. Documents whose output is up to date
are skipped without contacting anyone, and jobs left unfinished by an earlier run are picked up (see ledger.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from dsocr.cli.display import Display, Report, display_for, plural, summary
from dsocr.cli.jobs_client import FINAL, JobsClient, RequestFailed
from dsocr.cli.ledger import Entry, Ledger
from dsocr.cli.outputs import write_outputs
from dsocr.cli.walking import STDIN, Found, Source, find_documents, output_bases, with_extension

# Refusals of the file itself (broken, too big, not a document, a bad field): sending it again changes nothing,
# so a later run does not, unless the file or the options change (or --force).
REFUSAL_STATUSES = frozenset({400, 413, 415, 422})
CONTENT_TYPES = {"pdf": "application/pdf", "image": "application/octet-stream"}  # the service reads the bytes
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C


@dataclass(frozen=True)
class Options:
    out: Path
    server: str | None
    api_key: str | None
    model: str | None
    fields: dict[str, str]  # the API's form fields: mode, prompt, pages
    concurrency: int
    json: bool
    figures: bool
    force: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        fields = {name: getattr(args, name) for name in ("mode", "prompt", "pages") if getattr(args, name)}
        return cls(Path(args.out), args.server, args.api_key, args.model, fields, args.concurrency, args.json,
                   args.figures, args.force)


@dataclass(frozen=True)
class Document:
    source: Source
    base: PurePosixPath  # the output's path below the output folder, without its extension

    @property
    def name(self) -> str:
        return str(self.source.path)

    def fingerprint(self) -> list[int]:
        """What tells one version of the input from another: its size and modification time."""
        stat = self.source.path.stat()
        return [stat.st_size, stat.st_mtime_ns]


def markdown_path(options: Options, base: PurePosixPath) -> Path:
    return options.out / with_extension(base, ".md")


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The command: finds the documents, converts what needs it, prints the summary; 1 when any failed."""
    options = Options.from_args(args)
    if options.server and options.model:
        print("--model is for a conversion without --server: the server reads with its own model", file=sys.stderr)
        return 2
    found = find_documents(args.paths, stdin if STDIN in args.paths else (), exclude=options.out)
    report = Report(ignored=[str(path) for path in found.ignored])
    ledger = Ledger(options.out)
    try:
        options.out.mkdir(parents=True, exist_ok=True)
        ledger.load()
    except OSError as exc:
        print(f"Cannot use {options.out} as the output folder: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    documents = plan(found, options, ledger, report)
    if documents:
        where = options.server or "the service in this process"
        print(f"Converting {plural(len(documents), 'document')} with {where} into {options.out} "
              f"({len(report.skipped)} up to date)", file=stdout, flush=True)
        display = display_for(stdout)
        try:
            asyncio.run(convert_documents(documents, options, ledger, display, report, stdout))
        except KeyboardInterrupt:
            report.interrupted = True
        except ServiceUnavailable as exc:
            print(f"Cannot convert: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            ledger.close()
    print(summary(report, str(options.out)), file=stdout, flush=True)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed else 0


def plan(found: Found, options: Options, ledger: Ledger, report: Report) -> list[Document]:
    """The documents to convert; the others go into the report (skipped, or failed before anything is sent)."""
    report.failed += [(str(path), f"cannot read it: {why}") for path, why in found.unreadable]
    bases, clashes = output_bases(found.sources)
    documents = []
    for source in found.sources:
        if source in clashes:
            clash = f"{clashes[source].path} has the same output; convert them apart"
            report.failed.append((str(source.path), clash))
            continue
        base = bases[source]
        document = Document(source, base)
        try:
            fingerprint = document.fingerprint()
        except OSError as exc:
            report.failed.append((document.name, f"cannot read it: {exc.strerror or exc}"))
            continue
        if not options.force:
            if up_to_date(document, fingerprint, options, ledger):
                report.skipped.append(document.name)
                continue
            reason = ledger.refusal(str(base), fingerprint, options.fields)
            if reason is not None:
                again = f"{reason}; refused by the server before, so not sent again (change the file, or use --force)"
                report.failed.append((document.name, again))
                continue
        documents.append(document)
    return documents


def up_to_date(document: Document, fingerprint: list[int], options: Options, ledger: Ledger) -> bool:
    """Every output asked for exists and the markdown is newer than the input; its last conversion, if recorded,
    read every page."""
    markdown = markdown_path(options, document.base)
    wanted = [markdown, markdown.with_suffix(".json")] if options.json else [markdown]
    try:
        if markdown.stat().st_mtime_ns <= fingerprint[1] or not all(path.exists() for path in wanted):
            return False
    except FileNotFoundError:
        return False
    return ledger.complete(str(document.base))


class ServiceUnavailable(Exception):
    """No service to convert with; the message says why."""


@asynccontextmanager
async def service(options: Options, stream: TextIO) -> AsyncIterator[tuple[str, str | None, asyncio.Task | None]]:
    """(URL, API key, a task done when the service stops or None) of the service to talk to: the one named, or
    the app embedded in this process."""
    if options.server:
        yield options.server, options.api_key, None
        return
    from dsocr.cli.embedded import ServiceFailed, embedded_service

    try:
        async with embedded_service(options.model, stream) as embedded:
            yield embedded.url, embedded.api_key, embedded.stopped
    except ServiceFailed as exc:
        raise ServiceUnavailable(str(exc)) from None


async def convert_documents(documents: list[Document], options: Options, ledger: Ledger, display: Display,
                            report: Report, stream: TextIO) -> None:
    async with service(options, stream) as (url, api_key, stopped):
        client = JobsClient(url, api_key)
        conversion = Conversion(options, ledger, client, display, report)
        display.start(len(documents))
        work = asyncio.ensure_future(asyncio.gather(*(conversion.convert(document) for document in documents)))
        try:
            await asyncio.wait([work] if stopped is None else [work, stopped], return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()  # a bug's exception is raised, not swallowed
            else:  # the embedded service stopped first (a signal, a fatal error)
                report.interrupted = True
        finally:
            if not work.done():  # interrupted (Ctrl-C) or the service gone: the jobs submitted stay in the ledger
                work.cancel()
                await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # seen: a cancelled gathering ends with an exception of its own
            display.stop()
            await client.close()


class Conversion:
    """Converts documents one job each, at most `concurrency` at a time; what happens goes into the report."""

    def __init__(self, options: Options, ledger: Ledger, client: JobsClient, display: Display,
                 report: Report) -> None:
        self.options = options
        self.ledger = ledger
        self.client = client
        self.display = display
        self.report = report
        self.slots = asyncio.Semaphore(options.concurrency)
        self.stopped: str | None = None  # once a failure would be every document's, the rest is not tried

    async def convert(self, document: Document) -> None:
        async with self.slots:
            if self.stopped is not None:
                self._failed(document, f"not sent: {self.stopped}")
                return
            try:
                await self._convert(document)
            except RequestFailed as exc:
                if exc.fatal:
                    self.stopped = str(exc)
                self._failed(document, str(exc))
            except OSError as exc:  # the ledger could not be written: no other document could be recorded either
                self.stopped = f"cannot write {exc.filename or self.ledger.path}: {exc.strerror or exc}"
                self._failed(document, self.stopped)

    async def _convert(self, document: Document) -> None:
        try:
            fingerprint = document.fingerprint()
        except OSError as exc:
            self._failed(document, f"cannot read it: {exc.strerror or exc}")
            return
        entry, view = await self._job(document, fingerprint)
        pages = PageCount(self.display, view["pagesTotal"])
        pages.update(view)
        if view["status"] not in FINAL:
            view = await self.client.follow(view["jobId"], pages.update)
        status = view["status"]
        answer = self._document_answer(await self.client.result(view["jobId"]))
        target = markdown_path(self.options, document.base)
        if answer.get("pages"):
            try:
                await write_outputs(target, answer, self.options.json, self.options.figures, self.client.download)
            except OSError as exc:
                self._failed(document, f"cannot write {exc.filename or target}: {exc.strerror or exc}")
                return
        self.ledger.finished(entry, status)
        if status == "succeeded":
            self.report.converted.append(document.name)
            self.report.pages += len(answer["pages"])
            self.display.done(document.name, f"converted, {plural(len(answer['pages']), 'page')} -> {target}")
        else:
            self._failed(document, failure_reason(view, answer, target))

    async def _job(self, document: Document, fingerprint: list[int]) -> tuple[Entry, dict[str, Any]]:
        """The document's job: the one an earlier run submitted, when the server still has it, else a new one.
        The ledger hears of a submission before it is sent, so that a run stopped at any point leaves the key
        that finds the job again."""
        output = str(document.base)
        entry = None if self.options.force else self.ledger.pending(output, fingerprint, self.options.fields)
        if entry is not None and entry.job_id is not None:
            view = await self.client.job(entry.job_id)
            if view is not None:
                return entry, view
            entry = None  # expired or removed there, or another server: submitted again
        if entry is None:
            entry = self.ledger.submitting(output, fingerprint, self.options.fields)
        source = document.source
        try:
            accepted = await self.client.submit(source.path, source.path.name, CONTENT_TYPES[source.kind],
                                                self.options.fields, entry.key)
        except RequestFailed as exc:
            if exc.status in REFUSAL_STATUSES:
                self.ledger.refused(entry, str(exc))
            raise
        self.ledger.submitted(entry, accepted["jobId"])
        return entry, accepted

    @staticmethod
    def _document_answer(result: dict[str, Any]) -> dict[str, Any]:
        documents = result.get("documents") or []
        if len(documents) != 1:
            raise RequestFailed(f"the job's result has {len(documents)} documents where 1 was sent")
        return documents[0]

    def _failed(self, document: Document, reason: str) -> None:
        self.report.failed.append((document.name, reason))
        self.display.done(document.name, f"failed: {reason}")


class PageCount:
    """Turns the job's page counts, as polling sees them, into the display's progress."""

    def __init__(self, display: Display, total: int) -> None:
        self.display = display
        self.seen = 0
        display.add_pages(total)

    def update(self, view: dict[str, Any]) -> None:
        finished = view.get("pagesDone", 0) + view.get("pagesFailed", 0)
        if finished > self.seen:
            self.display.pages_done(finished - self.seen)
            self.seen = finished


def failure_reason(view: dict[str, Any], answer: dict[str, Any], target: Path) -> str:
    """One sentence for a job that did not read every page: the first page error, and what was written."""
    errors = answer.get("errors") or []
    first = f"page {errors[0].get('page')}: {errors[0].get('error')}" if errors else view.get("error") or ""
    if view["status"] == "cancelled":
        return "its job was cancelled on the server"
    if view["status"] == "partial":
        return (f"{len(errors)} of {view['pagesTotal']} pages failed ({first}); the pages read are in {target}, "
                "and the next run converts it again")
    return first or "its job failed"
