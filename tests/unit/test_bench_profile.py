"""Reading py-spy's raw stacks for `make profile`: waiting threads are not work, and shares are inclusive."""
from __future__ import annotations

from pathlib import Path

from bench.profile import top_functions

LOOP = ("Thread.run (threading.py:982);ConsumerRunner.run (shared/events/consumer.py:270);"
        "ConsumerRunner.poll_once (shared/events/consumer.py:199);")
BATCH = "ConsumerRunner.process_batch (shared/events/consumer.py:{line});"
RAW = "\n".join([
    LOOP + "KafkaConsumer.poll (/x/site-packages/kafka/consumer/group.py:700);"
           "EpollSelector.select (selectors.py:468) 50",
    LOOP + BATCH.format(line=160) + "EncounterHandlers.on_plan (services/encounters/handlers.py:66);"
                                    "Repository.create (shared/fhir/registry.py:130) 30",
    LOOP + BATCH.format(line=161) + "parse_event (shared/events/envelope.py:128) 10",
    "Thread.run (threading.py:982);OutboxRelay.run (shared/events/relay.py:86);Event.wait (threading.py:629);"
    "Condition.wait (threading.py:331) 400",
]) + "\n"


def test_waiting_samples_are_left_out_and_shares_count_every_frame_on_the_stack(tmp_path: Path) -> None:
    raw = tmp_path / "encounters-worker.txt"
    raw.write_text(RAW)
    busy, ranked = top_functions(raw, 10)
    shares = {name: share for share, name in ranked}
    assert busy == 40  # the select and the waits are idle
    assert shares["ConsumerRunner.process_batch (shared/events/consumer.py)"] == 100.0  # both lines merged
    assert shares["EncounterHandlers.on_plan (services/encounters/handlers.py)"] == 75.0
    assert shares["parse_event (shared/events/envelope.py)"] == 25.0
    assert not any(name.startswith(("Thread.run", "ConsumerRunner.run ")) for name in shares)  # on every stack
