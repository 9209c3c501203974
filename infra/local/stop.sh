#!/usr/bin/env bash
# Stop what start-head.sh, start-worker.sh and start-mlflow.sh started from one cluster folder, and nothing else.
#
#   infra/local/stop.sh                        # MEMAE_CLUSTER_DIR (default /tmp/memae-cluster)
#
# Each node gets SIGTERM (Ray drains it, then ends its processes); after STOP_GRACE seconds (default 40) whatever
# is left of its process group gets SIGKILL. `ray stop` is never used: it kills every Ray on the machine.
set -euo pipefail

dir=${MEMAE_CLUSTER_DIR:-/tmp/memae-cluster}
grace=${STOP_GRACE:-40}
shopt -s nullglob
pid_files=("$dir"/*.pid)
[[ ${#pid_files[@]} -gt 0 ]] || { echo "nothing to stop in $dir"; exit 0; }

pids=()
for file in "${pid_files[@]}"; do
    pid=$(cat "$file")
    # Only a live process that is still the one we started: its session id is its own pid (setsid).
    if [[ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    fi
done

for _ in $(seq "$grace"); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 1
done
for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done

# Stragglers that left the process group (Ray workers, job drivers) still name the cluster folder on their
# command line.
for pid in $(pgrep -f -- "$dir/" || true); do kill -KILL "$pid" 2>/dev/null || true; done
rm -f "${pid_files[@]}"
echo "stopped ${#pids[@]} process group(s) from $dir"
