"""Per-request folders under DEEPSEEK_OCR_RUNS_DIR, named by the server: a finished run's artifacts are kept for
DEEPSEEK_OCR_RUN_TTL_S within DEEPSEEK_OCR_RUNS_MAX_MB (oldest removed first); anything else goes at once."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dsocr.errors import StorageFull

log = logging.getLogger("deepseek_ocr.runs")

RUN_ID = re.compile(r"[0-9a-f]{32}")
# Artifacts lie at most pages/N/images/K.jpg deep: deeper paths are refused before touching the disk.
MAX_ARTIFACT_DEPTH = 8
# The errors of a write that found no space: a full disk, or a full quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Once a write found no space, readiness writes this much to see whether space is back (a figure crop's order).
SPACE_PROBE_BYTES = 64 * 1024


class RunsDirError(Exception):
    """DEEPSEEK_OCR_RUNS_DIR cannot be used; the message names it."""


@dataclass(frozen=True)
class Run:
    id: str
    path: Path
    root_path: str = ""  # the prefix a proxy serves the service under (DEEPSEEK_OCR_ROOT_PATH, --root-path)

    def url(self, relative: str) -> str:
        """The URL, from the server root, at which an artifact of this run is served."""
        return f"{self.root_path}/api/runs/{self.id}/{relative}"


class RunStore:
    def __init__(self, root: Path, ttl_s: float, max_bytes: int) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.active: set[str] = set()  # runs whose request is still going: never swept
        self.sweeping = threading.Lock()
        self.full: str | None = None  # why writes fail for want of space, until a probe finds space again

    def prepare(self) -> None:
        """Makes the runs folder and proves it writable, or says which setting to fix."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise RunsDirError(
                f"DEEPSEEK_OCR_RUNS_DIR={str(self.root)!r} is not a writable folder ({exc.strerror or exc}): "
                "point it at one the service may write to"
            ) from None
        self.sweep()

    def create(self, root_path: str = "") -> Run:
        run_id = uuid.uuid4().hex
        path = self.root / run_id
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise self.write_failed(exc) from None
        self.active.add(run_id)
        return Run(run_id, path, root_path.rstrip("/"))

    def discard(self, run: Run) -> None:
        self.active.discard(run.id)
        shutil.rmtree(run.path, ignore_errors=True)

    def keep(self, run: Run) -> None:
        """A finished run: its artifacts are kept for the TTL, counted from now, within the size cap; a run
        without artifacts (its empty page folders aside) leaves nothing."""
        # Still active meanwhile, so that no sweep (of another request, or the periodic one) touches it.
        _remove_empty_folders(run.path)
        if run.path.exists():
            os.utime(run.path)
        self.active.discard(run.id)
        if run.path.exists():
            self.sweep()

    def write_failed(self, exc: OSError) -> Exception:
        """What a failed write into the runs folder becomes: with no space left (disk or quota), a 507 naming the
        folder, which readiness reports until space is back; anything else stays as it was."""
        if exc.errno not in NO_SPACE:
            return exc
        if self.full is None:
            log.error("the runs folder %s is full (%s): requests fail with 507 until space is freed", self.root,
                      os.strerror(exc.errno))
        self.full = (f"The runs folder (DEEPSEEK_OCR_RUNS_DIR={str(self.root)!r}) is full: {os.strerror(exc.errno)}; "
                     "free space on its disk (or lower DEEPSEEK_OCR_RUNS_MAX_MB)")
        return StorageFull(self.full)

    def space_problem(self) -> str | None:
        """None while runs can be written; else why not. Only after a write found no space: then a small write
        says whether space is back. Blocking: call it off the event loop."""
        if self.full is None:
            return None
        probe = self.root / f".space-test-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(bytes(SPACE_PROBE_BYTES))
        except OSError as exc:
            if exc.errno in NO_SPACE:
                return self.full
        finally:
            probe.unlink(missing_ok=True)
        log.info("the runs folder %s has space again", self.root)
        self.full = None
        return None

    def artifact(self, run_id: str, relative: str) -> Path | None:
        """The file `relative` inside run `run_id`, or None for anything else (other runs, traversal, folders)."""
        if not RUN_ID.fullmatch(run_id) or "\x00" in relative or relative.count("/") > MAX_ARTIFACT_DEPTH:
            return None
        folder = (self.root / run_id).resolve()
        candidate = (folder / relative).resolve()
        if not candidate.is_relative_to(folder) or not candidate.is_file():
            return None
        if self._expired(folder):
            return None
        return candidate

    def sweep(self) -> None:
        """Removes expired runs, then the oldest ones while the store is over its size cap. One sweep at a time:
        requests finishing together and the periodic sweeper all call it."""
        with self.sweeping:
            self._sweep()

    def _sweep(self) -> None:
        runs = []
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if not (folder.is_dir() and RUN_ID.fullmatch(folder.name)) or folder.name in self.active:
                continue
            if self._expired(folder):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                runs.append((folder.stat().st_mtime, _size(folder), folder))
            except FileNotFoundError:  # discarded by its request meanwhile
                continue
        total = sum(size for _, size, _ in runs)
        for _, size, folder in sorted(runs):
            if total <= self.max_bytes:
                break
            log.info("runs dir over DEEPSEEK_OCR_RUNS_MAX_MB: removing %s", folder.name)
            shutil.rmtree(folder, ignore_errors=True)
            total -= size

    def _expired(self, folder: Path) -> bool:
        try:
            return time.time() - folder.stat().st_mtime > self.ttl_s
        except FileNotFoundError:
            return True


def _size(folder: Path) -> int:
    total = 0
    for entry in folder.rglob("*"):
        try:
            if entry.is_file():
                total += entry.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _remove_empty_folders(folder: Path) -> None:
    """Removes the empty folders under `folder`, deepest first, and `folder` itself if it ends up empty."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            try:
                path.rmdir()
            except OSError:  # not empty
                pass
    try:
        folder.rmdir()
    except OSError:
        pass
