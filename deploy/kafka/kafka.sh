#!/usr/bin/env bash
# Install, start and stop a single-node Apache Kafka broker (KRaft) from Maven Central jars.
#   kafka.sh jars   resolve the broker jars into var/kafka/lib (quick when already there)
#   kafka.sh start  format the data dir once, start the broker, wait until it answers
#   kafka.sh stop   controlled shutdown (SIGTERM), then wait for the JVM to exit
#   kafka.sh status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
lib=$var/kafka/lib
data=${IOP_KAFKA_DATA_DIR:-$var/kafka/data}
log=$var/kafka/broker.log
pidfile=$var/kafka/broker.pid
cluster_id=${IOP_KAFKA_CLUSTER_ID:-4L6g3nShT-eMCtK--X86sw}
config=$var/kafka/server.properties
heap=${IOP_KAFKA_HEAP:-512m}
port=${IOP_KAFKA_PORT:-9092}
controller_port=${IOP_KAFKA_CONTROLLER_PORT:-9093}
# The venv's interpreter (it has kafka-python); $PYTHON only names the one that builds the venv.
python=$root/.venv/bin/python
# KAFKA_JVM_PERFORMANCE_OPTS replaces the collector and JIT options, as it does in Kafka's own scripts.
perf=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
# shellcheck disable=SC2206 # the options split on spaces, as in Kafka's scripts
jopts=(-Xms"$heap" -Xmx"$heap" $perf -Djava.awt.headless=true
       -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$var/kafka")

# The pid file names our broker only while that pid runs (a zombie does not) with this instance's
# config: a pid is reused, and another instance keeps its own var dir.
running() {
  local pid stat cmd; pid=$(cat "$pidfile" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }; [[ ${stat%% *} != [ZX] ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) && [[ $cmd == *"kafka.Kafka $config"* ]]
}
in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

abandon() {  # a broker of ours that did not come up must not linger
  local pid; pid=$(cat "$pidfile")
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

jars() {
  if [ -f "$lib/.resolved" ] && [ "$lib/.resolved" -nt "$here/pom.xml" ]; then return 0; fi
  mkdir -p "$lib"
  mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib"
  touch "$lib/.resolved"
}

start() {
  if running; then echo "kafka: already running (pid $(cat "$pidfile"))"; return 0; fi
  for p in "$port" "$controller_port"; do
    if in_use "$p"; then
      echo "kafka: NOT started: 127.0.0.1:$p is already in use by another process (set IOP_KAFKA_PORT /" \
           "IOP_KAFKA_CONTROLLER_PORT, or stop what listens there)" >&2
      exit 1
    fi
  done
  jars
  mkdir -p "$data"
  # The runtime config is the template plus where this checkout keeps its data.
  { sed -e "s/:9092/:$port/g" -e "s/:9093/:$controller_port/g" "$here/server.properties"
    echo "log.dirs=$data"; } >"$config"
  # Formatted once: a restart keeps its data (and -g makes formatting a formatted directory a no-op anyway).
  if [ ! -f "$data/meta.properties" ]; then
    java "${jopts[@]}" -cp "$lib/*" kafka.tools.StorageTool format --standalone -g -t "$cluster_id" -c "$config" \
      >"$var/kafka/format.log" 2>&1 || { cat "$var/kafka/format.log"; exit 1; }
  fi
  nohup java "${jopts[@]}" -cp "$lib/*" kafka.Kafka "$config" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  # --pid: ready means our JVM runs and holds the port, not that something answers there.
  if ! (cd "$root" && KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port "$python" -m shared.events.admin wait --timeout 90 \
          --pid "$(cat "$pidfile")") || ! running; then
    echo "kafka: NOT ready; last lines of $log:" >&2; tail -n 30 "$log" >&2; abandon; exit 1
  fi
  echo "kafka: ready on 127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"
}

stop() {
  if ! running; then rm -f "$pidfile"; echo "kafka: not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 300); do running || break; sleep 0.1; done
  if running; then kill -KILL "$pid"; fi
  rm -f "$pidfile"
  echo "kafka: stopped"
}

case "${1:-}" in
  jars) jars ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka: running (pid $(cat "$pidfile"))"; else echo "kafka: stopped"; exit 1; fi ;;
  *) echo "usage: $0 jars|start|stop|status" >&2; exit 2 ;;
esac
