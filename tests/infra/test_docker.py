"""The container images: hadolint-clean, and pinned to the versions this repository is tested with."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import INFRA, REPO, find_tool

DOCKERFILES = [INFRA / "docker" / "Dockerfile", INFRA / "mlflow" / "Dockerfile"]
CONSTRAINTS = INFRA / "docker" / "constraints.txt"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True, text=True,
    )


def pins() -> dict[str, str]:
    lines = [line for line in CONSTRAINTS.read_text().splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in (line.split("==") for line in lines)}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_hadolint_passes_without_warnings(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_warning(tmp_path):
    """The threshold is really 'warning': an unpinned apt install (DL3008, a warning) fails the lint."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends curl\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_one_ray_version_in_the_image():
    """The base image's Ray is the ray pinned for everything else (the manifests' rayVersion is checked against the
    same pin)."""
    text = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1) == pins()["ray"]
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in text


def test_constraints_pin_every_runtime_dependency():
    """Each direct dependency of memae is pinned, to a version that satisfies pyproject's bounds."""
    pinned = pins()
    for line in metadata.requires("memae"):
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue  # dev extras
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks {req}"


def test_pin_script_pins_this_environment():
    """The script that writes constraints.txt pins the installed runtime closure, without local builds or dev tools."""
    script = INFRA / "docker" / "pin_constraints.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    written = dict(line.split("==") for line in out.splitlines() if not line.startswith("#"))
    assert written["ray"] == ray.__version__
    assert written["torch"] == metadata.version("torch").split("+")[0]
    assert written["colorful"] == metadata.version("colorful")  # reached only through ray[default]
    assert not {"pytest", "ruff", "memae"} & set(written)


def test_explicit_pins_in_dockerfiles_match_constraints():
    """torch in the image and mlflow in the tracking server are the releases the jobs were tested with (the server
    with its authentication app)."""
    pinned = pins()
    image = (INFRA / "docker" / "Dockerfile").read_text()
    server = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert f'"torch=={pinned["torch"]}"' in image
    assert f'"mlflow[auth]=={pinned["mlflow"]}"' in server


def test_build_context_holds_what_the_image_copies():
    """Every COPY source is re-included by the Dockerfile-specific ignore file (the context is the repo root)."""
    dockerfile = INFRA / "docker" / "Dockerfile"
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    sources = [
        src
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ")
        for src in [word for word in line.split()[1:] if not word.startswith("--")][:-1]
    ]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"{src} is excluded from the build context"
