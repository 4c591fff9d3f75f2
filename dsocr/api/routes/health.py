"""Probes and metrics: liveness always, readiness once the model is loaded, Prometheus text."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dsocr.api.dependencies import get_model, get_settings
from dsocr.demo import is_demo
from dsocr.serving.submitter import LOADING_RETRY_AFTER_S, PageSubmitter
from dsocr.serving.workers import in_worker
from schemas import HealthNotReady, HealthReady
from settings import EngineChoice, Settings

router = APIRouter(tags=["service"])


@router.get("/health/live")
async def health_live() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/health",
    response_model=HealthReady,
    responses={503: {"model": HealthNotReady, "description": "loading, draining, or unable to serve"}},
)
@router.get("/health/ready", response_model=HealthReady, include_in_schema=False)
async def health(
    request: Request, model: PageSubmitter = Depends(get_model), settings: Settings = Depends(get_settings)
) -> HealthReady | JSONResponse:
    # A full runs folder fails every request (507): not ready, naming the cause, until space is back.
    full = await in_worker(request.app.state.runs.space_problem) if request.app.state.runs.full else None
    if full:
        body = HealthNotReady(status="error", modes=[mode.name for mode in model.modes], detail=full)
        return JSONResponse(body.model_dump(by_alias=True), status_code=503)
    if model.status != "ready" or model.info is None:
        demo = settings.ocr_engine is not EngineChoice.vllm and is_demo(settings.ocr_model_path)
        body = HealthNotReady(status=model.status, modes=[mode.name for mode in model.modes], detail=model.detail,
                              demo=demo)
        headers = {"Retry-After": str(LOADING_RETRY_AFTER_S)} if model.status == "loading" else None
        return JSONResponse(body.model_dump(by_alias=True), status_code=503, headers=headers)
    info = model.info
    return HealthReady(
        modes=[mode.name for mode in info.modes],
        model=info.model,
        engine=info.engine,
        family=info.family.value,
        device=info.device,
        dtype=info.dtype,
        attn_implementation=info.attn_implementation,
        demo=info.demo,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
