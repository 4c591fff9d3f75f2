"""DEEPSEEK_OCR_ROOT_PATH: the prefix a proxy serves the service under, for servers started without uvicorn's
--root-path. Artifact URLs, the page's links, /docs and the OpenAPI document's server all start with it."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class RootPathMiddleware:
    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.root_path and not scope.get("root_path"):
            scope = {**scope, "root_path": self.root_path}
        await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path as the routes see it: without the root path, when a proxy (or uvicorn's --root-path) kept it in
    front. Middlewares that decide by path (API keys, metrics, the request line) must use this one."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    # Exactly what Starlette's router does (a root path of "/" or "/ocr/" leaves "//api/..." for it to match).
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path
