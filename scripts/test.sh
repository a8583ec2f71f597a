#!/usr/bin/env bash
# The project's test command (README step 2; .ci/run calls exactly this).
# Makes .venv if needed, installs the project with its dev extra, starts the
# local Kafka broker the integration tests need, runs pytest, stops the broker.
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

"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
