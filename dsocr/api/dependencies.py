"""The shared resources handlers reach through FastAPI dependencies (so that tests can swap them)."""

from __future__ import annotations

from fastapi import Depends, Request

from dsocr.pipeline.history import HistoryStore
from dsocr.serving.model_host import ModelHost
from ocr_engine import Engine
from settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model_host(request: Request) -> ModelHost:
    return request.app.state.model


def ready_engine(model: ModelHost = Depends(get_model_host)) -> Engine:
    return model.ready_engine()


def get_history(request: Request) -> HistoryStore | None:
    return request.app.state.history
