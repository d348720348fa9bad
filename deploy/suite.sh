#!/usr/bin/env bash
# Start, stop and report the four services: each a gunicorn web process and a worker.
#   suite.sh start | stop | status
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
run=$var/run
py=$root/.venv/bin/python
services=(intake careplan encounters aftercare)
declare -A default_port=([intake]=8081 [careplan]=8082 [encounters]=8083 [aftercare]=8084)

port_of() { local v="IOP_${1^^}_PORT"; echo "${!v:-${default_port[$1]}}"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  mkdir -p "$run" "$var/log"
  for s in "${services[@]}"; do
    local port; port=$(port_of "$s")
    if ! alive "$run/$s-web.pid"; then
      "$root/.venv/bin/gunicorn" --chdir "$root" --bind "127.0.0.1:$port" --workers "${IOP_WEB_WORKERS:-2}" \
        --threads "${IOP_WEB_THREADS:-4}" --worker-class shared.serving.FhirWorker --pid "$run/$s-web.pid" --daemon \
        --error-logfile "$var/log/$s-web.log" "services.$s.app:create_app()"
    fi
    if ! alive "$run/$s-worker.pid"; then
      # $! must be the worker itself (not a wrapper shell), so that `stop` reaches it.
      (cd "$root" || exit 1; nohup "$py" -m "services.$s.worker" >>"$var/log/$s-worker.log" 2>&1 </dev/null &
       echo $! >"$run/$s-worker.pid")
    fi
  done
  for s in "${services[@]}"; do
    local port url; port=$(port_of "$s"); url="http://127.0.0.1:$port"
    for _ in $(seq 1 150); do
      curl -fsS "$url/readyz" >/dev/null 2>&1 && break
      sleep 0.2
    done
    if curl -fsS "$url/readyz" >/dev/null 2>&1; then echo "$s: ready  $url/fhir  (logs var/log/$s-*.log)"
    else echo "$s: NOT ready at $url/readyz; see $var/log/$s-web.log" >&2; exit 1; fi
  done
}

stop() {
  for s in "${services[@]}"; do
    for kind in web worker; do
      local pidfile="$run/$s-$kind.pid"
      if alive "$pidfile"; then
        local pid; pid=$(cat "$pidfile"); kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      fi
      rm -f "$pidfile"
    done
    echo "$s: stopped"
  done
}

status() {
  local rc=0
  for s in "${services[@]}"; do
    local port; port=$(port_of "$s")
    local web=down worker=down ready=no
    alive "$run/$s-web.pid" && web=up
    alive "$run/$s-worker.pid" && worker=up
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && ready=yes
    printf '%-11s web=%-4s worker=%-4s ready=%s  http://127.0.0.1:%s/fhir\n' "$s" "$web" "$worker" "$ready" "$port"
    [ "$ready" = yes ] || rc=1
  done
  return $rc
}

case "${1:-}" in
  start) start ;; stop) stop ;; status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
