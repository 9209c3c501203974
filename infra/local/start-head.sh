#!/usr/bin/env bash
# Start the head node of a local multi-node Ray cluster, token authentication on.
#
#   infra/local/start-head.sh                  # state in $MEMAE_CLUSTER_DIR (default /tmp/memae-cluster)
#   source /tmp/memae-cluster/env              # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, the token
#
# Settings (environment): RAY_PORT (6379), DASHBOARD_PORT (8265), CLIENT_PORT (10001), HEAD_CPUS (all cores),
# OBJECT_STORE_BYTES (1 GiB). These ports are explicit so that several clusters, and other people's Ray, can share
# one machine; the node's other ports are picked free at start. The job server listens on 127.0.0.1 only; Ray's
# own ports listen on every interface (Ray insists on a reachable address), and the token guards them.
set -euo pipefail

dir=${MEMAE_CLUSTER_DIR:-/tmp/memae-cluster}
port=${RAY_PORT:-6379}
dashboard_port=${DASHBOARD_PORT:-8265}
object_store=${OBJECT_STORE_BYTES:-1073741824}

if [[ -e "$dir/head.pid" ]] && kill -0 "$(cat "$dir/head.pid")" 2>/dev/null; then
    echo "a head is already running from $dir (pid $(cat "$dir/head.pid")); stop it with infra/local/stop.sh" >&2
    exit 1
fi
mkdir -p "$dir"
chmod 700 "$dir"

# One token per cluster, kept beside its state: never the user's ~/.ray/auth_token, which other clusters use.
if [[ ! -s "$dir/auth_token" ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/auth_token")
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token"

cat > "$dir/env" <<ENV
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$dir/auth_token
export RAY_ADDRESS=127.0.0.1:$port
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port
ENV

# --block in a new session: the node's processes share one process group that stop.sh can end without
# touching any other Ray on the machine (`ray stop` would kill them all).
setsid ray start --head --block --port="$port" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
    --ray-client-server-port="${CLIENT_PORT:-10001}" --dashboard-agent-listen-port=0 \
    --num-cpus="${HEAD_CPUS:-$(nproc)}" --object-store-memory="$object_store" \
    --resources='{"memae_head": 1}' --temp-dir="$dir/head" --disable-usage-stats \
    > "$dir/head.log" 2>&1 < /dev/null &
echo $! > "$dir/head.pid"

# Ready when the job server answers: `ray job submit` is what comes next.
for _ in $(seq 120); do
    if ! kill -0 "$(cat "$dir/head.pid")" 2>/dev/null; then
        echo "the head exited while starting; see $dir/head.log:" >&2
        tail -n 20 "$dir/head.log" >&2
        exit 1
    fi
    if RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port ray job list > /dev/null 2>&1; then
        echo "head up: ray at 127.0.0.1:$port, jobs at http://127.0.0.1:$dashboard_port (source $dir/env)"
        exit 0
    fi
    sleep 1
done
echo "the head did not answer within 120 s; see $dir/head.log" >&2
exit 1
