#!/usr/bin/env bash
# Run a memae job, and run it again only when it exits 3 ("the job itself failed": a node, the cluster or the
# tracking server went away). Every other status is final and becomes this script's: 0 all done, 1 some inputs
# failed (a retry cannot help), 2 could not start, 4 another job holds the output folder
# (pipelines/common/exit_codes.py). Jobs resume, so a retry finishes what the failed attempt began.
#
#   retry-on-3.sh ATTEMPTS COMMAND [ARG...]
#   retry-on-3.sh 3 python /home/ray/memae/jobs/score.py --model models:/memae@champion ... --incremental
#
# The nightly schedules in infra/ run their job through it (in the image at /home/ray/memae/infra/docker/): KubeRay
# retries a failed RayJob whatever its exit status, so the retry has to happen here. RETRY_WAIT_S (default 60) is
# the pause before each new attempt.
set -euo pipefail

# Misuse exits 2, like a job that could not start.
[[ $# -ge 2 ]] || { echo "usage: retry-on-3.sh ATTEMPTS COMMAND [ARG...]" >&2; exit 2; }
attempts=$1
shift
[[ "$attempts" =~ ^[1-9][0-9]*$ ]] || { echo "retry-on-3.sh: ATTEMPTS must be a positive integer: $attempts" >&2; exit 2; }

for attempt in $(seq "$attempts"); do
    status=0
    "$@" || status=$?
    if [[ $status -ne 3 ]]; then
        exit "$status"
    fi
    if [[ $attempt -lt $attempts ]]; then
        echo "retry-on-3.sh: attempt $attempt of $attempts exited 3 (the job failed); again in ${RETRY_WAIT_S:-60} s" >&2
        sleep "${RETRY_WAIT_S:-60}"
    fi
done
echo "retry-on-3.sh: all $attempts attempts exited 3" >&2
exit 3
