#!/usr/bin/env bash
# Join a worker node to the local cluster started by start-head.sh.
#
#   infra/local/start-worker.sh worker1        # WORKER_CPUS=2 infra/local/start-worker.sh worker2 ...
#
# Each node gets a custom resource `memae_<name>` (1 unit), so a job can be pinned to it and a test can tell the
# nodes apart. Settings (environment): MEMAE_CLUSTER_DIR (/tmp/memae-cluster), WORKER_CPUS (all cores),
# WORKER_GPUS (detected), OBJECT_STORE_BYTES (1 GiB).
set -euo pipefail

name=${1:?usage: start-worker.sh NAME   (e.g. worker1)}
[[ "$name" =~ ^[a-z0-9_]+$ ]] || { echo "node name must be lowercase letters, digits, _: $name" >&2; exit 2; }
dir=${MEMAE_CLUSTER_DIR:-/tmp/memae-cluster}
[[ -r "$dir/env" ]] || { echo "no cluster in $dir: run infra/local/start-head.sh first" >&2; exit 1; }
# shellcheck source=/dev/null
source "$dir/env"
if [[ -e "$dir/$name.pid" ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "node $name is already running (pid $(cat "$dir/$name.pid"))" >&2
    exit 1
fi

gpus=()
[[ -n "${WORKER_GPUS:-}" ]] && gpus=(--num-gpus="$WORKER_GPUS")
# Same recipe as the head: own session (for stop.sh), own temp dir, ports picked free.
setsid ray start --block --address="$RAY_ADDRESS" --dashboard-agent-listen-port=0 \
    --num-cpus="${WORKER_CPUS:-$(nproc)}" "${gpus[@]}" --object-store-memory="${OBJECT_STORE_BYTES:-1073741824}" \
    --resources="{\"memae_$name\": 1}" --temp-dir="$dir/$name" --disable-usage-stats \
    > "$dir/$name.log" 2>&1 < /dev/null &
echo $! > "$dir/$name.pid"

# Ready when the cluster lists the node's resource.
for _ in $(seq 120); do
    if ! kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
        echo "node $name exited while starting; see $dir/$name.log:" >&2
        tail -n 20 "$dir/$name.log" >&2
        exit 1
    fi
    if ray status 2>/dev/null | grep -q "memae_$name\$"; then
        echo "node $name joined $RAY_ADDRESS"
        exit 0
    fi
    sleep 1
done
echo "node $name did not join within 120 s; see $dir/$name.log" >&2
exit 1
