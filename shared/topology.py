"""The suite's processes under supervisord, in one of two topologies.

- **embedded** (`make run`): per service one gunicorn web process on the service's port (8081-8084) and one
  worker.
- **cluster** (`make run-cluster`): per service `IOP_WEB_REPLICAS` web processes, each a gunicorn on a port of
  its own, and `IOP_WORKER_REPLICAS` workers, each named by `IOP_REPLICA=<service>-worker-<n>`; HAProxy holds
  the services' ports and spreads requests over the web replicas whose `GET /readyz` answers 200.

supervisord restarts whatever crashes. Everything it needs is generated into `$IOP_VAR_DIR/run/`
(`supervisord.conf`, `haproxy-services.cfg`, `topology.json`); every process logs JSON lines to
`$IOP_VAR_DIR/log/<process>.log`, supervisord and HAProxy their own lines to `$IOP_VAR_DIR/log/supervisor/`.

    python -m shared.topology start embedded|cluster
    python -m shared.topology stop
    python -m shared.topology status
    python -m shared.topology ctl ARGS...      (supervisorctl against this var dir's supervisord)
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from shared.config import ROOT, SERVICE_PORTS, Settings, env_int, kafka_bootstrap
from shared.events.catalogue import PARTITIONS
from shared.serving import gunicorn_argv

SERVICES = tuple(SERVICE_PORTS)
TOPOLOGIES = ("embedded", "cluster")
CLUSTER_REPLICAS = 2  # web and worker processes per service in the cluster topology, unless configured
MAX_WEB_REPLICAS = 9  # ports IOP_REPLICA_PORT_BASE + 10 * service + n, n = 1..9
MAX_WORKER_REPLICAS = PARTITIONS  # a consumer group gives no more members than partitions anything to do
REPLICA_PORT_BASE = 8100
HAPROXY = "haproxy"
BIN = Path(sys.executable).parent
SOCKET_PATH_MAX = 100  # AF_UNIX paths end at 107 bytes
WAIT_S = 120.0  # for every process of a start to be ready (gunicorn imports fhir.resources: slow on 2 busy CPUs)
STOP_WAIT_S = 90.0


class TopologyError(RuntimeError):
    """What an operator must fix before the suite can start (a port in use, a wrong setting, no HAProxy)."""


@dataclass(frozen=True)
class Process:
    """One supervised process: a web replica, a worker replica or the cluster's HAProxy."""

    name: str  # the supervisor program name: <service>-web-<n>, <service>-worker-<n>, haproxy
    service: str  # "" for haproxy
    kind: str  # web | worker | proxy
    replica: int
    port: int | None = None  # what a web replica binds

    @property
    def log(self) -> str:
        return f"{self.name}.log" if self.kind != "proxy" else "supervisor/haproxy.log"


@dataclass(frozen=True)
class Topology:
    name: str
    var_dir: Path
    web_replicas: int = 1
    worker_replicas: int = 1
    port_base: int = REPLICA_PORT_BASE
    front_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, name: str, var_dir: Path | None = None) -> Topology:
        if name not in TOPOLOGIES:
            raise TopologyError(f"the topology is embedded or cluster, not {name!r}")
        var_dir = var_dir or Settings("cli").var_dir
        fronts = {s: Settings(s).port for s in SERVICES}
        if name == "embedded":
            return cls(name, var_dir, front_ports=fronts)
        web, work = env_int("IOP_WEB_REPLICAS", CLUSTER_REPLICAS), env_int("IOP_WORKER_REPLICAS", CLUSTER_REPLICAS)
        if not 1 <= web <= MAX_WEB_REPLICAS:
            raise TopologyError(f"IOP_WEB_REPLICAS must be 1 to {MAX_WEB_REPLICAS}, not {web}")
        if not 1 <= work <= MAX_WORKER_REPLICAS:
            raise TopologyError(f"IOP_WORKER_REPLICAS must be 1 to {MAX_WORKER_REPLICAS} (the topics' partitions), "
                                f"not {work}")
        base = env_int("IOP_REPLICA_PORT_BASE", REPLICA_PORT_BASE)
        if not 1024 <= base <= 65535 - 10 * len(SERVICES):
            raise TopologyError(f"IOP_REPLICA_PORT_BASE must leave room for {10 * len(SERVICES)} ports, not {base}")
        return cls(name, var_dir, web, work, base, fronts)

    @classmethod
    def load(cls, var_dir: Path) -> Topology | None:
        """The topology that `start` last wrote for this var dir, if any."""
        try:
            saved = json.loads(paths(var_dir).state.read_text())
            return cls(saved["topology"], var_dir, saved["web_replicas"], saved["worker_replicas"],
                       saved["port_base"], {s: int(p) for s, p in saved["front_ports"].items()})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def replica_port(self, service: str, n: int) -> int:
        if self.name == "embedded":
            return self.front_ports[service]
        return self.port_base + 10 * SERVICES.index(service) + n

    def processes(self) -> list[Process]:
        procs = []
        for service in SERVICES:
            procs += [Process(f"{service}-web-{n}", service, "web", n, self.replica_port(service, n))
                      for n in range(1, self.web_replicas + 1)]
            procs += [Process(f"{service}-worker-{n}", service, "worker", n)
                      for n in range(1, self.worker_replicas + 1)]
        if self.name == "cluster":
            procs.append(Process("haproxy", "", "proxy", 1))
        return procs

    def ports(self) -> list[int]:
        """Every port this topology binds: the replicas' and, in the cluster, the front's."""
        bound = [p.port for p in self.processes() if p.port is not None]
        return bound + (list(self.front_ports.values()) if self.name == "cluster" else [])


