"""GET /api/runs/{runId}/...: the figure crops and annotated pages of finished runs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from dsocr.api.openapi import errors
from dsocr.errors import NotFound

router = APIRouter(tags=["artifacts"])

ARTIFACT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@router.get("/api/runs/{run_id}/{artifact:path}", response_class=FileResponse, responses={
    200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the image"}, **errors(404, 422),
})
async def run_artifact(run_id: str, artifact: str, request: Request) -> FileResponse:
    """A figure crop or annotated page of a finished run, while the run is kept."""
    # A request's run, or a job's document (kept as long as its job).
    path = request.app.state.runs.artifact(run_id, artifact) or request.app.state.jobs.files.artifact(run_id, artifact)
    if path is None:
        raise NotFound("No such artifact (unknown or expired run, or not a file of it)")
    return FileResponse(path, media_type=ARTIFACT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
