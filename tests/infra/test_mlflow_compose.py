"""The team MLflow server for one machine (docker compose): PostgreSQL backend, artifact volume, and only the
server's port published, on an address the operator must choose."""

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
    assert {"postgres", "artifacts"} <= set(compose["volumes"])


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