@dataclass(frozen=True)
class Paths:
    run: Path
    logs: Path
    conf: Path
    pidfile: Path
    socket: Path
    state: Path
    haproxy_conf: Path
    haproxy_socket: Path


def _socket_path(run: Path, name: str) -> Path:
    """In the run dir, unless that path is too long for a unix socket (a deep var dir): then in /tmp by a hash."""
    path = run / name
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"iop-{digest}-{name}"


def paths(var_dir: Path) -> Paths:
    run, logs = var_dir / "run", var_dir / "log"
    return Paths(run, logs, run / "supervisord.conf", run / "supervisord.pid", _socket_path(run, "supervisor.sock"),
                 run / "topology.json", run / "haproxy-services.cfg", _socket_path(run, "haproxy.sock"))


def haproxy_binary() -> str:
    found = shutil.which(HAPROXY) or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not found:
        raise TopologyError("the cluster topology needs HAProxy: `apt-get install -y haproxy` "
                            "(`make run-cluster` installs it)")
    return found


def command(topology: Topology, proc: Process) -> list[str]:
    if proc.kind == "web":
        return gunicorn_argv(proc.service, proc.port or 0)
    if proc.kind == "worker":
        return [sys.executable, "-m", f"services.{proc.service}.worker"]
    return [haproxy_binary(), "-db", "-f", str(ROOT / "deploy" / "haproxy" / "haproxy.cfg"),
            "-f", str(paths(topology.var_dir).haproxy_conf)]


def _ini(value: str) -> str:
    """A value as supervisord's config parser reads it back: `%` is its interpolation character."""
    return value.replace("%", "%%")


def _environment(values: dict[str, str]) -> str:
    return ",".join(f'{k}="{_ini(v)}"' for k, v in values.items())


def render_supervisord(topology: Topology) -> str:
    p = paths(topology.var_dir)
    lines = [
        "; Generated by shared/topology.py for this var dir; `make run` / `make run-cluster` rewrite it.",
        "[unix_http_server]", f"file={_ini(str(p.socket))}", "chmod=0700", "",
        "[supervisord]", f"logfile={_ini(str(p.logs / 'supervisor' / 'supervisord.log'))}",
        "logfile_maxbytes=10MB", "logfile_backups=3", "loglevel=info",
        f"pidfile={_ini(str(p.pidfile))}", f"childlogdir={_ini(str(p.logs / 'supervisor'))}",
        f"directory={_ini(str(ROOT))}", f"identifier=iop-suite:{_ini(str(topology.var_dir))}", "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "", "[supervisorctl]", f"serverurl=unix://{_ini(str(p.socket))}", "",
    ]
    for proc in topology.processes():
        env = {"PYTHONUNBUFFERED": "1"}
        if proc.kind != "proxy":
            env["IOP_REPLICA"] = proc.name
        else:
            env |= {"IOP_HAPROXY_DIR": str(ROOT / "deploy" / "haproxy"), "IOP_HAPROXY_SOCKET": str(p.haproxy_socket)}
        lines += [
            f"[program:{proc.name}]", f"command={_ini(shlex.join(command(topology, proc)))}",
            f"directory={_ini(str(ROOT))}", f"environment={_environment(env)}",
            "autostart=true", "autorestart=true", "startsecs=1", "startretries=5",
            # A worker finishes the records in hand and commits; gunicorn finishes its requests.
            "stopsignal=" + ("USR1" if proc.kind == "proxy" else "TERM"),
            f"stopwaitsecs={40 if proc.kind == 'worker' else 30}", "stopasgroup=true", "killasgroup=true",
            f"stdout_logfile={_ini(str(p.logs / proc.log))}", "redirect_stderr=true",
            "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=5", "",
        ]
    return "\n".join(lines)


