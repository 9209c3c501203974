"""MLflow with authentication, as infra/ deploys it, on a real server: infra/local/start-mlflow.sh runs `mlflow server
--app-name basic-auth` with the settings every deployment shares (infra/mlflow/basic_auth.ini). Requests without a
user's credentials are refused; with credentials in the standard MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
variables the pipeline works: the training user registers a model and moves @champion, the nightly scoring user loads
it but cannot move @champion, a person granted EDIT on the model can. Users and grants are made with the requests
infra/README.md shows.

    .venv/bin/python -m pytest -q tests/infra/test_mlflow_auth.py      # about 30 s
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .conftest import INFRA, VENV_BIN

SCRIPTS = INFRA / "local"
# A cluster or server the caller may be using; the server under test must see only its own settings.
FOREIGN = ["MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_CONFIG_PATH",
           "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"]
USERS = {"memae-train": "train-password-0123", "memae-score": "score-password-0123",
         "reviewer": "reviewer-password-0123"}
MODEL = "memae-auth-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    uri: str
    admin: tuple[str, str]
    folder: Path

    def request(self, path: str, user: tuple[str, str] | None = None, body: dict | None = None) -> int:
        """HTTP status of a REST call, as curl would make it."""
        headers = {"Content-Type": "application/json"}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.uri}{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="memae-auth-", dir="/tmp"))  # stop.sh matches processes by this path
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env |= {"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "MEMAE_CLUSTER_DIR": str(folder),
            "MLFLOW_PORT": str(free_port()), "STOP_GRACE": "20"}
    try:
        started = subprocess.run(["bash", str(SCRIPTS / "start-mlflow.sh")], env=env, capture_output=True, text=True,
                                 timeout=150)
        assert started.returncode == 0, started.stdout + started.stderr
        exported = dict(line.removeprefix("export ").split("=", 1)
                        for line in (folder / "mlflow.env").read_text().splitlines())
        yield Server(exported["MLFLOW_TRACKING_URI"],
                     (exported["MLFLOW_TRACKING_USERNAME"], exported["MLFLOW_TRACKING_PASSWORD"]), folder)
    finally:
        stopped = subprocess.run(["bash", str(SCRIPTS / "stop.sh")], env=env, capture_output=True, text=True,
                                 timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def users(server) -> dict[str, tuple[str, str]]:
    """The training and the nightly scoring users and a person, created by the admin (infra/README.md, section 4)."""
    for name, password in USERS.items():
        status = server.request("/api/2.0/mlflow/users/create", server.admin, {"username": name, "password": password})
        assert status == 200, name
    return {name: (name, password) for name, password in USERS.items()}


def test_credentials_stay_with_their_owner(server):
    """The password files and the environment files that carry it are readable by their owner only."""
    for name in ["mlflow.env", "mlflow-runtime-env.yaml", "mlflow/admin_password", "mlflow/secret_key"]:
        assert (server.folder / name).stat().st_mode & 0o077 == 0, name
    runtime_env = (server.folder / "mlflow-runtime-env.yaml").read_text()
    assert f'MLFLOW_TRACKING_PASSWORD: "{server.admin[1]}"' in runtime_env


def test_requests_without_valid_credentials_are_refused(server):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert server.request(search) == 401
    assert server.request(search, (server.admin[0], "not-the-password")) == 401
    assert server.request(search, ("nobody", server.admin[1])) == 401
    assert server.request(search, server.admin) == 200
    assert server.request("/health") == 200  # the readiness probe needs no credentials


def test_pipeline_with_credentials_from_the_environment(server, users, tmp_path, monkeypatch):
    """Train user: registers a model as memae@champion would be. Scoring user: loads it through the scoring job's model
    source and logs its own run, but may not move @champion. A person: may once the admin grants EDIT on the model.
    Nobody: refused."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from memae.checkpoint import save_checkpoint
    from memae.presets import get_preset
    from pipelines.common.tracking import configure_mlflow
    from pipelines.registry.pyfunc import register_checkpoint
    from pipelines.registry.source import load_model_source

    def act_as(user: tuple[str, str] | None) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])

    preset = get_preset("cpu-tiny")
    torch.manual_seed(0)
    net = preset.model.build().eval()
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, net, preset.model, config={"preset": preset.name})
    preprocessing = {"clip_len": preset.clip_len, "height": preset.height, "width": preset.width, "channels": 1,
                     "pixel_range": [-1.0, 1.0], "error_rule": "l1", "frame_rule": "centre", "ingest": {}}

    act_as(users["memae-train"])
    configure_mlflow(experiment="memae-train")
    with mlflow.start_run():
        version = register_checkpoint(checkpoint, MODEL, preprocessing, alias="champion")

    act_as(users["memae-score"])
    source = load_model_source(f"models:/{MODEL}@champion")
    assert source.key == f"{MODEL}-v{version}"
    assert all(torch.equal(source.state[key], value) for key, value in net.state_dict().items())
    configure_mlflow(experiment="memae-score")
    with mlflow.start_run():
        mlflow.log_metric("videos_scored", 1)
    with pytest.raises(MlflowException) as refused:
        MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    assert refused.value.error_code == "PERMISSION_DENIED"

    grant = {"username": "reviewer", "resource_type": "registered_model", "resource_id": MODEL, "permission": "EDIT"}
    assert server.request("/api/3.0/mlflow/users/permissions/grant", server.admin, grant) == 200
    act_as(users["reviewer"])
    MlflowClient().set_registered_model_alias(MODEL, "candidate", version)

    act_as(None)
    with pytest.raises(ValueError, match="401|authenticat"):
        load_model_source(f"models:/{MODEL}@champion")


def test_shared_settings_hold_no_secret():
    """basic_auth.ini, which the image bakes in and the local script copies, names no password, keeps users away
    from the artifact root, and grants read access only by default."""
    config = configparser.ConfigParser()
    config.read(INFRA / "mlflow" / "basic_auth.ini")
    settings = config["mlflow"]
    assert "admin_password" not in settings
    assert settings["default_permission"] == "READ"
    assert settings["database_uri"] == "sqlite:////mlflow-auth/basic_auth.db"
    assert int(settings["auth_cache_ttl_seconds"]) > 0


def test_every_server_in_infra_authenticates():
    """Each `mlflow server` that infra/ starts (a shell line, a container's args, a Dockerfile CMD) runs basic-auth."""
    starts = [
        (path.relative_to(INFRA), match.group(1))
        for path in sorted(INFRA.rglob("*"))
        if path.is_file() and path.name != "README.md"
        for match in re.finditer(r"""\bmlflow["',\s]+server\b([^\n]*)""", path.read_text())
    ]
    assert len(starts) >= 3, starts  # the image, the Kubernetes Deployment, the local script
    for path, rest in starts:
        assert re.match(r"""["',\s]+--app-name["',\s]+basic-auth\b""", rest), f"{path}: mlflow server{rest}"
