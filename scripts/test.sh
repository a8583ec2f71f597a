#!/usr/bin/env bash
# The project's test command (README step 2; .ci/run calls exactly this).
# Makes .venv if needed, installs the project with its dev extra, starts the
# local Kafka broker the integration tests need, runs pytest, stops the broker,
# then runs the end-to-end tests on a local one-node Kubernetes cluster
# (scripts/k8s-e2e.sh: builds what is missing, brings it up, always tears it
# down; needs root).
#
#   scripts/test.sh               # everything (what CI runs)
#   scripts/test.sh ARGS...       # pytest ARGS only, no cluster (a targeted run)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON_BOOTSTRAP:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

export PYTHON="$PWD/.venv/bin/python"
export KAFKA_PORT="${KAFKA_PORT:-19092}"
trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
PROTOSESSIONS_TEST_KAFKA="$(bash scripts/kafka.sh start | tail -n 1)"
export PROTOSESSIONS_TEST_KAFKA

rc=0
"$PYTHON" -m pytest -q -p no:cacheprovider "$@" || rc=$?
bash scripts/kafka.sh stop >/dev/null 2>&1 || true
if [ $# -eq 0 ]; then
  t0=$SECONDS
  bash scripts/k8s-e2e.sh || rc=$((rc ? rc : $?))
  echo "test.sh: Kubernetes end-to-end tests took $((SECONDS - t0))s" >&2
fi
exit $rc
