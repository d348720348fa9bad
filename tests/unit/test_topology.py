"""The two topologies as supervisord and HAProxy read their generated configuration."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from shared import topology
from shared.config import ROOT
from shared.topology import Topology, TopologyError

SERVICES = ("intake", "careplan", "encounters", "aftercare")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # `make test` installs it (Makefile)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("IOP_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("IOP_VAR_DIR", str(tmp_path))
    return tmp_path


def supervisord_programs(top: Topology) -> dict[str, object]:
    """The program sections of the generated file, as supervisord itself parses them."""
    conf = top.var_dir / "conf"
    for d in ("log/supervisor", "run"):  # as `start` makes them
        (top.var_dir / d).mkdir(parents=True, exist_ok=True)
    conf.write_text(topology.render_supervisord(top))
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    assert options.pidfile == str(top.var_dir / "run" / "supervisord.pid")
    return {p.name: p for g in options.process_group_configs for p in g.process_configs}


def test_embedded_runs_one_web_on_each_service_port_and_one_worker_each_under_supervisord(env: Path) -> None:
    top = Topology.from_env("embedded")
    programs = supervisord_programs(top)
    assert sorted(programs) == sorted(f"{s}-{k}-1" for s in SERVICES for k in ("web", "worker"))
    assert programs["careplan-web-1"].command.endswith("--bind 127.0.0.1:8082 'services.careplan.app:create_app()'")
    assert programs["careplan-worker-1"].command.endswith("python -m services.careplan.worker")
    for name, program in programs.items():
        assert program.autorestart is RestartUnconditionally
        assert program.redirect_stderr and program.stdout_logfile == str(env / "log" / f"{name}.log")
        assert program.environment["IOP_REPLICA"] == name
        assert program.stopasgroup and program.killasgroup
    assert top.ports() == [8081, 8082, 8083, 8084] == [p.port for p in top.processes() if p.kind == "web"]


def test_cluster_runs_replicas_on_ports_of_their_own_and_haproxy_on_the_service_ports(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOP_CAREPLAN_PORT", "9182")
    monkeypatch.setenv("IOP_REPLICA_PORT_BASE", "9300")
    top = Topology.from_env("cluster")
    programs = supervisord_programs(top)
    assert len(programs) == 4 * 4 + 1 and programs["haproxy"].command.startswith(HAPROXY)
    webs = {p.name: p.port for p in top.processes() if p.kind == "web"}
    assert webs["intake-web-1"] == 9301 and webs["careplan-web-2"] == 9312 and webs["aftercare-web-2"] == 9332
    assert len(set(webs.values())) == 8 and not set(webs.values()) & set(top.front_ports.values())
    assert top.front_ports == {"intake": 8081, "careplan": 9182, "encounters": 8083, "aftercare": 8084}
    assert programs["careplan-worker-2"].environment["IOP_REPLICA"] == "careplan-worker-2"
    assert "haproxy -db" in programs["haproxy"].command
    assert programs["haproxy"].environment["IOP_HAPROXY_DIR"] == str(ROOT / "deploy" / "haproxy")


def test_haproxy_accepts_the_cluster_front_and_checks_every_replica_on_readyz(env: Path) -> None:
    top = Topology.from_env("cluster")
    services = top.var_dir / "services.cfg"
    services.write_text(topology.render_haproxy(top))
    checked = subprocess.run([HAPROXY, "-c", "-f", str(ROOT / "deploy" / "haproxy" / "haproxy.cfg"),
                              "-f", str(services)], capture_output=True, text=True,
                             env={"IOP_HAPROXY_DIR": str(ROOT / "deploy" / "haproxy"),
                                  "IOP_HAPROXY_SOCKET": str(env / "haproxy.sock")})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = services.read_text()
    assert "frontend careplan\n    bind 127.0.0.1:8082\n" in text
    assert "    server careplan-web-2 127.0.0.1:8112\n" in text
    assert text.count("http-check send meth GET uri /readyz") == 4


def test_haproxy_answers_for_itself_with_operation_outcomes() -> None:
    for page in (ROOT / "deploy" / "haproxy" / "errors").glob("*.http"):
        head, _, body = page.read_bytes().partition(b"\r\n\r\n")
        assert b"Content-Type: application/fhir+json" in head and f"Content-Length: {len(body)}".encode() in head
        assert body.startswith(b'{"resourceType":"OperationOutcome"'), page.name


@pytest.mark.parametrize(("name", "value", "message"), [
    ("IOP_WORKER_REPLICAS", "7", "IOP_WORKER_REPLICAS must be 1 to 6 (the topics' partitions), not 7"),
    ("IOP_WEB_REPLICAS", "0", "IOP_WEB_REPLICAS must be 1 to 9, not 0"),
    ("IOP_REPLICA_PORT_BASE", "80", "IOP_REPLICA_PORT_BASE must leave room for 40 ports, not 80"),
])
def test_a_wrong_replica_setting_is_refused_by_name(env: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                    value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(TopologyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Topology.from_env("cluster")


def test_a_deep_var_dir_keeps_its_sockets_short_and_its_own(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "var"
    short = topology.paths(tmp_path / "var")
    assert short.socket == tmp_path / "var" / "run" / "supervisor.sock"
    far = topology.paths(deep)
    assert len(str(far.socket)) <= topology.SOCKET_PATH_MAX and far.socket != topology.paths(tmp_path / "v2").socket
    assert far.haproxy_socket != far.socket


def test_the_saved_topology_is_what_status_reads_back(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOP_INTAKE_DB", "postgresql://iop:secret@127.0.0.1:5432/intake")
    top = Topology.from_env("cluster")
    (env / "run").mkdir()
    topology._write_state(top)
    assert Topology.load(env) == top
    saved = topology.saved_state(env)
    assert saved["stores"] == {"intake": "postgresql", "careplan": "sqlite", "encounters": "sqlite",
                               "aftercare": "sqlite"}
    assert "secret" not in topology.paths(env).state.read_text()
    assert [p["name"] for p in saved["processes"]][-1] == "haproxy"
