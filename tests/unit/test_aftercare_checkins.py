"""Given a check-in schedule after graduation, when check-ins happen or windows pass, then statuses follow."""
from datetime import date, timedelta

from services.aftercare.checkins import (
    CheckIn,
    checkin_schedule,
    complete_checkin,
    mark_missed,
    missed_checkins,
    next_due,
)

GRADUATION = date(2025, 3, 7)


def schedule() -> list[CheckIn]:
    return checkin_schedule(GRADUATION)


def test_default_schedule_is_weeks_1_2_4_8_12_after_graduation():
    dues = [c.due for c in schedule()]
    assert dues == [GRADUATION + timedelta(weeks=w) for w in (1, 2, 4, 8, 12)]
    assert all(c.status == "due" and c.window_days == 3 for c in schedule())


def test_schedule_is_configurable_and_sorted():
    dues = [c.due for c in checkin_schedule(GRADUATION, weeks=(6, 3, 3), window_days=1)]
    assert dues == [GRADUATION + timedelta(weeks=3), GRADUATION + timedelta(weeks=6)]


def test_a_checkin_inside_a_window_completes_that_item():
    updated = complete_checkin(schedule(), date(2025, 3, 16))  # week 1 due 2025-03-14, window to 03-17
    assert updated[0].status == "completed"
    assert updated[0].completed_on == date(2025, 3, 16)
    assert [c.status for c in updated[1:]] == ["due"] * 4


def test_window_bounds_are_inclusive():
    first = schedule()[0]
    assert complete_checkin([first], first.due - timedelta(days=3))[0].status == "completed"
    assert complete_checkin([first], first.due + timedelta(days=3))[0].status == "completed"
    assert complete_checkin([first], first.due + timedelta(days=4))[0].status == "due"


def test_overlapping_windows_complete_the_earliest_due_item():
    items = checkin_schedule(GRADUATION, weeks=(1, 2), window_days=5)  # 03-14 and 03-21 windows overlap
    first = complete_checkin(items, date(2025, 3, 18))
    assert [c.status for c in first] == ["completed", "due"]
    second = complete_checkin(first, date(2025, 3, 18))
    assert [c.status for c in second] == ["completed", "completed"]


def test_a_checkin_outside_every_window_changes_nothing():
    assert complete_checkin(schedule(), date(2025, 3, 28)) == schedule()


def test_missed_items_are_past_their_window_and_not_completed():
    items = complete_checkin(schedule(), date(2025, 3, 14))
    missed = missed_checkins(items, date(2025, 4, 10))  # week 2 (03-21) and week 4 (04-04, ends 04-07) missed
    assert [c.due for c in missed] == [date(2025, 3, 21), date(2025, 4, 4)]


def test_the_last_day_of_a_window_is_not_yet_missed():
    first = schedule()[0]
    assert missed_checkins([first], first.window_end) == []
    assert missed_checkins([first], first.window_end + timedelta(days=1)) == [first]


def test_a_missed_item_is_reported_once():
    today = date(2025, 4, 10)
    items = schedule()
    assert len(missed_checkins(items, today)) == 3
    marked = mark_missed(items, today)
    assert [c.status for c in marked] == ["missed", "missed", "missed", "due", "due"]
    assert missed_checkins(marked, today) == []
    assert mark_missed(marked, today) == marked


def test_a_missed_item_cannot_be_completed_later():
    marked = mark_missed(schedule(), date(2025, 3, 25))
    assert complete_checkin(marked, date(2025, 3, 16)) == marked


def test_next_due_skips_completed_and_expired_items():
    items = complete_checkin(schedule(), date(2025, 3, 14))
    assert next_due(items, date(2025, 3, 15)).due == date(2025, 3, 21)
    assert next_due(items, date(2025, 6, 30)) is None


def test_round_trip_through_a_dict():
    item = CheckIn(date(2025, 3, 14), 3, "completed", date(2025, 3, 15))
    assert CheckIn.from_dict(item.to_dict()) == item
    assert CheckIn.from_dict(CheckIn(date(2025, 3, 14)).to_dict()) == CheckIn(date(2025, 3, 14))
