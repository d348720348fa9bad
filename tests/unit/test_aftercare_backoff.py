"""Given failing EHR deliveries, when the worker schedules retries, then waits grow with jitter, then it gives up."""
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.aftercare.backoff import RetryPolicy, give_up, next_delay


class Fixed:
    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def test_the_ceiling_doubles_per_attempt_until_the_cap():
    almost_one = Fixed(0.999999)
    ceilings = [round(next_delay(a, base_s=1, cap_s=30, rng=almost_one)) for a in range(7)]
    assert ceilings == [1, 2, 4, 8, 16, 30, 30]


def test_full_jitter_spans_zero_to_the_ceiling():
    assert next_delay(3, base_s=1, cap_s=100, rng=Fixed(0.0)) == 0.0
    assert next_delay(3, base_s=1, cap_s=100, rng=Fixed(0.5)) == 4.0
    rng = random.Random(7)
    delays = [next_delay(4, base_s=1, cap_s=100, rng=rng) for _ in range(2000)]
    assert all(0 <= d < 16 for d in delays)
    assert min(delays) < 1 and max(delays) > 15  # spread over the whole range, not clustered


def test_huge_attempt_numbers_do_not_overflow():
    assert next_delay(10_000, base_s=2, cap_s=900, rng=Fixed(0.5)) == 450


@pytest.mark.parametrize(("attempt", "base", "cap"), [(-1, 1, 10), (0, 0, 10), (0, 1, 0)])
def test_invalid_arguments(attempt, base, cap):
    with pytest.raises(ValueError):
        next_delay(attempt, base, cap, Fixed(0.5))


def test_give_up_after_max_age_of_failures():
    first = datetime(2025, 3, 7, 10, tzinfo=UTC)
    assert not give_up(first, first + timedelta(hours=23, minutes=59))
    assert give_up(first, first + timedelta(hours=24))
    assert give_up(first, first + timedelta(hours=2), max_age=timedelta(hours=2))


def test_policy_bundles_the_settings():
    policy = RetryPolicy(base_s=1, cap_s=8, max_age=timedelta(hours=6))
    assert policy.next_delay(10, Fixed(0.5)) == 4
    first = datetime(2025, 3, 7, tzinfo=UTC)
    assert policy.give_up(first, first + timedelta(hours=6)) and not policy.give_up(first, first + timedelta(hours=5))
