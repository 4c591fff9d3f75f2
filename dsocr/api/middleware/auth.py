"""API keys: with DEEPSEEK_OCR_API_KEYS (or _FILE) set, every /api/ route except artifact downloads needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`, checked before the upload is read. Keys are compared in
constant time and never logged: a request is known by its key's fingerprint, which also owns its history entries
and progress tasks."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dsocr.api.middleware.request_ids import error_body
from dsocr.api.middleware.root_path import route_path
from settings import SettingsError, key_problem

log = logging.getLogger("deepseek_ocr.auth")

PROTECTED_PREFIX = "/api/"
# Capability URLs: their run ids are 128-bit random, so that <img> tags work without a key.
OPEN_PREFIXES = ("/api/runs/",)
FINGERPRINT_CHARS = 12
# A comment after a key in the keys file: "#" after a space (a key itself may contain "#").
INLINE_COMMENT = re.compile(r"\s+#.*")


def read_keys_file(path: Path) -> list[str]:
    """The keys of a keys file: one a line; blank lines, `#` comment lines, comments after a key and a byte-order
    mark (Windows editors write one) left out. A key that could never match stops with SettingsError naming the
    file and the line, never the key; an unreadable file raises OSError."""
    where = f"DEEPSEEK_OCR_API_KEYS_FILE={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{where}: not UTF-8 text (byte {exc.start} cannot be read)") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = INLINE_COMMENT.sub("", line).strip()
        if not key or key.startswith("#"):
            continue
        problem = key_problem(key)
        if problem:
            raise SettingsError(f"{where}, line {number}: the key {problem}, so it could never match "
                                f"(one key a line; a comment starts with #)")
        keys.append(key)
    return keys


def fingerprint(key: str) -> str:
    """A short, stable name for a key that does not reveal it (for logs and ownership)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_CHARS]


class ApiKeys:
    """The accepted keys: from the setting, plus one per line of the keys file (re-read by `reload`, on SIGHUP)."""

    def __init__(self, keys: list[str], keys_file: str) -> None:
        self.listed = [key for key in keys if key]
        self.keys_file = Path(keys_file) if keys_file else None
        self.keys: list[bytes] = []
        self.reload()

    @property
    def enabled(self) -> bool:
        return bool(self.listed or self.keys_file)

    def reload(self) -> None:
        """Reads the keys file again; a file that cannot be read or has a bad key raises and changes nothing."""
        from_file = read_keys_file(self.keys_file) if self.keys_file is not None else []
        self.keys = [key.encode() for key in (*self.listed, *from_file)]
        if not self.enabled:  # no keys configured: the service is open, and says nothing of keys
            return
        log.info("API keys: %d accepted (%s)", len(self.keys), ", ".join(fingerprint(k.decode()) for k in self.keys))
        if not self.keys:
            log.warning("API keys: %s has none, so every /api/ request is refused until one is added (SIGHUP "
                        "re-reads it)", self.keys_file)

    def accepts(self, presented: str) -> bool:
        """Compared with every key in constant time: how long it takes says nothing of how close it came."""
        candidate = presented.encode()
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def client_owner(request: Request) -> str:
    """Who owns what this request creates: its key's fingerprint, or "" when keys are off."""
    return request.scope.get("state", {}).get("owner", "")


class ApiKeyMiddleware:
    """Refuses a protected request without a valid key with 401 before anything reads its body."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.api_keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if (scope["type"] != "http" or not self.api_keys.enabled or not path.startswith(PROTECTED_PREFIX)
                or path.startswith(OPEN_PREFIXES) or scope.get("method") == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        key = presented_key(Request(scope))
        if key is None or not self.api_keys.accepts(key):
            log.info("refused %s %r: %s", scope.get("method"), path,
                     "no API key" if key is None else f"unknown API key {fingerprint(key)}")
            detail = "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"
            if key is not None:
                detail = "The API key is not valid"
            scope["app"].state.metrics.failures.labels("unauthorized").inc()
            response = JSONResponse(error_body(detail), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = fingerprint(key)
        await self.app(scope, receive, send)
