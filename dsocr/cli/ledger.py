"""The conversion's own record, `OUT/.dsocr-jobs.jsonl`: one line when a document is about to be submitted, one
when its job is known, one when its output is written or its failure recorded. A run that stops anywhere in
between leaves what the next run needs to re-attach to the job instead of submitting the document again."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsocr.cli.outputs import write_atomically

LEDGER_NAME = ".dsocr-jobs.jsonl"
# Outcomes after which an output stands as it is; after any other the document is converted again.
COMPLETE = frozenset({"succeeded"})
REFUSED = "refused"
# The record is rewritten with each output's latest submission only once it holds this many times more lines than
# that (plus some slack): it stays small however often a folder is converted again.
COMPACT_RATIO = 4
COMPACT_SLACK = 1000


@dataclass
class Entry:
    """One submission of one document (by its output path, relative to the output folder)."""

    output: str
    key: str  # the Idempotency-Key it was (or is about to be) submitted with
    fingerprint: list[int]  # the input's [size, mtime_ns] when it was submitted
    options: dict[str, str]
    job_id: str | None = None
    outcome: str | None = None  # the job's final status once its output is written or its failure recorded;
    # "refused" when the server refused the file itself (broken, too big, not a document)
    reason: str | None = None  # why it was refused


class Ledger:
    def __init__(self, folder: Path) -> None:
        self.path = folder / LEDGER_NAME
        self.latest: dict[str, Entry] = {}  # by output path: the latest submission
        self.by_key: dict[str, Entry] = {}
        self._file: Any = None

    def load(self) -> None:
        """Reads the record left by earlier runs. A line cut short (the process killed while writing it) and
        lines of unknown shape are passed over: at worst a document is submitted again under a new key."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = json.loads(line)
                self._apply(record)
            except (ValueError, KeyError, TypeError):
                continue
        if len(lines) > COMPACT_RATIO * len(self.latest) + COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        """The latest submission of each output, as the lines that made it, replacing the whole record at once."""
        lines = []
        for entry in self.latest.values():
            lines.append(_submitting(entry))
            if entry.job_id is not None:
                lines.append({"event": "submitted", "key": entry.key, "jobId": entry.job_id})
            if entry.outcome is not None:
                lines.append({"event": "finished", "key": entry.key, "jobId": entry.job_id, "status": entry.outcome,
                              "reason": entry.reason})
        write_atomically(self.path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode())
        self.by_key = {entry.key: entry for entry in self.latest.values()}

    def _apply(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "submitting":
            entry = Entry(str(record["output"]), str(record["key"]), list(record["fingerprint"]),
                          dict(record["options"]))
            self.latest[entry.output] = entry
            self.by_key[entry.key] = entry
        elif event == "submitted":
            self.by_key[record["key"]].job_id = str(record["jobId"])
        elif event == "finished":
            entry = self.by_key[record["key"]]
            entry.outcome = str(record["status"])
            entry.reason = record.get("reason")

    def pending(self, output: str, fingerprint: list[int], options: dict[str, str]) -> Entry | None:
        """The unfinished submission of this output for the same input and options, if any."""
        entry = self.latest.get(output)
        if entry is None or entry.outcome is not None:
            return None
        return entry if entry.fingerprint == fingerprint and entry.options == options else None

    def refusal(self, output: str, fingerprint: list[int], options: dict[str, str]) -> str | None:
        """Why the server refused this very file with these options, if it did: sending it again would only be
        refused again."""
        entry = self.latest.get(output)
        if entry is None or entry.outcome != REFUSED:
            return None
        return entry.reason if entry.fingerprint == fingerprint and entry.options == options else None

    def complete(self, output: str) -> bool:
        """Whether the output's latest submission, if any, ended with every page read: a partial output is
        converted again on the next run, though it exists."""
        entry = self.latest.get(output)
        return entry is None or entry.outcome is None or entry.outcome in COMPLETE

    def submitting(self, output: str, fingerprint: list[int], options: dict[str, str]) -> Entry:
        entry = Entry(output, uuid.uuid4().hex, fingerprint, options)
        self._write(_submitting(entry))
        self.latest[output] = entry
        self.by_key[entry.key] = entry
        return entry

    def submitted(self, entry: Entry, job_id: str) -> None:
        entry.job_id = job_id
        self._write({"event": "submitted", "key": entry.key, "jobId": job_id})

    def finished(self, entry: Entry, status: str) -> None:
        entry.outcome = status
        self._write({"event": "finished", "key": entry.key, "jobId": entry.job_id, "status": status})

    def refused(self, entry: Entry, reason: str) -> None:
        entry.outcome, entry.reason = REFUSED, reason
        self._write({"event": "finished", "key": entry.key, "status": REFUSED, "reason": reason})

    def _write(self, record: dict[str, Any]) -> None:
        """One whole line, on disk before the request it announces is sent (flushed and synced)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut_short = _ends_mid_line(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
            if cut_short:  # by a killed run: our first line starts on a line of its own
                self._file.write("\n")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _submitting(entry: Entry) -> dict[str, Any]:
    return {"event": "submitting", "output": entry.output, "key": entry.key, "fingerprint": entry.fingerprint,
            "options": entry.options}


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            if file.seek(0, os.SEEK_END) == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except FileNotFoundError:
        return False
