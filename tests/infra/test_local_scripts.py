"""The shell scripts of infra/ without a cluster: shellcheck-clean, clear about misuse, and the schedules' retry
wrapper rerunning a job on exit 3 only. (The local-cluster scripts start real clusters in test_local_cluster.py.)"""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import INFRA, find_tool

SCRIPTS = sorted((INFRA / "local").glob("*.sh")) + sorted((INFRA / "docker").glob("*.sh"))
RETRY = INFRA / "docker" / "retry-on-3.sh"


def run(name: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMAE_CLUSTER_DIR": str(tmp_path / "cluster")}
    return subprocess.run(["bash", str(INFRA / "local" / name), *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    result = subprocess.run([find_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_executable_bash_with_strict_mode(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK)


def test_worker_needs_a_head(tmp_path):
    result = run("start-worker.sh", tmp_path, "worker1")
    assert result.returncode == 1 and "start-head.sh first" in result.stderr


def test_worker_name_is_checked(tmp_path):
    result = run("start-worker.sh", tmp_path, "Worker 1")
    assert result.returncode == 2 and "node name" in result.stderr


def test_stop_without_a_cluster_is_a_no_op(tmp_path):
    result = run("stop.sh", tmp_path)
    assert result.returncode == 0 and "nothing to stop" in result.stdout


def test_stop_ends_only_its_own_process_groups(tmp_path):
    """A pid file whose process did not start its own session (a reused pid, say) is never signalled."""
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    bystander = subprocess.Popen(["sleep", "60"])  # same session as this test, so not one of ours
    try:
        (cluster / "head.pid").write_text(str(bystander.pid))
        result = run("stop.sh", tmp_path)
        assert result.returncode == 0 and "stopped 0 process group(s)" in result.stdout
        assert bystander.poll() is None, "stop.sh killed a process it did not start"
        assert not (cluster / "head.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_no_script_calls_ray_stop():
    """`ray stop` ends every Ray process on the machine, other people's included."""
    for script in SCRIPTS:
        code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "ray stop" in line], script.name


@pytest.mark.parametrize(
    "statuses, attempts, runs, final",
    [
        ([0], 3, 1, 0),
        ([1], 3, 1, 1),  # some inputs failed: a retry cannot help
        ([2], 3, 1, 2),  # could not start
        ([4], 3, 1, 4),  # another job holds the output folder
        ([3, 0], 3, 2, 0),  # the job failed, then the rerun finished it
        ([3, 1], 3, 2, 1),
        ([3, 3, 3, 0], 3, 3, 3),  # attempts spent
        ([3], 1, 1, 3),
    ],
)
def test_retry_wrapper_reruns_only_on_exit_3(tmp_path, statuses, attempts, runs, final):
    """A fake job exits with the next status of its list each run; the wrapper's status is the last run's."""
    codes, log = tmp_path / "codes", tmp_path / "runs"
    codes.write_text("\n".join(map(str, statuses)) + "\n")
    job = f'echo run >> {log}; exit "$(sed -n "$(wc -l < {log})p" {codes})"'
    result = subprocess.run(["bash", str(RETRY), str(attempts), "bash", "-c", job], capture_output=True, text=True,
                            env={**os.environ, "RETRY_WAIT_S": "0"}, timeout=60)
    assert len(log.read_text().splitlines()) == runs
    assert result.returncode == final, result.stderr


@pytest.mark.parametrize("args", [[], ["3"], ["0", "true"], ["x", "true"]])
def test_retry_wrapper_usage(args):
    result = subprocess.run(["bash", str(RETRY), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr
