"""The event backbone against the real broker: outbox → relay → Kafka → consumer, exactly once in effect."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from shared.events import kafka
from shared.events.consumer import ConsumerRunner, RunnerConfig
from shared.events.dlq import dead_letters
from shared.events.envelope import build_event
from shared.events.relay import OutboxRelay
from shared.fhir.store import Store, open_store
from tests.support import effect_consumer
from tests.support.broker import Broker
from tests.support.engines import query
from tests.support.events import start_at_end
from tests.support.postgres import store_locator
from tests.support.processes import Proc
from tests.support.waiting import wait_until

TOPIC = "iop.careplan.events"
BASE = "http://127.0.0.1:8082/fhir"


def careplan(n: int, patient: str) -> dict:
    return {"resourceType": "CarePlan", "id": f"cp-{n}", "meta": {"versionId": "1"}, "status": "active",
            "intent": "plan", "subject": {"reference": f"Patient/{patient}"},
            "identifier": [{"system": "urn:test:seq", "value": str(n)}]}


def commit_events(store: Store, numbers: range, patients: list[str]) -> list[str]:
    """Commit one CarePlan event per number into the outbox; returns their ce_ids in commit order."""
    ids = []
    with store.transaction() as tx:
        for n in numbers:
            event = build_event("iop.careplan.created", BASE, patients[n % len(patients)],
                                careplan(n, patients[n % len(patients)]))
            tx.add_event(event)
            ids.append(dict(event.headers)["ce_id"])
    return ids


@pytest.fixture
def outbox(tmp_path: Path, broker: Broker) -> Iterator[Store]:
    """A producing store whose relay runs in a thread, as in a service's worker."""
    store = open_store(store_locator(tmp_path / "producer.db"))
    stop = threading.Event()
    relay = OutboxRelay(store, partial(kafka.producer, broker.bootstrap), poll_ms=5)
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    yield store
    stop.set()
    thread.join(30)


def effects(store: Store, ce_ids: set[str]) -> list[tuple[int, str, str, str]]:
    rows = query(store, "SELECT n, ce_id, patient, subject FROM effect ORDER BY n")
    return [r for r in rows if r[1] in ce_ids]


def consumer_proc(db: str, group: str, broker: Broker, log: Path, delay_ms: int = 0) -> Proc:
    argv = [sys.executable, "-m", "tests.support.effect_consumer", db, group, TOPIC,
            "--servers", broker.bootstrap, "--delay-ms", str(delay_ms)]
    return Proc("effect-consumer", argv, None, log)


def assert_in_commit_order_per_patient(rows: list[tuple]) -> None:
    last: dict[str, int] = {}
    for _, _, patient, subject in rows:
        n = int(subject.split("/")[1].removeprefix("cp-"))
        assert n > last.get(patient, -1), f"patient {patient}: event {n} applied after {last[patient]}"
        last[patient] = n


def test_given_a_consumer_killed_twice_mid_stream_then_every_effect_is_stored_exactly_once(
        outbox: Store, broker: Broker, tmp_path: Path) -> None:
    db = store_locator(tmp_path / "effects.db")
    store = effect_consumer.effect_store(db)
    group = f"test-exactly-once-{uuid.uuid4().hex[:8]}"
    start_at_end(broker.bootstrap, group, [TOPIC])  # earlier tests' records are not this test's
    patients = [f"pt-{uuid.uuid4().hex[:6]}-{i}" for i in range(12)]
    ids = set(commit_events(outbox, range(1000), patients))
    proc = consumer_proc(db, group, broker, tmp_path / "consumer.log", delay_ms=2).start()
    try:
        for threshold in (250, 600):
            wait_until(lambda t=threshold: len(effects(store, ids)) >= t, 90, what=f"{threshold} effects")
            proc.kill()
            proc = consumer_proc(db, group, broker, tmp_path / "consumer.log", delay_ms=2).start()
        wait_until(lambda: len({r[1] for r in effects(store, ids)}) == 1000, 120, what="all 1000 effects")
    finally:
        proc.stop()
    rows = effects(store, ids)
    assert len(rows) == 1000, "an event took effect twice"
    assert {r[1] for r in rows} == ids
    assert_in_commit_order_per_patient(rows)


