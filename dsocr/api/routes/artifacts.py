"""GET /api/runs/{runId}/...: the figure crops and annotated pages of finished runs."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from dsocr.api.middleware.request_ids import error_body
from dsocr.api.openapi import errors
from dsocr.errors import NotFound

router = APIRouter(tags=["artifacts"])

ARTIFACT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@router.get("/api/runs/{run_id}/{artifact:path}", response_class=FileResponse, responses={
    200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the image"},
    206: {"description": "the part of the image a Range header asked for"}, **errors(404, 416, 422),
})
async def run_artifact(run_id: str, artifact: str, request: Request) -> FileResponse:
    """A figure crop or annotated page of a finished run, while the run is kept."""
    # A request's run, or a job's document (kept as long as its job).
    path = request.app.state.runs.artifact(run_id, artifact) or request.app.state.jobs.files.artifact(run_id, artifact)
    if path is None:
        raise NotFound("No such artifact (unknown or expired run, or not a file of it)")
    return ArtifactFile(path, media_type=ARTIFACT_TYPES.get(path.suffix.lower(), "application/octet-stream"))


# Starlette answers a Range it cannot serve in plain text; the service's answer says the same as every error does.
RANGE_REFUSALS = {
    400: "Invalid Range header: {reason} (ask for bytes=START-END within the file)",
    416: "The Range asks for bytes outside the file ({size})",
}


class ArtifactFile(FileResponse):
    """A file, served with Range support; a Range refused (400, 416) is the JSON error shape with its request id."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal: Message | None = None

        async def json_refusals(message: Message) -> None:
            nonlocal refusal
            if message["type"] == "http.response.start" and message["status"] in RANGE_REFUSALS:
                refusal = message
                return
            if refusal is None or message["type"] != "http.response.body":
                await send(message)
                return
            reason = message.get("body", b"").decode("utf-8", "replace").strip().rstrip(".") or "malformed"
            kept = [(name, value) for name, value in refusal["headers"] if name.lower() == b"content-range"]
            size = kept[0][1].decode("latin-1").rsplit("/", 1)[-1] + " bytes" if kept else "its size"
            body = json.dumps(error_body(RANGE_REFUSALS[refusal["status"]].format(reason=reason, size=size))).encode()
            headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": refusal["status"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await super().__call__(scope, receive, json_refusals)