def render_haproxy(topology: Topology) -> str:
    """Per service a frontend on its port and a backend of its web replicas, checked on /readyz."""
    lines = ["# Generated by shared/topology.py for this var dir (`make run-cluster` rewrites it).", ""]
    for service in SERVICES:
        lines += [f"frontend {service}", f"    bind 127.0.0.1:{topology.front_ports[service]}",
                  f"    default_backend {service}", "",
                  f"backend {service}", "    balance roundrobin", "    option httpchk",
                  "    http-check send meth GET uri /readyz", "    http-check expect status 200",
                  "    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 1"]
        lines += [f"    server {p.name} 127.0.0.1:{p.port}" for p in topology.processes()
                  if p.service == service and p.kind == "web"]
        lines.append("")
    return "\n".join(lines)


# -- supervisord ----------------------------------------------------------------------------------------------


def supervisord_pid(var_dir: Path) -> int | None:
    """supervisord's pid while it runs for this var dir (a reused pid or a zombie does not count)."""
    p = paths(var_dir)
    try:
        pid = int(p.pidfile.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return None
    args = [a.decode(errors="replace") for a in cmdline]
    if not any(a.endswith("supervisord") for a in args[:2]) or str(p.conf) not in args:
        return None
    return pid


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host: object) -> object:
        import http.client

        path, timeout = str(self.path), self.timeout

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)

        return Connection("localhost")


def rpc(var_dir: Path, timeout: float = 10.0) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC interface (what supervisorctl talks to), over its unix socket."""
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(paths(var_dir).socket,
                                                                                        timeout))


def process_info(var_dir: Path) -> dict[str, dict]:
    """supervisord's view of every process: name -> {statename, pid, description, ...}; {} when none runs."""
    if supervisord_pid(var_dir) is None:
        return {}
    try:
        return {info["name"]: info for info in rpc(var_dir).supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Error):
        return {}


def supervisorctl(var_dir: Path, *args: str) -> int:
    return subprocess.call([str(BIN / "supervisorctl"), "-c", str(paths(var_dir).conf), *args], cwd=ROOT)


# -- start, stop, status ---------------------------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def readiness(port: int) -> tuple[bool, str]:
    try:
        resp = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
    except requests.RequestException:
        return False, "no answer"
    try:
        body = resp.json()
    except ValueError:
        body = {}
    degraded = body.get("degraded") or []
    if resp.status_code == 200:
        return True, "ready" + (f" (degraded: {', '.join(degraded)})" if degraded else "")
    failing = ", ".join(f"{k} {v}" for k, v in (body.get("checks") or {}).items() if v != "ok")
    return False, f"not ready ({failing or resp.status_code})"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _logged_since(path: Path, offset: int, needle: str) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(offset if _log_size(path) >= offset else 0)  # a rotated log starts again at 0
            return needle.encode() in f.read()
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_state(topology: Topology) -> None:
    p = paths(topology.var_dir)
    state = {"topology": topology.name, "web_replicas": topology.web_replicas,
             "worker_replicas": topology.worker_replicas, "port_base": topology.port_base,
             "front_ports": topology.front_ports, "kafka_bootstrap": kafka_bootstrap(),
             # Only the kind of each store: a PostgreSQL URL may carry a password.
             "stores": {s: "postgresql" if Settings(s).database.startswith(("postgresql:", "postgres:")) else "sqlite"
                        for s in SERVICES},
             "processes": [asdict(proc) for proc in topology.processes()]}
    p.state.write_text(json.dumps(state, indent=1) + "\n")


def saved_state(var_dir: Path) -> dict:
    try:
        return json.loads(paths(var_dir).state.read_text())
    except (OSError, ValueError):
        return {}