def test_given_the_broker_restarts_mid_stream_then_relay_and_consumer_recover_with_nothing_lost_or_doubled(
        outbox: Store, broker: Broker, tmp_path: Path) -> None:
    store = effect_consumer.effect_store(store_locator(tmp_path / "effects.db"))
    group = f"test-restart-{uuid.uuid4().hex[:8]}"
    start_at_end(broker.bootstrap, group, [TOPIC])  # earlier tests' records are not this test's
    patients = [f"pt-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)]
    stop = threading.Event()
    runner = effect_consumer.runner(store, broker.bootstrap, group, TOPIC)
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        ids = set(commit_events(outbox, range(150), patients))
        wait_until(lambda: len(effects(store, ids)) >= 50, 60, what="first effects")
        broker.restart()
        ids |= set(commit_events(outbox, range(150, 300), patients))
        wait_until(lambda: len({r[1] for r in effects(store, ids)}) == 300, 120, what="all 300 effects")
    finally:
        stop.set()
        thread.join(30)
    rows = effects(store, ids)
    assert len(rows) == 300
    assert_in_commit_order_per_patient(rows)


def send_raw(broker: Broker, key: str, headers: list[tuple[str, str]], value: str) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(TOPIC, key=key.encode(), value=value.encode(), headers=[(k, v.encode()) for k, v in headers])
    producer.flush(10)
    producer.close(5)


def test_given_poison_messages_then_they_land_in_the_dlq_with_a_reason_and_a_replay_applies_them_once(
        broker: Broker, tmp_path: Path, expect_dead_letters: None) -> None:
    store = effect_consumer.effect_store(store_locator(tmp_path / "effects.db"))
    group = f"test-poison-{uuid.uuid4().hex[:8]}"
    start_at_end(broker.bootstrap, group, [TOPIC])  # earlier tests' records are not this test's
    blocked = f"pt-blocked-{uuid.uuid4().hex[:6]}"
    query(store, "INSERT INTO blocked VALUES (?)", (blocked,))
    no_headers_key = f"pt-noheaders-{uuid.uuid4().hex[:6]}"
    send_raw(broker, no_headers_key, [], json.dumps(careplan(1, no_headers_key)))
    bad = build_event("iop.careplan.created", BASE, "pt-bad", dict(careplan(2, "pt-bad"), status="bogus"))
    send_raw(broker, bad.key, bad.headers, bad.value)
    held = build_event("iop.careplan.created", BASE, blocked, careplan(3, blocked))
    send_raw(broker, held.key, held.headers, held.value)
    good = build_event("iop.careplan.created", BASE, "pt-good", careplan(4, "pt-good"))
    send_raw(broker, good.key, good.headers, good.value)
    held_id, good_id, bad_id = (dict(e.headers)["ce_id"] for e in (held, good, bad))

    stop = threading.Event()
    runner = effect_consumer.runner(store, broker.bootstrap, group, TOPIC)
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: effects(store, {good_id}), 60, what="the good event applied after the poison ones")
        def ours() -> list:
            return [d for d in dead_letters(broker.bootstrap, TOPIC) if d.header("dlq_consumer_group") == group]

        letters = wait_until(lambda: len(ours()) == 3 and ours(), 30, what="3 dead letters")
        reasons = {(d.ce_id or d.key.decode()): d.header("dlq_error") for d in letters}
        assert "invalid envelope" in reasons[no_headers_key] and "ce_type" in reasons[no_headers_key]
        assert "not valid FHIR" in reasons[bad_id] and "Bundle.entry[0].resource.status" in reasons[bad_id]
        assert "blocked" in reasons[held_id]
        kinds = {(d.ce_id or d.key.decode()): d.kind for d in letters}
        assert kinds == {no_headers_key: "invalid-envelope", bad_id: "invalid-envelope", held_id: "poison"}
        assert all(d.header("dlq_original_topic") == TOPIC and d.header("dlq_original_offset") for d in letters)
        assert not effects(store, {held_id, bad_id})

        query(store, "DELETE FROM blocked")  # the cause is fixed
        iop = [sys.executable, "-m", "shared.cli", "dlq", "replay", TOPIC, "--id", held_id]
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "PATH": "/usr/bin:/bin"}
        for _ in range(2):  # replaying twice still has one effect
            out = subprocess.run(iop, env=env, capture_output=True, text=True, check=True)
            assert "replayed 1 record" in out.stdout
        wait_until(lambda: effects(store, {held_id}), 60, what="the replayed event applied")
        wait_until(lambda: runner.skipped >= 1, 30, what="the second replay seen and skipped as a duplicate")
        listed = subprocess.run([sys.executable, "-m", "shared.cli", "dlq", "list", TOPIC], env=env,
                                capture_output=True, text=True, check=True).stdout
        assert held_id in listed and "blocked" in listed
    finally:
        stop.set()
        thread.join(30)
    assert len(effects(store, {held_id})) == 1


