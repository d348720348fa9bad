#!/usr/bin/env bash
# A 3-node Apache Kafka cluster (KRaft, every node both broker and controller) on loopback, from the same
# Maven Central jars as kafka.sh. Data, configs, logs and pid files under $IOP_VAR_DIR/kafka-cluster/n{1,2,3}.
#   cluster.sh start      start every node that is not running (formatting a new one first), wait until all
#                         three answer as unfenced brokers; prints the bootstrap list
#   cluster.sh stop       controlled shutdown (SIGTERM) of every node, then wait for the JVMs to exit
#   cluster.sh status     one line per node; exit status 0 only when all three run
#   cluster.sh bootstrap  the bootstrap list (for KAFKA_BOOTSTRAP_SERVERS)
# Clients connect on IOP_KAFKA_CLUSTER_PORT, +1, +2 (default 19092-19094); the controllers listen on
# IOP_KAFKA_CLUSTER_CONTROLLER_PORT, +1, +2 (default: the client base + 10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var=${IOP_VAR_DIR:-$root/var}
lib=$var/kafka/lib
dir=$var/kafka-cluster
base=${IOP_KAFKA_CLUSTER_PORT:-19092}
controller_base=${IOP_KAFKA_CLUSTER_CONTROLLER_PORT:-$((base + 10))}
cluster_id=${IOP_KAFKA_CLUSTER_ID:-4L6g3nShT-eMCtK--X86sw}
heap=${IOP_KAFKA_HEAP:-384m}
nodes=(1 2 3)
python=$root/.venv/bin/python
# KAFKA_JVM_PERFORMANCE_OPTS replaces the collector and JIT options, as it does in Kafka's own scripts.
perf=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
# shellcheck disable=SC2206 # the options split on spaces, as in Kafka's scripts
jopts=(-Xms"$heap" -Xmx"$heap" $perf -Djava.awt.headless=true
       -Dlog4j2.configurationFile="$here/log4j2.properties")

port_of() { echo $((base + $1 - 1)); }
controller_port_of() { echo $((controller_base + $1 - 1)); }
bootstrap() { local n out=(); for n in "${nodes[@]}"; do out+=("127.0.0.1:$(port_of "$n")"); done; (IFS=,; echo "${out[*]}"); }
controllers() { local n out=(); for n in "${nodes[@]}"; do out+=("127.0.0.1:$(controller_port_of "$n")"); done; (IFS=,; echo "${out[*]}"); }