def _write_configs(topology: Topology) -> None:
    p = paths(topology.var_dir)
    for d in (p.run, p.logs, p.logs / "supervisor"):
        d.mkdir(parents=True, exist_ok=True)
    if topology.name == "cluster":
        p.haproxy_conf.write_text(render_haproxy(topology))
        checked = subprocess.run(command(topology, Process("haproxy", "", "proxy", 1))[:1]
                                 + ["-c", "-q", "-f", str(ROOT / "deploy" / "haproxy" / "haproxy.cfg"),
                                    "-f", str(p.haproxy_conf)],
                                 env={**os.environ, "IOP_HAPROXY_DIR": str(ROOT / "deploy" / "haproxy"),
                                      "IOP_HAPROXY_SOCKET": str(p.haproxy_socket)},
                                 capture_output=True, text=True)
        if checked.returncode != 0:
            raise TopologyError(f"HAProxy refuses {p.haproxy_conf}: {checked.stdout}{checked.stderr}")
    p.conf.write_text(render_supervisord(topology))
    _write_state(topology)


def _wait(topology: Topology, launched: dict[str, int], out: list[str]) -> bool:
    """Every web replica ready, every worker launched now logged `worker started`, the front answering."""
    p, deadline = paths(topology.var_dir), time.monotonic() + WAIT_S
    pending = {proc.name: proc for proc in topology.processes()}
    failed: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        info = process_info(topology.var_dir)
        for name, proc in list(pending.items()):
            state = info.get(name, {}).get("statename", "UNKNOWN")
            if state in ("FATAL", "EXITED", "STOPPED", "UNKNOWN"):
                failed[name] = f"{state}; last lines of {p.logs / proc.log}:\n{_tail(p.logs / proc.log)}"
                del pending[name]
            elif state != "RUNNING":
                continue
            elif proc.kind == "web" and readiness(proc.port or 0)[0]:
                del pending[name]
            elif proc.kind == "worker" and (name not in launched or _logged_since(
                    p.logs / proc.log, launched[name], '"msg":"worker started"')):
                del pending[name]
            elif proc.kind == "proxy":
                del pending[name]
        if pending:
            time.sleep(0.3)
    for name, proc in pending.items():
        log = p.logs / proc.log
        failed[name] = f"not ready within {WAIT_S:.0f} s; last lines of {log}:\n{_tail(log)}"
    for service in SERVICES:
        front = topology.front_ports[service]
        names = [proc.name for proc in topology.processes() if proc.service == service]
        bad = [n for n in names if n in failed]
        if not bad and topology.name == "cluster":
            while time.monotonic() < deadline + 30 and not readiness(front)[0]:
                time.sleep(0.3)
            if not readiness(front)[0]:
                bad.append("haproxy")
                failed["haproxy"] = f"the front 127.0.0.1:{front} does not answer /readyz; see " \
                                    f"{p.logs / 'supervisor' / 'haproxy.log'}"
        if bad:
            out.append(f"{service}: NOT ready: " + "; ".join(f"{n} {failed[n]}" for n in bad))
        else:
            replicas = f"{topology.web_replicas} web, {topology.worker_replicas} worker" \
                       + (" replicas behind HAProxy" if topology.name == "cluster" else "")
            out.append(f"{service}: ready  http://127.0.0.1:{front}/fhir  ({replicas}; logs {p.logs}/{service}-*.log)")
    return not failed