class BatchRunner(ConsumerRunner):
    """Notes the size of every poll batch it applies; its first DLQ sends can be made to fail."""

    def __init__(self, *args, failing_dlq_sends: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.failing_dlq_sends = failing_dlq_sends

    def process_batch(self, records: list) -> None:
        self.batches.append(len(records))
        super().process_batch(records)

    def dead_letter(self, record, kind: str, reason: str, ce_id: str | None = None) -> None:
        if self.failing_dlq_sends:
            self.failing_dlq_sends -= 1
            raise KafkaTimeoutError("the DLQ send was not acknowledged")
        super().dead_letter(record, kind, reason, ce_id)


@pytest.mark.parametrize("failing_dlq_sends", [0, 1], ids=["dlq-up", "first-dlq-send-fails"])
def test_given_failing_records_inside_one_poll_batch_then_only_they_are_undone_and_every_effect_lands_once(
        outbox: Store, broker: Broker, tmp_path: Path, failing_dlq_sends: int, expect_dead_letters: None) -> None:
    """A poison record, a transiently failing one, and (second case) a DLQ send that fails mid-batch:
    the rest of that batch is fetched again, not passed over."""
    store = effect_consumer.effect_store(store_locator(tmp_path / "effects.db"))
    run = uuid.uuid4().hex[:6]
    patients = [f"pt-batch-{run}-{n}" for n in range(4)]
    blocked, flaky = patients[0], patients[1]
    query(store, "INSERT INTO blocked VALUES (?)", (blocked,))
    group = f"test-batch-{run}"
    start_at_end(broker.bootstrap, group, [TOPIC])
    ids = commit_events(outbox, range(200, 240), patients)  # 10 events per patient
    wait_until(lambda: not outbox.unsent_events(1), 30, what="all 40 events on the topic before the consumer starts")

    attempts: dict[str, int] = {}
    effect = effect_consumer.make_handler(0)

    def handler(tx, event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.key == flaky and attempts[event.id] == 1:
            raise ConnectionError("a dependency is down")  # transient: its retry succeeds
        effect(tx, event)

    config = RunnerConfig(group, {"iop.careplan.created": handler}, [TOPIC], max_attempts=3, backoff_ms=10)
    runner = BatchRunner(store, kafka.consumer(broker.bootstrap, group, [TOPIC]),
                         partial(kafka.producer, broker.bootstrap), config, failing_dlq_sends=failing_dlq_sends)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        good = {ce_id for n, ce_id in zip(range(200, 240), ids, strict=True) if patients[n % 4] != blocked}
        wait_until(lambda: len(effects(store, good)) >= 30, 60, what="the 30 good events applied")

        def ours() -> list:
            return [d for d in dead_letters(broker.bootstrap, TOPIC)
                    if d.header("dlq_consumer_group") == group and d.key.decode() in patients]

        letters = wait_until(lambda: len(ours()) >= 10 and ours(), 30, what="the blocked patient's 10 dead letters")
    finally:
        stop.set()
        thread.join(30)
    rows = effects(store, set(ids))
    assert len(rows) == 30 and {r[1] for r in rows} == good  # each good effect once, none of the blocked
    assert_in_commit_order_per_patient(rows)
    assert len(letters) == 10
    assert {d.key.decode() for d in letters} == {blocked} and all("blocked" in d.header("dlq_error") for d in letters)
    assert all(attempts[ce_id] == 2 for n, ce_id in zip(range(200, 240), ids, strict=True) if patients[n % 4] == flaky)
    assert max(runner.batches) > 1  # the records of one poll were applied together


def test_given_a_second_member_joining_then_what_the_first_applied_is_committed_and_not_delivered_again(
        outbox: Store, broker: Broker, tmp_path: Path) -> None:
    """Offsets are committed only every few hundred ms; a rebalance commits the rest before partitions move."""
    run = uuid.uuid4().hex[:6]
    group = f"test-rebalance-{run}"
    start_at_end(broker.bootstrap, group, [TOPIC])
    ids = commit_events(outbox, range(300, 340), [f"pt-rebalance-{run}-{n}" for n in range(8)])
    wait_until(lambda: not outbox.unsent_events(1), 30, what="all 40 events on the topic")
    mine = set(ids)

    def member(name: str) -> tuple[ConsumerRunner, threading.Event, threading.Thread, Store]:
        store = effect_consumer.effect_store(store_locator(tmp_path / f"{name}.db"))
        effect = effect_consumer.make_handler(0)
        config = RunnerConfig(group, {"iop.careplan.created": effect}, [TOPIC], commit_every_s=3600)
        runner = ConsumerRunner(store, kafka.consumer(broker.bootstrap, group, [TOPIC]),
                                partial(kafka.producer, broker.bootstrap), config)
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        return runner, stop, thread, store

    first = member("first")
    second = None
    try:
        wait_until(lambda: len(effects(first[3], mine)) == 40, 60, what="the first member applying all 40")
        second = member("second")  # the group rebalances; no periodic commit has happened (once an hour)
        wait_until(lambda: second[0].consumer.assignment(), 60, what="the second member holding partitions")
        time.sleep(2)  # time enough to fetch anything left uncommitted
    finally:
        for _, stop, thread, _ in (m for m in (first, second) if m is not None):
            stop.set()
            thread.join(30)
    assert effects(second[3], mine) == [] and second[0].skipped == 0


def test_an_independent_kafka_client_reads_the_cloudevents_headers_and_a_fhir_bundle(
        outbox: Store, broker: Broker) -> None:
    from confluent_kafka import Consumer

    patient = f"pt-independent-{uuid.uuid4().hex[:6]}"
    (ce_id,) = commit_events(outbox, range(7, 8), [patient])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"independent-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([TOPIC])
    found = None
    try:
        def read() -> bool:
            nonlocal found
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                headers = {k: v.decode() for k, v in (msg.headers() or [])}
                if headers.get("ce_id") == ce_id:
                    found = (msg.key().decode(), headers, msg.value())
            return found is not None
        wait_until(read, 60, interval=0, what="the event through confluent-kafka")
    finally:
        consumer.close()
    key, headers, value = found
    assert key == patient
    assert headers["ce_specversion"] == "1.0" and headers["ce_type"] == "iop.careplan.created"
    assert headers["ce_source"] == "/iop/careplan" and headers["ce_subject"] == "CarePlan/cp-7/_history/1"
    assert headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    assert headers["traceparent"].startswith("00-") and headers["ce_time"].endswith("Z")
    bundle = Bundle.model_validate_json(value)
    assert bundle.type == "collection"
    assert bundle.entry[0].resource.get_resource_type() == "CarePlan"


def test_a_consumer_stores_its_lag_per_partition_only_when_it_changed(outbox: Store, broker: Broker,
                                                                       tmp_path: Path) -> None:
    """An idle group writes nothing: each write would commit and wake every watcher of the store."""
    run = uuid.uuid4().hex[:6]
    group = f"test-lag-{run}"
    start_at_end(broker.bootstrap, group, [TOPIC])
    store = effect_consumer.effect_store(store_locator(tmp_path / "lag.db"))
    config = RunnerConfig(group, {"iop.careplan.created": effect_consumer.make_handler(0)}, [TOPIC], lag_every_s=0)
    runner = ConsumerRunner(store, kafka.consumer(broker.bootstrap, group, [TOPIC]),
                            partial(kafka.producer, broker.bootstrap), config)

    def lags() -> dict[str, str]:
        return dict(store.values_with_prefix(f"lag:{group}:"))

    try:
        wait_until(lambda: runner.poll_once(200) >= 0 and len(lags()) == 6, 60, what="the lag of all 6 partitions")
        assert set(lags().values()) == {"0"}
        with store.transaction() as tx:  # as if somebody else had written them: an unchanged lag is not rewritten
            for name in lags():
                tx.put_value(name, "untouched")
        for _ in range(3):
            runner.poll_once(100)
        assert set(lags().values()) == {"untouched"}

        patient = f"pt-lag-{run}"
        commit_events(outbox, range(400, 403), [patient])
        wait_until(lambda: not outbox.unsent_events(1), 30, what="the 3 events on the topic")
        runner.record_lag()  # before they are polled: 3 behind on the patient's partition, the others unchanged
        assert sorted(lags().values()) == ["3"] + ["untouched"] * 5
        wait_until(lambda: runner.poll_once(200) >= 0 and "0" in lags().values(), 30, what="the lag back to 0")
        assert sorted(lags().values()) == ["0"] + ["untouched"] * 5 and runner.applied == 3
    finally:
        runner.consumer.close()