# As in kafka.sh: the pid file names our node only while that pid runs (not a zombie) with this node's config.
running() {
  local n=$1 pid stat cmd; pid=$(cat "$dir/n$n/broker.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }; [[ ${stat%% *} != [ZX] ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) && [[ $cmd == *"kafka.Kafka $dir/n$n/server.properties"* ]]
}
in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A Kafka Uuid as StorageTool prints it: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
kafka_uuid() {
  "$python" -c 'import base64, uuid
while (u := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"): pass
print(u)'
}

# The directory id of every node, chosen once: all three are formatted with the same initial controllers.
ids() {
  if [ ! -f "$dir/directory-ids" ]; then
    rm -rf "$dir"/n*/data  # data formatted with other ids would not join this quorum
    mkdir -p "$dir"
    for n in "${nodes[@]}"; do echo "$n $(kafka_uuid)"; done >"$dir/directory-ids"
  fi
}

initial_controllers() {
  local n id out=()
  while read -r n id; do out+=("$n@127.0.0.1:$(controller_port_of "$n"):$id"); done <"$dir/directory-ids"
  (IFS=,; echo "${out[*]}")
}

configure() {
  local n=$1
  mkdir -p "$dir/n$n/data"
  sed -e "s/@NODE_ID@/$n/" -e "s/@PORT@/$(port_of "$n")/" -e "s/@CONTROLLER_PORT@/$(controller_port_of "$n")/" \
      -e "s/@CONTROLLERS@/$(controllers)/" -e "s|@DATA@|$dir/n$n/data|" "$here/cluster.properties" \
      >"$dir/n$n/server.properties"
}

format() {  # once per node: a formatted data dir keeps its data across restarts
  local n=$1
  [ -f "$dir/n$n/data/meta.properties" ] && return 0
  java "${jopts[@]}" -cp "$lib/*" kafka.tools.StorageTool format -g -t "$cluster_id" \
    --initial-controllers "$(initial_controllers)" -c "$dir/n$n/server.properties" >"$dir/n$n/format.log" 2>&1 \
    || { echo "kafka-cluster: formatting node $n failed:" >&2; cat "$dir/n$n/format.log" >&2; return 1; }
}

launch() {
  local n=$1
  nohup java "${jopts[@]}" -Dkafka.logs.dir="$dir/n$n" -cp "$lib/*" kafka.Kafka "$dir/n$n/server.properties" \
    >"$dir/n$n/broker.log" 2>&1 </dev/null &
  echo $! >"$dir/n$n/broker.pid"
}

start() {
  local n starting=() pids=()
  for n in "${nodes[@]}"; do
    running "$n" && continue
    for p in "$(port_of "$n")" "$(controller_port_of "$n")"; do
      if in_use "$p"; then
        echo "kafka-cluster: node $n NOT started: 127.0.0.1:$p is already in use by another process" \
             "(set IOP_KAFKA_CLUSTER_PORT / IOP_KAFKA_CLUSTER_CONTROLLER_PORT, or stop what listens there)" >&2
        exit 1
      fi
    done
    starting+=("$n")
  done
  if [ ${#starting[@]} -gt 0 ]; then
    "$here/kafka.sh" jars
    ids
    for n in "${starting[@]}"; do configure "$n"; done
    for n in "${starting[@]}"; do format "$n" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
    for n in "${starting[@]}"; do launch "$n"; done
  fi
  # Ready: each node's own JVM holds its port and answers, and it sees all three brokers unfenced.
  for n in "${nodes[@]}"; do
    if ! (cd "$root" && KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(port_of "$n") "$python" -m shared.events.admin wait \
            --timeout 300 --brokers ${#nodes[@]} --pid "$(cat "$dir/n$n/broker.pid")") || ! running "$n"; then
      echo "kafka-cluster: node $n NOT ready; last lines of $dir/n$n/broker.log:" >&2
      tail -n 30 "$dir/n$n/broker.log" >&2
      for s in "${starting[@]}"; do kill -KILL "$(cat "$dir/n$s/broker.pid")" 2>/dev/null || true; done
      exit 1
    fi
  done
  echo "kafka-cluster: ready on $(bootstrap) (data and logs under $dir)"
}

stop() {
  local n any=
  for n in "${nodes[@]}"; do
    if running "$n"; then kill -TERM "$(cat "$dir/n$n/broker.pid")"; any=yes; fi
  done
  for _ in $(seq 1 300); do
    local left=
    for n in "${nodes[@]}"; do running "$n" && left=yes; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for n in "${nodes[@]}"; do
    if running "$n"; then kill -KILL "$(cat "$dir/n$n/broker.pid")"; fi
    rm -f "$dir/n$n/broker.pid"
  done
  if [ -n "$any" ]; then echo "kafka-cluster: stopped"; else echo "kafka-cluster: not running"; fi
}

status() {
  local n rc=0
  for n in "${nodes[@]}"; do
    if running "$n"; then
      echo "kafka-cluster: node $n running (pid $(cat "$dir/n$n/broker.pid"), 127.0.0.1:$(port_of "$n"))"
    else
      echo "kafka-cluster: node $n stopped (127.0.0.1:$(port_of "$n"))"; rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  bootstrap) bootstrap ;;
  *) echo "usage: $0 start|stop|status|bootstrap" >&2; exit 2 ;;
esac
