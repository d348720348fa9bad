#!/bin/sh
# The image's entrypoint: web <service> | worker <service> | topics | health
set -eu
mode=${1:-web}
service=${2:-}
known() {
  case "$service" in intake|careplan|encounters|aftercare) ;; *) echo "usage: $mode intake|careplan|encounters|aftercare" >&2; exit 64 ;; esac
}
case "$mode" in
  web)
    known
    echo "http://127.0.0.1:8080/readyz" > /tmp/iop-health
    exec gunicorn --config /app/deploy/gunicorn.conf.py --bind 0.0.0.0:8080 "services.${service}.app:create_app()" ;;
  worker)
    known
    echo "http://127.0.0.1:${IOP_WORKER_METRICS_PORT:-9100}/metrics" > /tmp/iop-health
    exec python -m "services.${service}.worker" ;;
  topics)
    exec python -m shared.events.admin topics ;;
  health)
    # A web process is healthy when ready (/readyz); a worker while it serves its metrics.
    exec python -c 'import sys, urllib.request; urllib.request.urlopen(open("/tmp/iop-health").read().strip(), timeout=2)' ;;
  *)
    echo "usage: iop-entrypoint web|worker <service> | topics | health" >&2
    exit 64 ;;
esac
