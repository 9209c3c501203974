"""The cluster launcher config: valid for `ray up` (the schema and checks shipped in the ray package), token auth,
the memae image, shared storage, MLflow, a CPU head and autoscaling GPU workers."""

from __future__ import annotations

import copy
import importlib.metadata as metadata

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from .conftest import INFRA

CONFIG = INFRA / "ray-up" / "aws.yaml"


def load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def options(config: dict) -> list[str]:
    """The docker run options, split into words."""
    return " ".join(config["docker"]["run_options"]).split()


def test_ray_up_accepts_the_config():
    """What `ray up` does before it calls the cloud: fill in the provider's defaults, then validate (schema and
    cross-field checks such as head_node_type and max_workers)."""
    validate_config(prepare_config(load()))


def test_validation_rejects_a_misspelt_field():
    broken = load()
    broken["available_node_types"]["gpu"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_cpu_head_and_autoscaling_gpu_workers():
    config = load()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert [(w["min_workers"], w["resources"]["GPU"] >= 1) for w in workers] == [(0, True)]
    assert 0 < workers[0]["max_workers"] <= config["max_workers"]


def test_token_auth_on_every_node():
    """RAY_AUTH_MODE=token in the container of every node, and the token file inside a directory mounted from the
    laptop (the same ~/.ray the submitting laptop uses)."""
    config = load()
    words = options(config)
    env = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--env")
    assert env["RAY_AUTH_MODE"] == "token"
    token_dir, token_file = env["RAY_AUTH_TOKEN_PATH"].rsplit("/", 1)
    assert token_file == "auth_token"
    assert config["file_mounts"][token_dir] == "~/.ray"
    # Start commands run inside the container (docker exec) and so inherit its environment; none overrides it.
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE" not in commands


def test_jobs_get_mlflow_and_shared_storage():
    words = options(load())
    env = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--env")
    assert env["MLFLOW_TRACKING_URI"].startswith("http://") and env["MLFLOW_TRACKING_URI"].endswith(":5000")
    # The MLflow user: a credentials file from the laptop where MLflow looks for it (~ is /home/ray in the image),
    # never a password in this committed file.
    assert load()["file_mounts"]["/home/ray/.mlflow"] == "~/.memae/mlflow"
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(env)
    assert "PASSWORD=" not in CONFIG.read_text()
    volumes = [words[i + 1] for i, word in enumerate(words) if word == "--volume"]
    assert "/mnt/shared:/mnt/shared" in volumes
    assert any("/mnt/shared" in command for command in load()["initialization_commands"])


def test_nothing_installed_at_run_time():
    """The image carries everything: no pip in setup commands (runtime_env pip cannot work offline either)."""
    config = load()
    image = config["docker"]["image"]
    assert image == f"CHANGE_ME_REGISTRY/memae:{metadata.version('memae')}"
    setup = config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]
    assert not [command for command in setup if "pip" in command]


def test_dashboard_stays_on_the_head_loopback():
    (start,) = [c for c in load()["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in start


def test_prepared_config_keeps_our_commands():
    """prepare_config merges defaults.yaml: our empty setup lists must survive the merge, not be replaced."""
    prepared = prepare_config(copy.deepcopy(load()))
    assert prepared["head_setup_commands"] == [] and prepared["worker_setup_commands"] == []
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
