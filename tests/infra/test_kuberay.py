"""The KubeRay objects of infra/k8s/: documented fields only, valid pod templates, one Ray and one image, token auth,
GPU requests, and entry points that call our jobs with flags they have."""

from __future__ import annotations

import copy
import functools
import importlib.metadata as metadata
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import INFRA, K8S, REPO, cluster_spec, import_or_fail, pod_templates, ray_objects
from .kuberay_schema import SCHEMAS

OBJECTS = ray_objects()
IDS = [label for label, _ in OBJECTS]
IMAGE = f"CHANGE_ME_REGISTRY/memae:{metadata.version('memae')}"
IMAGE_DIR = "/home/ray/memae"  # WORKDIR of infra/docker/Dockerfile
RETRY = ["bash", f"{IMAGE_DIR}/infra/docker/retry-on-3.sh"]  # the schedules' wrapper: a retry on exit 3 only


def pinned_ray() -> str:
    lines = (INFRA / "docker" / "constraints.txt").read_text().splitlines()
    (line,) = [line for line in lines if line.startswith("ray==")]
    return line.removeprefix("ray==")


def entrypoint(obj: dict) -> str | None:
    spec = obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"]
    return spec.get("entrypoint")


def test_every_kind_is_covered():
    assert sorted({obj["kind"] for _, obj in OBJECTS}) == ["RayCluster", "RayCronJob", "RayJob"]


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_documented_fields_only(obj):
    jsonschema.validate(obj, SCHEMAS[obj["kind"]])


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "workerGroupSpecs", 0, "minReplica"), 0),  # misspelt field
        (("spec", "authOptions", "mode"), "tokens"),  # not an AuthMode
        (("spec", "headGroupSpec", "rayStartParms"), {}),
    ],
)
def test_schema_rejects_mistakes(path, value):
    (raycluster,) = [obj for _, obj in OBJECTS if obj["kind"] == "RayCluster"]
    broken = copy.deepcopy(raycluster)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS["RayCluster"])


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_pod_templates_are_valid_kubernetes(obj):
    kv = import_or_fail("kubernetes_validate")
    import kubernetes_validate.utils as kv_utils

    for group, template in pod_templates(cluster_spec(obj)):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
        kv.validate(wrapped, kv_utils.latest_version(), strict=True)


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_same_ray_and_image_everywhere(obj):
    """rayVersion is the Ray of the image; every Ray container runs the memae image tagged with our version."""
    spec = cluster_spec(obj)
    assert spec["rayVersion"] == pinned_ray()
    for group, template in pod_templates(spec):
        assert [c["image"] for c in template["spec"]["containers"]] == [IMAGE], group


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_token_auth_from_our_secret(obj):
    assert cluster_spec(obj)["authOptions"] == {"mode": "token", "secretName": "memae-ray-token"}


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_gpu_workers_and_a_cpu_head(obj):
    """Workers ask Kubernetes for one whole GPU each (requests equal to limits); the head asks for none."""
    spec = cluster_spec(obj)
    templates = dict(pod_templates(spec))
    (head,) = templates.pop("head")["spec"]["containers"]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    assert templates, "no worker group"
    for group in spec["workerGroupSpecs"]:
        (worker,) = group["template"]["spec"]["containers"]
        resources = worker["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1, group["groupName"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        tolerations = group["template"]["spec"].get("tolerations", [])
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_the_long_running_cluster_autoscales_from_zero():
    (raycluster,) = [obj for _, obj in OBJECTS if obj["kind"] == "RayCluster"]
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert [(g["minReplicas"], g["replicas"]) for g in spec["workerGroupSpecs"]] == [(0, 0)]
    assert spec["workerGroupSpecs"][0]["maxReplicas"] > 0


@pytest.mark.parametrize("obj", [obj for _, obj in OBJECTS], ids=IDS)
def test_ray_pods_mount_shared_storage(obj):
    for group, template in pod_templates(cluster_spec(obj)):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = template["spec"]["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"] == "memae-shared", group


def test_nightly_rayjob_is_the_same_in_both_schedules():
    """The RayCronJob and the RayJob that the CronJob creates must not drift apart; nor must their schedules."""
    (cron,) = [obj for _, obj in OBJECTS if obj["kind"] == "RayCronJob"]
    (created,) = [obj for label, obj in OBJECTS if label.startswith("score-nightly-cronjob.yaml")]
    assert created["spec"] == cron["spec"]["jobTemplate"]
    docs = yaml.safe_load_all((K8S / "score-nightly-cronjob.yaml").read_text())
    (k8s_cron,) = [doc for doc in docs if doc["kind"] == "CronJob"]
    assert k8s_cron["spec"]["schedule"] == cron["spec"]["schedule"]
    assert "--incremental" in shlex.split(entrypoint(cron))
    assert "models:/memae@champion" in shlex.split(entrypoint(cron))


def test_training_registers_the_model_that_scoring_uses():
    (train,) = [obj for label, obj in OBJECTS if label == "rayjob-train.yaml:RayJob"]
    words = shlex.split(entrypoint(train))
    name, alias = words[words.index("--register") + 1], words[words.index("--alias") + 1]
    for label, obj in OBJECTS:
        if "score" in label:
            assert f"models:/{name}@{alias}" in shlex.split(entrypoint(obj)), label
    # DDP workers = GPU pods, and GPUs are asked for explicitly: an autoscaling cluster starts with none.
    assert words[words.index("--use-gpu") + 1] == "true"
    (group,) = train["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert int(words[words.index("--num-workers") + 1]) == group["replicas"]


def commands() -> list[tuple[str, list[str]]]:
    """(label, argv) of every job command in an entry point, with the image's paths mapped to this repository (and
    without the retry wrapper)."""
    found = []
    for label, obj in OBJECTS:
        if entrypoint(obj):
            for command in entrypoint(obj).split("&&"):
                argv = shlex.split(command)
                if argv[:2] == RETRY:
                    argv = argv[3:]
                assert argv[0] == "python" and argv[1].startswith(f"{IMAGE_DIR}/jobs/"), command
                found.append((label, [str(REPO / argv[1].removeprefix(f"{IMAGE_DIR}/")), *argv[2:]]))
    return found


COMMANDS = commands()


@functools.cache
def job_help(script: str) -> str:
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("label, argv", COMMANDS, ids=[f"{label}:{Path(argv[0]).name}" for label, argv in COMMANDS])
def test_entrypoint_flags_exist(label, argv):
    """Each flag an entry point passes is one the job accepts (read from its --help)."""
    script = argv[0]
    if not (REPO / script).exists():
        pytest.skip(f"{script} is not written yet")
    for flag in [word for word in argv[1:] if word.startswith("--")]:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", job_help(script)), f"{label}: {script} has no {flag}"


def test_schedules_retry_only_exit_3():
    """KubeRay reruns a failed RayJob on a new cluster whatever the job's exit status (only a passed deadline stops
    it), so no RayJob asks it to (backoffLimit 0); the nightly entry point reruns the job itself, on exit 3 only,
    through the wrapper the image carries. Training is not rerun: a new run would start over (see --resume)."""
    # The image holds the wrapper where the entry points look for it.
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert f"WORKDIR {IMAGE_DIR}\n" in dockerfile
    assert "COPY --chown=ray:users infra/docker/retry-on-3.sh infra/docker/retry-on-3.sh\n" in dockerfile
    for label, obj in OBJECTS:
        if obj["kind"] == "RayCluster":
            continue
        job = obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"]
        assert job["backoffLimit"] == 0, label
        argv = shlex.split(entrypoint(obj))
        if "score" in label:
            assert argv[:2] == RETRY and 2 <= int(argv[2]) <= 5, label
            assert "&&" not in entrypoint(obj) and argv[3:5] == ["python", f"{IMAGE_DIR}/jobs/score.py"], label
        else:
            assert RETRY[1] not in argv, label
