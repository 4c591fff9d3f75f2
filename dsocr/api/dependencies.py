"""The shared resources handlers reach through FastAPI dependencies (so that tests can swap them)."""

from __future__ import annotations

from fastapi import Depends, Request

from dsocr.store.history import HistoryStore
from dsocr.serving.submitter import PageSubmitter
from ocr_engine import EngineInfo
from settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model(request: Request) -> PageSubmitter:
    """Where pages are read: the local host or the vLLM pool."""
    return request.app.state.model


def ready_model(model: PageSubmitter = Depends(get_model)) -> PageSubmitter:
    """The page submitter, once its model is ready; 503 with a Retry-After before."""
    model.ready_info()
    return model


def ready_info(model: PageSubmitter = Depends(get_model)) -> EngineInfo:
    return model.ready_info()


def get_history(request: Request) -> HistoryStore | None:
    return request.app.state.history
