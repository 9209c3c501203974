#!/usr/bin/env bash
# Start an MLflow tracking server for the local cluster: SQLite store and artifact folder inside the cluster folder,
# MLflow's authentication app on (every request needs a user's credentials).
#
#   infra/local/start-mlflow.sh                # then: source /tmp/memae-cluster/mlflow.env
#
# Jobs reach it over HTTP (MLFLOW_TRACKING_URI=http://HOST:PORT) and upload artifacts through it, so nodes need no
# access to the artifact folder. mlflow.env (readable by you only) also holds the admin user's credentials
# (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow clients read), and mlflow-runtime-env.yaml gives
# them to a job: `ray job submit --runtime-env $MEMAE_CLUSTER_DIR/mlflow-runtime-env.yaml -- ...`.
#
# Settings (environment): MEMAE_CLUSTER_DIR (/tmp/memae-cluster), MLFLOW_HOST (127.0.0.1: the address the server
# binds to, chosen explicitly), MLFLOW_PORT (5000), MLFLOW_AUTH_ADMIN_PASSWORD (the admin's password when the cluster
# folder is new; default: a random one, kept in the folder). Needs `mlflow[auth]` (the dev extras). A team server
# with PostgreSQL is infra/mlflow/.
set -euo pipefail

dir=${MEMAE_CLUSTER_DIR:-/tmp/memae-cluster}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
if [[ -e "$dir/mlflow.pid" ]] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
    echo "an MLflow server is already running from $dir (pid $(cat "$dir/mlflow.pid"))" >&2
    exit 1
fi
mkdir -p "$dir/mlflow"
chmod 700 "$dir"

# The admin password and the key that signs the UI's forms: chosen once per cluster folder, kept beside its state.
random_hex() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [[ ! -s "$dir/mlflow/admin_password" ]]; then
    (umask 077 && printf '%s' "${MLFLOW_AUTH_ADMIN_PASSWORD:-$(random_hex)}" > "$dir/mlflow/admin_password")
fi
if [[ ! -s "$dir/mlflow/secret_key" ]]; then
    (umask 077 && random_hex > "$dir/mlflow/secret_key")
fi
password=$(cat "$dir/mlflow/admin_password")

# The deployments' auth settings (infra/mlflow/basic_auth.ini), with the user store in this folder.
sed "s|^database_uri = .*|database_uri = sqlite:///$dir/mlflow/basic_auth.db|" \
    "$(dirname "$0")/../mlflow/basic_auth.ini" > "$dir/mlflow/basic_auth.ini"

export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_AUTH_CONFIG_PATH="$dir/mlflow/basic_auth.ini"
MLFLOW_AUTH_ADMIN_USERNAME=admin MLFLOW_AUTH_ADMIN_PASSWORD=$password \
MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$dir/mlflow/secret_key") \
    setsid mlflow server --app-name basic-auth --host "$host" --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$dir/mlflow/mlflow.db" --artifacts-destination "$dir/mlflow/artifacts" \
    > "$dir/mlflow.log" 2>&1 < /dev/null &
echo $! > "$dir/mlflow.pid"

(
    umask 077
    cat > "$dir/mlflow.env" <<ENV
export MLFLOW_TRACKING_URI=http://$host:$port
export MLFLOW_TRACKING_USERNAME=admin
export MLFLOW_TRACKING_PASSWORD=$password
ENV
    cat > "$dir/mlflow-runtime-env.yaml" <<YAML
env_vars:
  MLFLOW_TRACKING_URI: http://$host:$port
  MLFLOW_TRACKING_USERNAME: admin
  MLFLOW_TRACKING_PASSWORD: "$password"
YAML
)

# /health answers without credentials.
for _ in $(seq 120); do
    if ! kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
        echo "the MLflow server exited while starting; see $dir/mlflow.log:" >&2
        tail -n 20 "$dir/mlflow.log" >&2
        exit 1
    fi
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$host:$port/health', timeout=2)" 2>/dev/null
    then
        echo "MLflow up at http://$host:$port, user admin (source $dir/mlflow.env)"
        exit 0
    fi
    sleep 1
done
echo "the MLflow server did not answer within 120 s; see $dir/mlflow.log" >&2
exit 1
