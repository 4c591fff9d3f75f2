"""Finished OCR results kept for the history: a SQLite index of what was read, plus each result's JSON file,
at most DEEPSEEK_OCR_HISTORY_MAX entries and DEEPSEEK_OCR_HISTORY_MAX_MB for DEEPSEEK_OCR_HISTORY_TTL_S (oldest
removed first)."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("deepseek_ocr.history")

ENTRY_ID = re.compile(r"[0-9a-f]{32}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    created_at TEXT NOT NULL,
    file_name TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    mode TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    pages INTEGER NOT NULL,
    is_pdf INTEGER NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT ''
);
"""
# Columns added since the first version, for databases made by it.
ADDED_COLUMNS = {"bytes": "INTEGER NOT NULL DEFAULT 0", "owner": "TEXT NOT NULL DEFAULT ''"}
INDEXES = """
CREATE INDEX IF NOT EXISTS entries_by_age ON entries (created);
CREATE INDEX IF NOT EXISTS entries_by_owner ON entries (owner, created);
"""
LIST_COLUMNS = "id, created_at, file_name, file_size, mode, duration_ms, pages, is_pdf"


def new_entry_id() -> str:
    """128 random bits: history ids are not guessable."""
    return uuid.uuid4().hex


class HistoryStore:
    """Thread-safe (one connection behind a lock): called from worker threads, never on the event loop."""

    def __init__(self, folder: Path, max_entries: int, ttl_s: float, max_bytes: int | None = None) -> None:
        self.folder = folder
        self.results = folder / "results"
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / "history.sqlite3", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        present = {row[1] for row in self.db.execute("PRAGMA table_info(entries)")}
        for column, declaration in ADDED_COLUMNS.items():
            if column not in present:
                self.db.execute(f"ALTER TABLE entries ADD COLUMN {column} {declaration}")
        self.db.executescript(INDEXES)
        self.prune()

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None

    def add(self, entry_id: str, result: dict[str, Any], owner: str = "") -> None:
        """Keeps `result` (/api/ocr's JSON) under `entry_id`, seen only by `owner` (an API key's fingerprint; ""
        without keys); the file is written before the index row, so that a listed entry always has its result."""
        target = self._result_file(entry_id)
        temporary = target.with_suffix(".tmp")
        content = json.dumps(result, ensure_ascii=False).encode("utf-8")
        try:
            temporary.write_bytes(content)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)  # a write that failed half-way leaves nothing
        row = (entry_id, time.time(), result["createdAt"], result["fileName"], result["fileSize"], result["mode"],
               result["durationMs"], len(result["pages"]), int(result["isPdf"]), len(content), owner)
        try:
            with self.lock:
                self._db().execute(
                    "INSERT INTO entries (id, created, created_at, file_name, file_size, mode, duration_ms, pages, "
                    "is_pdf, bytes, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.prune()

    def remove(self, entry_id: str) -> None:
        with self.lock:
            self._db().execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        self._result_file(entry_id).unlink(missing_ok=True)

    def list(self, limit: int, owner: str = "") -> list[dict[str, Any]]:
        """`owner`'s newest `limit` entries, newest first."""
        with self.lock:
            rows = self._db().execute(
                f"SELECT {LIST_COLUMNS} FROM entries WHERE owner = ? AND created >= ? ORDER BY created DESC LIMIT ?",
                (owner, self._cutoff(), limit),
            ).fetchall()
        keys = ("id", "createdAt", "fileName", "fileSize", "mode", "durationMs", "pages", "isPdf")
        return [{**dict(zip(keys, row)), "isPdf": bool(row[-1])} for row in rows]

    def get(self, entry_id: str, owner: str = "") -> dict[str, Any] | None:
        """The stored result, or None for an unknown, malformed or expired id, or another owner's."""
        if not ENTRY_ID.fullmatch(entry_id):
            return None
        with self.lock:
            row = self._db().execute(
                "SELECT 1 FROM entries WHERE id = ? AND owner = ? AND created >= ?", (entry_id, owner, self._cutoff())
            ).fetchone()
        if row is None:
            return None
        try:
            return json.loads(self._result_file(entry_id).read_text(encoding="utf-8"))
        except FileNotFoundError:  # removed by a prune since the query
            return None

    def prune(self) -> None:
        """Removes expired entries, then the oldest beyond the caps (entries, then bytes)."""
        with self.lock:
            db = self._db()
            doomed = db.execute(
                "SELECT id FROM entries WHERE created < ? UNION "
                "SELECT id FROM (SELECT id FROM entries ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (self._cutoff(), self.max_entries),
            ).fetchall()
            if self.max_bytes is not None:
                doomed += self._over_size(db, {entry_id for (entry_id,) in doomed})
            if not doomed:
                return
            db.executemany("DELETE FROM entries WHERE id = ?", doomed)
        for (entry_id,) in doomed:
            self._result_file(entry_id).unlink(missing_ok=True)

    def _over_size(self, db: sqlite3.Connection, doomed: set[str]) -> list[tuple[str]]:
        """The oldest entries (beyond those already doomed) whose removal brings the total under `max_bytes`."""
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM entries").fetchone()[0]
        over = []
        for entry_id, size in db.execute("SELECT id, bytes FROM entries ORDER BY created"):
            if total <= self.max_bytes:
                break
            total -= size
            if entry_id not in doomed:
                over.append((entry_id,))
        return over

    def _db(self) -> sqlite3.Connection:
        if self.db is None:
            raise RuntimeError("the history store is not open")
        return self.db

    def _cutoff(self) -> float:
        return time.time() - self.ttl_s

    def _result_file(self, entry_id: str) -> Path:
        return self.results / f"{entry_id}.json"
