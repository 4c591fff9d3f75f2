"""What a person sees while a conversion runs: a progress bar on a terminal (documents and pages done, pages per
second, time left; rich draws it), one plain line per document otherwise; and the summary at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, Task, TaskID


@dataclass
class Report:
    """The run's outcome, document by document (named as the person gave them)."""

    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (document, one reason)
    ignored: list[str] = field(default_factory=list)  # neither an image nor a PDF
    pages: int = 0  # pages read for the converted documents
    interrupted: bool = False


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(report: Report, out_dir: str) -> str:
    converted = f"Converted {plural(len(report.converted), 'document')} ({plural(report.pages, 'page')}) into {out_dir}"
    text = f"{converted}, skipped {len(report.skipped)} (up to date), failed {len(report.failed)}"
    if len(report.ignored) == 1:
        text += "; ignored 1 file that is neither an image nor a PDF"
    elif report.ignored:
        text += f"; ignored {len(report.ignored)} files that are neither images nor PDFs"
    lines = [text + "."]
    if report.interrupted:
        lines.append("Interrupted: run the same command again to finish; what is written stays, and the jobs the "
                     "server still has are picked up, not submitted again.")
    if report.failed:
        lines.append("Failed:")
        lines += [f"  {name}: {reason}" for name, reason in report.failed]
    return "\n".join(lines)


class Display(Protocol):
    def start(self, documents: int) -> None: ...
    def add_pages(self, count: int) -> None: ...
    def pages_done(self, count: int) -> None: ...
    def done(self, name: str, outcome: str) -> None: ...
    def stop(self) -> None: ...


class PlainLines:
    """For logs and pipes: one line per finished document, none in between."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.documents = 0
        self.finished = 0

    def start(self, documents: int) -> None:
        self.documents = documents

    def add_pages(self, count: int) -> None:
        pass

    def pages_done(self, count: int) -> None:
        pass

    def done(self, name: str, outcome: str) -> None:
        self.finished += 1
        print(f"[{self.finished}/{self.documents}] {name}: {outcome}", file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class ProgressBar:
    """For a terminal: two bars, documents (with the time left) and pages (with pages per second); the pages'
    total grows as documents are submitted, since a PDF's page count is known once the server has opened it.
    Failures are printed above the bars as they happen."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress: Progress = Progress(
            TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(), console=Console(file=stream), transient=False,
        )
        self.documents: TaskID | None = None
        self.pages: TaskID | None = None

    def start(self, documents: int) -> None:
        self.progress.start()
        self.documents = self.progress.add_task("documents", total=documents, rate="")
        self.pages = self.progress.add_task("pages", total=0, rate="")

    def add_pages(self, count: int) -> None:
        assert self.pages is not None
        task = self._task(self.pages)
        self.progress.update(self.pages, total=(task.total or 0) + count)

    def pages_done(self, count: int) -> None:
        assert self.pages is not None
        self.progress.advance(self.pages, count)
        speed = self._task(self.pages).speed
        self.progress.update(self.pages, rate=f"{speed:.2f} pages/s" if speed else "")

    def done(self, name: str, outcome: str) -> None:
        assert self.documents is not None
        if outcome.startswith("failed"):
            self.progress.console.print(f"{name}: {outcome}", markup=False, highlight=False)
        self.progress.advance(self.documents)

    def stop(self) -> None:
        self.progress.stop()

    def _task(self, task_id: TaskID) -> Task:
        return next(task for task in self.progress.tasks if task.id == task_id)


def display_for(stream: TextIO) -> Display:
    """The bar on a terminal, plain lines anywhere else."""
    return ProgressBar(stream) if stream.isatty() else PlainLines(stream)
