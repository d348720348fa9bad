"""Given deploy/kafka/kafka.sh run on ports another process holds, it refuses loudly and never calls that ready."""
from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import ROOT
from shared.events.admin import wait_for_kafka
from tests.support.broker import Broker
from tests.support.scripts import KAFKA_SH, free_port, operator_env, scratch_var, state_of
from tests.support.waiting import wait_until


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain socket listener on a free port: some other program holding it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def start_kafka(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([KAFKA_SH, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def stop_kafka(env: dict[str, str]) -> None:
    subprocess.run([KAFKA_SH, "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)


def test_kafka_sh_refuses_a_port_another_broker_holds_rather_than_calling_it_ready(broker: Broker,
                                                                                  tmp_path: Path) -> None:
    host, _, held = broker.bootstrap.split(",")[0].rpartition(":")
    assert host == "127.0.0.1", "the tests' broker listens on loopback"
    var = scratch_var(tmp_path)
    env = operator_env(var, IOP_KAFKA_PORT=held, IOP_KAFKA_CONTROLLER_PORT=str(free_port()))
    try:
        done = start_kafka(env)
        assert done.returncode != 0, done.stdout
        assert "kafka: ready" not in done.stdout + done.stderr
        assert f"127.0.0.1:{held} is already in use" in done.stderr
        assert not (var / "kafka" / "broker.pid").exists()
    finally:
        stop_kafka(env)


@pytest.mark.parametrize("which", ["IOP_KAFKA_PORT", "IOP_KAFKA_CONTROLLER_PORT"])
def test_kafka_sh_refuses_a_port_a_plain_listener_holds(listener: socket.socket, tmp_path: Path, which: str) -> None:
    held = listener.getsockname()[1]
    ports = {"IOP_KAFKA_PORT": str(free_port()), "IOP_KAFKA_CONTROLLER_PORT": str(free_port()), which: str(held)}
    var = scratch_var(tmp_path)
    env = operator_env(var, **ports)
    try:
        done = start_kafka(env)
        assert done.returncode != 0 and "kafka: ready" not in done.stdout + done.stderr
        assert f"127.0.0.1:{held} is already in use" in done.stderr
        assert not (var / "kafka" / "broker.pid").exists()
    finally:
        stop_kafka(env)


def test_a_broker_counts_as_ready_only_when_the_process_waited_for_serves_it(broker: Broker) -> None:
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        with pytest.raises(TimeoutError, match=f"another process than {stranger.pid}"):
            wait_for_kafka(broker.bootstrap, 3, pid=stranger.pid)
        stranger.kill()  # and not reaped yet: a zombie has exited all the same
        wait_until(lambda: state_of(stranger.pid) == "Z", 10, 0.05, "a zombie")
        with pytest.raises(RuntimeError, match="exited"):
            wait_for_kafka(broker.bootstrap, 3, pid=stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
