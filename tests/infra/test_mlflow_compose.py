"""The team MLflow server for one machine (docker compose): PostgreSQL backend, artifact volume, MLflow's
authentication with secrets the operator must give, and only the server's port published, on an address the operator
must choose."""

from __future__ import annotations

import re

import yaml
from mlflow.server.security_utils import is_allowed_host_header

from .conftest import INFRA

COMPOSE = INFRA / "mlflow" / "compose.yaml"
REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]*\}$")  # ${VAR:?message}: compose refuses to start without VAR


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_volumes():
    compose = load()
    assert set(compose["services"]) == {"postgres", "mlflow"}
    assert compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {"postgres", "artifacts", "auth"} <= set(compose["volumes"])


def test_only_mlflow_is_published_on_an_explicit_address():
    services = load()["services"]
    assert "ports" not in services["postgres"]
    (port,) = services["mlflow"]["ports"]
    address, host_port, container_port = port.rsplit(":", 2)
    assert (host_port, container_port) == ("5000", "5000")
    # No default: neither all interfaces nor a guess; the operator names the address jobs reach.
    assert REQUIRED.match(address).group(1) == "MLFLOW_BIND_ADDRESS"


def test_postgres_backend_and_proxied_artifacts():
    services = load()["services"]
    uri = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert re.fullmatch(r"postgresql://mlflow:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/mlflow", uri)
    assert REQUIRED.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert "artifacts:/mlartifacts" in services["mlflow"]["volumes"]
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert '"--artifacts-destination", "/mlartifacts"' in dockerfile


def test_server_accepts_the_published_address():
    """MLflow checks Host headers: the address jobs use must be on its allowed list, a stranger must not."""
    allowed_template = load()["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    allowed = re.sub(r"\$\{MLFLOW_BIND_ADDRESS:\?[^}]*\}", "10.0.0.5", allowed_template).split(",")
    assert is_allowed_host_header(allowed, "10.0.0.5:5000")
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


def test_server_requires_authentication():
    """The image runs the basic-auth app with the shared settings; the admin password and the form key have no
    default (compose refuses to start without them); the user store has a volume of its own."""
    mlflow = load()["services"]["mlflow"]
    environment = mlflow["environment"]
    assert REQUIRED.match(environment["MLFLOW_AUTH_ADMIN_PASSWORD"]).group(1) == "MLFLOW_ADMIN_PASSWORD"
    assert REQUIRED.match(environment["MLFLOW_FLASK_SERVER_SECRET_KEY"]).group(1) == "MLFLOW_SECRET_KEY"
    assert environment["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin"
    assert "auth:/mlflow-auth" in mlflow["volumes"]
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert '"mlflow", "server", "--app-name", "basic-auth"' in dockerfile
    assert "COPY basic_auth.ini /etc/mlflow/basic_auth.ini" in dockerfile
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini" in dockerfile
