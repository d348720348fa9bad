#!/usr/bin/env bash
# The suite's processes under supervisord (shared/topology.py writes its configuration and waits for readiness).
#   suite.sh start [embedded|cluster]   the four services' web and worker processes, given a reachable Kafka
#   suite.sh run-cluster                the cluster profile: PostgreSQL, a 3-node Kafka, topics, replicas, HAProxy
#   suite.sh stop | status | config
#   suite.sh ctl ARGS...                supervisorctl against this var dir's supervisord
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
# The processes get the var dir by name: it is also how a supervisord is told to be this instance's.
export IOP_VAR_DIR=$var
py=$root/.venv/bin/python
services=(intake careplan encounters aftercare)
pg=$root/deploy/postgres/postgres.sh
kafka_cluster=$root/deploy/kafka/cluster.sh

# PostgreSQL for every service whose IOP_<SERVICE>_DB names no store of its own: the local server of
# deploy/postgres/postgres.sh, one database per service; without that script the services keep SQLite.
use_postgres() {
  if [ ! -x "$pg" ]; then echo "postgres: deploy/postgres/postgres.sh absent: SQLite files under $var"; return 0; fi
  local s v wanted=()
  for s in "${services[@]}"; do v="IOP_${s^^}_DB"; [ -n "${!v:-}" ] || wanted+=("$s"); done
  if [ ${#wanted[@]} -eq 0 ]; then echo "postgres: every IOP_<SERVICE>_DB is set: using those"; return 0; fi
  "$pg" install && "$pg" start
  for s in "${wanted[@]}"; do export "IOP_${s^^}_DB=$("$pg" url "$s")"; done
}

# Kafka: KAFKA_BOOTSTRAP_SERVERS when set, else the 3-node cluster of deploy/kafka/cluster.sh (replication
# factor 3, min.insync.replicas 2), else (without that script) the single local broker.
use_kafka() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then echo "kafka: using $KAFKA_BOOTSTRAP_SERVERS"; return 0; fi
  if [ -x "$kafka_cluster" ]; then
    "$kafka_cluster" start
    KAFKA_BOOTSTRAP_SERVERS=$("$kafka_cluster" bootstrap); export KAFKA_BOOTSTRAP_SERVERS
    export IOP_KAFKA_REPLICATION_FACTOR=${IOP_KAFKA_REPLICATION_FACTOR:-3}
    export IOP_KAFKA_MIN_INSYNC_REPLICAS=${IOP_KAFKA_MIN_INSYNC_REPLICAS:-2}
  else
    echo "kafka: deploy/kafka/cluster.sh absent: one local broker, replication factor 1"
    "$root/deploy/kafka/kafka.sh" start
  fi
}

run_cluster() {
  "$py" -m shared.config >/dev/null  # a wrong setting is refused by name before anything starts
  use_postgres
  use_kafka
  "$py" -m shared.events.admin topics
  "$py" -m shared.topology start cluster
}

stop() {
  "$py" -m shared.topology stop
}

status() {
  "$py" -m shared.topology status
}

case "${1:-}" in
  start)
    "$py" -m shared.config >/dev/null
    "$py" -m shared.topology start "${2:-embedded}" ;;
  run-cluster) run_cluster ;;
  stop) stop ;;
  status) status ;;
  ctl) shift; "$py" -m shared.topology ctl "$@" ;;
  config) "$py" -m shared.config ;;
  *) echo "usage: $0 start [embedded|cluster] | run-cluster | stop | status | ctl ARGS... | config" >&2; exit 2 ;;
esac
