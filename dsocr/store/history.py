"""Finished OCR results kept for the history, in the database (every replica sees them): per API key at most
DEEPSEEK_OCR_HISTORY_MAX entries and DEEPSEEK_OCR_HISTORY_MAX_MB, all keys together at most
DEEPSEEK_OCR_HISTORY_TOTAL_MB (taken from the largest consumer first), each for DEEPSEEK_OCR_HISTORY_TTL_S; the
oldest go first. One key filling its history never evicts another key's results. Calls are synchronous: made
from the store's threads."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select

from dsocr.store import schema as s
from dsocr.store.database import Database

log = logging.getLogger("deepseek_ocr.history")

ENTRY_ID = re.compile(r"[0-9a-f]{32}")
# Before the database, the history was a SQLite index in DEEPSEEK_OCR_HISTORY_DIR plus a JSON file per result.
LEGACY_INDEX = "history.sqlite3"
LEGACY_IMPORTED = "history.sqlite3.imported"


def new_entry_id() -> str:
    """128 random bits: history ids are not guessable."""
    return uuid.uuid4().hex


class HistoryStore:
    def __init__(self, database: Database, folder: Path, max_entries: int, ttl_s: float, max_bytes: int,
                 total_bytes: int | None = None) -> None:
        self.db = database
        self.folder = folder  # where an older version kept the history: imported once, at open
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.total_bytes = total_bytes if total_bytes is not None else max_bytes

    def open(self) -> None:
        """Imports the history an older version kept in DEEPSEEK_OCR_HISTORY_DIR (once: the old index is renamed
        afterwards, its result files removed), then prunes."""
        legacy = self.folder / LEGACY_INDEX
        if legacy.is_file():
            imported = self._import(legacy)
            log.info("history: %d entries imported from %s into the database", imported, legacy)
        self.prune()

    def close(self) -> None:
        """Nothing to close: the database is the service's."""

    def add(self, entry_id: str, result: dict[str, Any], owner: str = "") -> bool:
        """Keeps `result` (/api/ocr's JSON) under `entry_id`, seen only by `owner` (an API key's fingerprint; ""
        without keys). Returns False when it cannot be kept (larger than the per-key cap): the answer then names
        no history id."""
        content = json.dumps(result, ensure_ascii=False)
        size = len(content.encode("utf-8"))
        if size > self.max_bytes or size > self.total_bytes:
            return False
        with self.db.write() as c:
            c.execute(insert(s.history).values(
                id=entry_id, owner=owner, created=time.time(), created_at=result["createdAt"],
                file_name=result["fileName"], file_size=result["fileSize"], mode=result["mode"],
                duration_ms=result["durationMs"], pages=len(result["pages"]), is_pdf=bool(result["isPdf"]),
                bytes=size, result=content,
            ))
            self._prune(c, owner)
            kept = c.execute(select(s.history.c.id).where(s.history.c.id == entry_id)).scalar() is not None
        return kept

    def remove(self, entry_id: str) -> None:
        with self.db.write() as c:
            c.execute(delete(s.history).where(s.history.c.id == entry_id))

    def list(self, limit: int, owner: str = "") -> list[dict[str, Any]]:
        """`owner`'s newest `limit` entries, newest first."""
        h = s.history.c
        with self.db.read() as c:
            rows = c.execute(
                select(h.id, h.created_at, h.file_name, h.file_size, h.mode, h.duration_ms, h.pages, h.is_pdf)
                .where(h.owner == owner, h.created >= self._cutoff()).order_by(h.created.desc()).limit(limit)
            ).all()
        keys = ("id", "createdAt", "fileName", "fileSize", "mode", "durationMs", "pages", "isPdf")
        return [{**dict(zip(keys, row)), "isPdf": bool(row[-1])} for row in rows]

    def get(self, entry_id: str, owner: str = "") -> dict[str, Any] | None:
        """The stored result, or None for an unknown, malformed or expired id, or another owner's."""
        if not ENTRY_ID.fullmatch(entry_id):
            return None
        h = s.history.c
        with self.db.read() as c:
            content = c.execute(select(h.result).where(h.id == entry_id, h.owner == owner,
                                                       h.created >= self._cutoff())).scalar()
        return json.loads(content) if content is not None else None

    def prune(self) -> None:
        """Removes expired entries, then whatever is over the caps (see `_prune`), for every owner."""
        with self.db.write() as c:
            c.execute(delete(s.history).where(s.history.c.created < self._cutoff()))
            for owner in list(c.execute(select(s.history.c.owner).distinct()).scalars()):
                self._prune(c, owner)

    def _prune(self, c: Any, owner: str) -> None:
        """`owner`'s oldest entries beyond its caps (count, then bytes); then, while all owners together hold more
        than the total, the oldest entry of whoever holds the most bytes."""
        h = s.history.c
        rows = c.execute(select(h.id, h.bytes).where(h.owner == owner).order_by(h.created.desc())).all()
        doomed, total = [], 0
        for number, (entry_id, size) in enumerate(rows):
            total += size
            if number >= self.max_entries or total > self.max_bytes:
                doomed.append(entry_id)
        if doomed:
            c.execute(delete(s.history).where(h.id.in_(doomed)))
        while (c.execute(select(func.coalesce(func.sum(h.bytes), 0))).scalar() or 0) > self.total_bytes:
            largest = c.execute(select(h.owner).group_by(h.owner).order_by(func.sum(h.bytes).desc()).limit(1)).scalar()
            oldest = c.execute(select(h.id).where(h.owner == largest).order_by(h.created).limit(1)).scalar()
            if oldest is None:
                break
            c.execute(delete(s.history).where(h.id == oldest))

    def _cutoff(self) -> float:
        return time.time() - self.ttl_s

    def _import(self, legacy: Path) -> int:
        """Copies the old index's entries with their result files; renames the old index so that it is read once."""
        old = sqlite3.connect(legacy)
        try:
            columns = {row[1] for row in old.execute("PRAGMA table_info(entries)")}
            owner = "owner" if "owner" in columns else "''"
            rows = old.execute(f"SELECT id, created, {owner} FROM entries").fetchall()
        finally:
            old.close()
        imported = 0
        for entry_id, created, entry_owner in rows:
            result_file = self.folder / "results" / f"{entry_id}.json"
            try:
                content = result_file.read_text(encoding="utf-8")
                result = json.loads(content)
            except (OSError, ValueError):
                continue  # an entry whose result was lost: nothing to show
            with self.db.write() as c:
                if c.execute(select(s.history.c.id).where(s.history.c.id == entry_id)).scalar():
                    continue
                c.execute(insert(s.history).values(
                    id=entry_id, owner=entry_owner or "", created=created, created_at=result["createdAt"],
                    file_name=result["fileName"], file_size=result["fileSize"], mode=result["mode"],
                    duration_ms=result["durationMs"], pages=len(result["pages"]), is_pdf=bool(result["isPdf"]),
                    bytes=len(content.encode("utf-8")), result=content,
                ))
            imported += 1
        # The old files stay (nothing is destroyed); the renamed index is not read again.
        legacy.rename(self.folder / LEGACY_IMPORTED)
        log.info("history: the old files in %s are no longer used and may be removed", self.folder)
        return imported
