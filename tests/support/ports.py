"""The tests' fixed ports, shifted by IOP_TEST_PORT_OFFSET so that two checkouts can run their tests at once."""
from __future__ import annotations

import os

OFFSET = int(os.environ.get("IOP_TEST_PORT_OFFSET") or 0)


def port(base: int) -> int:
    """A test port: `base` (18000-19999) moved by the offset."""
    return base + OFFSET
