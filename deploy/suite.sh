#!/usr/bin/env bash
# Start, stop and report the four services: each a gunicorn web process and a worker.
#   suite.sh start | stop | status | config
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
# The processes get the var dir by name: it is also how a pid is told to be this instance's.
export IOP_VAR_DIR=$var
run=$var/run
logs=$var/log
py=$root/.venv/bin/python
services=(intake careplan encounters aftercare)
declare -A default_port=([intake]=8081 [careplan]=8082 [encounters]=8083 [aftercare]=8084)
declare -A launched=()  # service -> byte offset of its worker log when this run launched the worker

port_of() { local v="IOP_${1^^}_PORT"; echo "${!v:-${default_port[$1]}}"; }
command_of() { if [ "$2" = web ]; then echo "services.$1.app:create_app()"; else echo "-m services.$1.worker"; fi; }

# A pid file names a live process of ours only while that pid runs (a zombie, killed but not yet reaped, does
# not), runs what we started, and was started for this var dir (pids are reused; other instances run the same
# commands).
alive() {  # service kind
  local pid stat cmd env
  pid=$(cat "$run/$1-$2.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }; [[ ${stat%% *} != [ZX] ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) && [[ $cmd == *"$(command_of "$1" "$2")"* ]] || return 1
  env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) && [[ $'\n'$env$'\n' == *$'\n'"IOP_VAR_DIR=$var"$'\n'* ]]
}
in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() {  # service kind argv...: in the background, in its own session, output to its log, pid to its pid file
  local s=$1 kind=$2; shift 2
  (cd "$root" || exit 1; nohup setsid "$@" >>"$logs/$s-$kind.log" 2>&1 </dev/null &
   echo $! >"$run/$s-$kind.pid")
  # Until the exec the pid runs a copy of this shell, which `alive` rightly does not take for ours.
  for _ in $(seq 1 40); do alive "$s" "$kind" && break; sleep 0.05; done
}

start_web() {
  local s=$1 port; port=$(port_of "$s")
  alive "$s" web && return 0
  if in_use "$port"; then echo "$s: NOT started: 127.0.0.1:$port is in use by another process" >&2; return 1; fi
  # Not --daemon: a daemonised gunicorn sends the application's JSON logs to /dev/null.
  launch "$s" web "$root/.venv/bin/gunicorn" --config "$root/deploy/gunicorn.conf.py" --bind "127.0.0.1:$port" \
    "$(command_of "$s" web)"
}

start_worker() {
  local s=$1
  alive "$s" worker && return 0
  launched[$s]=$(stat -c %s "$logs/$s-worker.log" 2>/dev/null || echo 0)
  launch "$s" worker "$py" -m "services.$s.worker"
}

wait_web() {
  local s=$1 url; url="http://127.0.0.1:$(port_of "$s")"
  for _ in $(seq 1 150); do
    alive "$s" web || break
    local body
    if body=$(curl -fsS "$url/readyz" 2>/dev/null); then
      local note=""; [[ $body != *'"degraded":['* || $body == *'"degraded":[]'* ]] || note="  (degraded: $body)"
      echo "$s: ready  $url/fhir  (logs $logs/$s-*.log)$note"; return 0
    fi
    sleep 0.2
  done
  echo "$s: web NOT ready at $url/readyz; last lines of $logs/$s-web.log:" >&2
  tail -n 20 "$logs/$s-web.log" >&2 || true
  return 1
}

wait_worker() {  # a worker launched now counts once it has logged that it started (connected to Kafka)
  local s=$1 log="$logs/$1-worker.log"
  for _ in $(seq 1 300); do
    alive "$s" worker || break
    [ -z "${launched[$s]:-}" ] && return 0
    grep -qF '"msg":"worker started"' < <(tail -c +"$((launched[$s] + 1))" "$log") && return 0
    sleep 0.2
  done
  if alive "$s" worker; then echo "$s: worker runs but has not started within 60 s (Kafka reachable?); see $log" >&2
  else echo "$s: worker NOT running; last lines of $log:" >&2; tail -n 20 "$log" >&2 || true; fi
  return 1
}

start() {
  "$py" -m shared.config >/dev/null  # a wrong setting is refused by name before anything starts
  mkdir -p "$run" "$logs"
  local failed=0
  for s in "${services[@]}"; do
    start_web "$s" || failed=1
    start_worker "$s" || failed=1
  done
  for s in "${services[@]}"; do
    wait_web "$s" || failed=1
    wait_worker "$s" || failed=1
  done
  return $failed
}

stop_one() {  # service kind
  if alive "$1" "$2"; then
    local pid; pid=$(cat "$run/$1-$2.pid"); kill -TERM "$pid"
    for _ in $(seq 1 200); do alive "$1" "$2" || break; sleep 0.1; done
    if alive "$1" "$2"; then kill -KILL "$pid"; fi
  fi
  rm -f "$run/$1-$2.pid"
}

stop() {
  for s in "${services[@]}"; do
    stop_one "$s" web
    stop_one "$s" worker
    echo "$s: stopped"
  done
}

status() {
  local rc=0
  for s in "${services[@]}"; do
    local port; port=$(port_of "$s")
    local web=down worker=down ready=no
    alive "$s" web && web=up
    alive "$s" worker && worker=up
    # Only our own web process's answer counts: another instance may hold the port.
    [ "$web" = up ] && curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && ready=yes
    printf '%-11s web=%-4s worker=%-4s ready=%s  http://127.0.0.1:%s/fhir\n' "$s" "$web" "$worker" "$ready" "$port"
    [ "$ready" = yes ] && [ "$worker" = up ] || rc=1
  done
  return $rc
}

case "${1:-}" in
  start) start ;; stop) stop ;; status) status ;; config) "$py" -m shared.config ;;
  *) echo "usage: $0 start|stop|status|config" >&2; exit 2 ;;
esac
