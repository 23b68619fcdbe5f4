"""The HTTP service: ``create_app(settings)`` builds the FastAPI app behind ``sentops serve``."""

from __future__ import annotations

from sentiment_ops.serving.app import create_app

__all__ = ["create_app"]
