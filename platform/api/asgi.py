"""The production ASGI entry point: ``uvicorn --factory moeplane.api.asgi:create``.

``moeplane api`` runs it (one uvicorn process, or ``--workers N`` forked ones); each process
reads the settings once and builds its own connections. Nothing happens at import time.
"""

from __future__ import annotations

from fastapi import FastAPI

from moeplane.api.app import create_app
from moeplane.config import get_settings

__all__ = ["create"]


def create() -> FastAPI:
    """The app over the configured database, Redis limiter and broker."""
    return create_app(get_settings())
