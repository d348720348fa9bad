"""Retry timing for EHR deliveries: exponential backoff with full jitter, and when to give up.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of many
subscriptions that failed together, so a recovering EHR is not hit by a synchronised wave.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

DEFAULT_BASE_S = 2.0
DEFAULT_CAP_S = 900.0             # never wait more than 15 minutes between attempts
DEFAULT_MAX_AGE = timedelta(hours=24)  # then the subscription goes to status error


class Random(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    max_age: timedelta = DEFAULT_MAX_AGE

    def next_delay(self, attempt: int, rng: Random = random) -> float:
        return next_delay(attempt, self.base_s, self.cap_s, rng)

    def give_up(self, first_failure_at: datetime, now: datetime) -> bool:
        return give_up(first_failure_at, now, self.max_age)


def next_delay(attempt: int, base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S,
               rng: Random = random) -> float:
    """Seconds to wait after the attempt-th failure (0-based): uniform in [0, min(cap, base * 2**attempt))."""
    if attempt < 0 or base_s <= 0 or cap_s <= 0:
        raise ValueError("attempt must be >= 0 and base and cap positive")
    ceiling = cap_s if attempt >= 64 else min(cap_s, base_s * 2 ** attempt)  # 2**64 needs no float overflow
    return rng.random() * ceiling


def give_up(first_failure_at: datetime, now: datetime, max_age: timedelta = DEFAULT_MAX_AGE) -> bool:
    """True once deliveries have failed for max_age without a success in between."""
    return now - first_failure_at >= max_age
