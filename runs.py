"""Per-request working folders under DEEPSEEK_OCR_RUNS_DIR, named by the server, removed when done."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    id: str
    path: Path


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self) -> Run:
        run_id = uuid.uuid4().hex
        path = self.root / run_id
        path.mkdir(parents=True)
        return Run(run_id, path)

    def discard(self, run: Run) -> None:
        shutil.rmtree(run.path, ignore_errors=True)