def start(name: str) -> int:
    """Start (or complete) the topology under supervisord; 0 once everything is ready."""
    for service in SERVICES:
        Settings(service)  # a wrong setting is refused by name before anything starts
    var_dir = Settings("cli").var_dir
    running = supervisord_pid(var_dir)
    current = Topology.load(var_dir) if running else None
    topology = Topology.from_env(name, var_dir)
    if current is not None and current != topology:
        raise TopologyError(f"a {current.name} topology ({current.web_replicas} web, {current.worker_replicas} "
                            f"worker replicas) already runs for {var_dir}: `make stop` first")
    p = paths(var_dir)
    info = process_info(var_dir) if running else {}
    up = {n for n, i in info.items() if i.get("statename") in ("RUNNING", "STARTING", "BACKOFF")}
    busy = [port for port in topology.ports() if _listening(port)
            and not any(proc.port == port and proc.name in up for proc in topology.processes())
            and not ("haproxy" in up and port in topology.front_ports.values())]
    if busy:
        raise TopologyError("NOT started: 127.0.0.1:" + ", ".join(map(str, busy)) + " in use by another process")
    launched = {proc.name: _log_size(p.logs / proc.log) for proc in topology.processes() if proc.name not in up}
    _write_configs(topology)
    if running is None:
        for stale in (p.socket, p.pidfile):
            stale.unlink(missing_ok=True)
        done = subprocess.run([str(BIN / "supervisord"), "-c", str(p.conf)], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise TopologyError(f"supervisord did not start: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not process_info(var_dir):
            time.sleep(0.1)
    else:
        server = rpc(var_dir).supervisor
        added, changed, removed = server.reloadConfig()[0]
        for group in changed + removed:
            server.stopProcessGroup(group, True)
            server.removeProcessGroup(group)
        for group in added + changed:
            server.addProcessGroup(group)
        for n, i in process_info(var_dir).items():
            if i.get("statename") in ("STOPPED", "EXITED", "FATAL"):
                server.startProcess(n, False)
    out: list[str] = []
    ok = _wait(topology, launched, out)
    print("\n".join(out), flush=True)
    return 0 if ok else 1


def stop() -> int:
    var_dir = Settings("cli").var_dir
    pid = supervisord_pid(var_dir)
    if pid is None:
        print("processes: none under supervisord for this var dir")
        return 0
    children = [i["pid"] for i in process_info(var_dir).values() if i.get("pid")]
    try:
        rpc(var_dir).supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and _alive(pid):  # it removes its pid file before it exits
        time.sleep(0.2)
    leftovers = [c for c in [pid, *children] if _alive(c)]
    for c in leftovers:  # supervisord gave up on them, or was itself stuck: no process outlives `make stop`
        with suppress(ProcessLookupError, PermissionError):
            if c == pid:
                os.kill(c, signal.SIGKILL)
            else:
                os.killpg(c, signal.SIGKILL)  # supervisord makes each program the leader of its process group
    paths(var_dir).pidfile.unlink(missing_ok=True)
    print(f"processes: stopped ({len(children)} under supervisord" + (f", {len(leftovers)} killed" if leftovers else "")
          + ")")
    return 0


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def haproxy_servers(var_dir: Path) -> dict[str, str]:
    """HAProxy's view of each web replica: name -> UP, DOWN, ... (from its stats socket); {} without HAProxy."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(str(paths(var_dir).haproxy_socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    rows = data.decode(errors="replace").splitlines()
    if not rows or not rows[0].startswith("# "):
        return {}
    header = rows[0][2:].split(",")
    states = {}
    for row in rows[1:]:
        values = dict(zip(header, row.split(","), strict=False))
        if values.get("svname") not in (None, "", "FRONTEND", "BACKEND"):
            states[values["svname"]] = values.get("status", "?")
    return states


def status() -> int:
    """supervisorctl's status, then whether each web replica (and, in the cluster, each front) is ready."""
    var_dir = Settings("cli").var_dir
    topology = Topology.load(var_dir)
    if supervisord_pid(var_dir) is None or topology is None:
        print(f"processes: none under supervisord for {var_dir} (`make run` or `make run-cluster` starts them)")
        return 1
    print(f"topology: {topology.name} (supervisord pid {supervisord_pid(var_dir)}, {paths(var_dir).conf})",
          flush=True)
    rc = 1 if supervisorctl(var_dir, "status") != 0 else 0
    behind = haproxy_servers(var_dir)
    for proc in topology.processes():
        if proc.kind == "web":
            ready, what = readiness(proc.port or 0)
            lb = f"  haproxy {behind.get(proc.name, '?')}" if topology.name == "cluster" else ""
            print(f"{proc.name:<22} {what}  http://127.0.0.1:{proc.port}{lb}")
            rc |= 0 if ready else 1
    if topology.name == "cluster":
        for service, port in topology.front_ports.items():
            ready, what = readiness(port)
            print(f"{service + ' (front)':<22} {what}  http://127.0.0.1:{port}/fhir")
            rc |= 0 if ready else 1
    return rc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["start"] and len(args) == 2:
            return start(args[1])
        if args == ["stop"]:
            return stop()
        if args == ["status"]:
            return status()
        if args[:1] == ["ctl"]:
            return supervisorctl(Settings("cli").var_dir, *args[1:])
    except (TopologyError, ValueError) as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    print("usage: python -m shared.topology start embedded|cluster | stop | status | ctl ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
