"""End-to-end fixtures: an outside observer of the topics, HTTP clients of the running suite."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import Broker
from tests.support.events import EventWatcher


@pytest.fixture
def watcher(suite, broker: Broker) -> Iterator[EventWatcher]:
    w = EventWatcher(broker.bootstrap)
    yield w
    w.close()
