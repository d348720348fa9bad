"""The careplan service's web process: `gunicorn 'services.careplan.app:create_app()'`."""
from __future__ import annotations

from typing import Any

from flask import Flask

from services.careplan.resources import build_registry
from shared.config import Settings
from shared.web import service_app


def create_app(config: dict[str, Any] | None = None) -> Flask:
    settings = Settings("careplan", **(config or {}))
    return service_app(settings, build_registry(settings))
