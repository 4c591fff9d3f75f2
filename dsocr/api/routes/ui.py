"""The page at / (plain HTML, CSS and JavaScript in dsocr/ui) and the API docs with locally served assets.

The page uses relative URLs only (`ui/app.js`, `api/modes`), so it works behind a proxy's path prefix. Its files
are served under /ui/; the vendored libraries (dsocr/ui/vendor, folders named after their exact versions) are
cached for good, the page's own files are revalidated (ETag) on each load. /docs is Swagger UI from
dsocr/ui/vendor as well, so the API docs work without internet. `DEEPSEEK_OCR_UI=false` turns the page off
(`/` and its files are 404); /docs stays.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from dsocr.errors import NotFound

router = APIRouter()

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
SWAGGER_DIR = "vendor/swagger-ui-dist-5.35.0"

# Explicit types, whatever the host's mime.types says; anything else (LICENSE, VERSIONS) is plain text.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
PLAIN_TEXT = "text/plain; charset=utf-8"
# Vendored files never change under their versioned folder; the page's own files change with the service.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The page runs only its own files; model output is sanitized before it is shown, and this is the second line:
# no inline or foreign script, no foreign images (a tracking pixel in model output), nothing framed.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_files = StaticFiles(directory=UI_DIR)


async def _ui_file(path: str, request: Request) -> Response:
    """A file of dsocr/ui (no traversal: StaticFiles keeps to its folder), with its type and cache policy; a
    missing one is 404 as JSON, like every other error."""
    path = _normalised(path)
    try:
        response = await _files.get_response(path, request.scope)
    except Exception as exc:  # Starlette's HTTPException(404) (or 405): the service's own JSON error
        if getattr(exc, "status_code", None) in (401, 404, 405):
            raise NotFound("No such file") from None
        raise
    if response.status_code == 200:
        response.headers["content-type"] = MEDIA_TYPES.get(Path(path).suffix.lower(), PLAIN_TEXT)
    response.headers["cache-control"] = IMMUTABLE if path.startswith("vendor/") else REVALIDATE
    response.headers["x-content-type-options"] = "nosniff"
    return response


def _normalised(path: str) -> str:
    """The path as the file system resolves it (`vendor/x/../../app.js` is `app.js`), so that the checks on its
    folder (cache policy, the Swagger files served while the page is off) see the file that is served."""
    normal = posixpath.normpath("/" + path).lstrip("/")
    if normal.startswith(".."):
        raise NotFound("No such file")
    return normal


def _ui_enabled(request: Request) -> bool:
    return bool(request.app.state.settings.ocr_ui)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index(request: Request) -> Response:
    """The page: pick or drop an image or PDF, follow its progress, see the result and the history."""
    if not _ui_enabled(request):
        raise NotFound("Not Found (the page is turned off: DEEPSEEK_OCR_UI=false)")
    response = await _ui_file("index.html", request)
    response.headers["content-security-policy"] = PAGE_CSP
    response.headers["referrer-policy"] = "no-referrer"
    return response


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def ui_asset(path: str, request: Request) -> Response:
    """The page's files, and the vendored libraries (Swagger UI's also while the page is off, for /docs)."""
    if not _ui_enabled(request) and not _normalised(path).startswith(SWAGGER_DIR + "/"):
        raise NotFound("No such file")
    return await _ui_file(path, request)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI with its script, style and icon served by this service (relative to the root path)."""
    root = request.scope.get("root_path", "").rstrip("/")
    if request.app.openapi_url is None:
        raise NotFound("Not Found")
    assets = f"{root}/ui/{SWAGGER_DIR}"
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # no call to validator.swagger.io
    )
