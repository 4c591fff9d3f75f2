"""The page at / (plain HTML, CSS and JavaScript in dsocr/ui) and the API docs with locally served assets."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
