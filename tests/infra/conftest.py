"""Shared paths and loaders for the infra/ tests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
VENV_BIN = Path(sys.executable).parent


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object in infra/k8s/."""
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) for doc in load_docs(path)]


def find_tool(name: str) -> str:
    """A linter installed by the dev extras; fail (not skip) without it, so CI cannot pass by not checking."""
    path = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (see infra/README.md)")
    return path


def import_or_fail(module: str) -> Any:
    """Import a dev-extras validator; fail (not skip) without it, like find_tool."""
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: pip install -e '.[dev]' (see infra/README.md)")


def ray_objects() -> list[tuple[str, dict[str, Any]]]:
    """(label, object) for every ray.io object, including the RayJob that the nightly CronJob creates."""
    found = []
    for name, doc in k8s_docs():
        if doc["apiVersion"].startswith("ray.io/"):
            found.append((f"{name}:{doc['kind']}", doc))
        elif doc["kind"] == "ConfigMap":
            found += [(f"{name}:{key}", yaml.safe_load(text)) for key, text in doc.get("data", {}).items()]
    return found


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayClusterSpec inside a RayCluster, RayJob or RayCronJob."""
    if obj["kind"] == "RayCluster":
        return obj["spec"]
    job = obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"]
    return job["rayClusterSpec"]


def pod_templates(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, pod template) of a RayClusterSpec: 'head' first, then each worker group."""
    return [("head", spec["headGroupSpec"]["template"])] + [
        (group["groupName"], group["template"]) for group in spec.get("workerGroupSpecs", [])
    ]
