"""The intake service's web process: `gunicorn 'services.intake.app:create_app()'`."""
from __future__ import annotations

from typing import Any

from flask import Flask

from services.intake.handlers import seed_questionnaires
from services.intake.questionnaires import load_catalogue
from services.intake.resources import build_registry
from shared.config import Settings
from shared.web import service_app


def create_app(config: dict[str, Any] | None = None) -> Flask:
    settings = Settings("intake", **(config or {}))
    app = service_app(settings, build_registry(settings))
    ctx = app.extensions["iop"]
    seed_questionnaires(ctx.store, ctx.api.repo, load_catalogue())
    return app
