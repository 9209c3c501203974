#!/usr/bin/env bash
# Start an MLflow tracking server for the local cluster: SQLite store and artifact folder inside the cluster folder.
#
#   infra/local/start-mlflow.sh                # then: source /tmp/memae-cluster/mlflow.env
#
# Jobs reach it over HTTP (MLFLOW_TRACKING_URI=http://HOST:PORT) and upload artifacts through it, so nodes need no
# access to the artifact folder. Settings (environment): MEMAE_CLUSTER_DIR (/tmp/memae-cluster), MLFLOW_HOST
# (127.0.0.1: the address the server binds to, chosen explicitly), MLFLOW_PORT (5000). A team server with
# PostgreSQL is infra/mlflow/.
set -euo pipefail

dir=${MEMAE_CLUSTER_DIR:-/tmp/memae-cluster}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
if [[ -e "$dir/mlflow.pid" ]] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
    echo "an MLflow server is already running from $dir (pid $(cat "$dir/mlflow.pid"))" >&2
    exit 1
fi
mkdir -p "$dir/mlflow"

export MLFLOW_DISABLE_TELEMETRY=true
setsid mlflow server --host "$host" --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$dir/mlflow/mlflow.db" --artifacts-destination "$dir/mlflow/artifacts" \
    > "$dir/mlflow.log" 2>&1 < /dev/null &
echo $! > "$dir/mlflow.pid"
echo "export MLFLOW_TRACKING_URI=http://$host:$port" > "$dir/mlflow.env"

for _ in $(seq 120); do
    if ! kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
        echo "the MLflow server exited while starting; see $dir/mlflow.log:" >&2
        tail -n 20 "$dir/mlflow.log" >&2
        exit 1
    fi
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$host:$port/health', timeout=2)" 2>/dev/null
    then
        echo "MLflow up at http://$host:$port (source $dir/mlflow.env)"
        exit 0
    fi
    sleep 1
done
echo "the MLflow server did not answer within 120 s; see $dir/mlflow.log" >&2
exit 1
