"""Fixtures of the integration tests that open services' real apps on temporary stores."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_fhir_conformance import Fhir, new_app
from tests.support.auth import TEST_SECRET
from tests.support.postgres import store_locator


@pytest.fixture
def open_service(tmp_path: Path) -> Iterator[Callable[[str], Fhir]]:
    """The real app of a service on a fresh store, as many as a test asks for."""
    opened: list[Fhir] = []

    def open_one(service: str, **config: Any) -> Fhir:
        if config:
            factory = importlib.import_module(f"services.{service}.app").create_app
            app = factory({"database": store_locator(tmp_path / f"{service}-{len(opened)}.db"),
                           "auth_hs256_secret": TEST_SECRET, **config})
        else:
            app = new_app(service, tmp_path / str(len(opened)))
        opened.append(Fhir(app))
        return opened[-1]

    yield open_one
    for server in opened:
        server.app.extensions["iop"].store.close()
