#!/usr/bin/env bash
# The end-to-end tests of k8s/ on a local one-node cluster (tests/test_k8s_e2e.py):
# brings the cluster up (scripts/k8s.sh, building what is missing), imports
# the image (scripts/k8s-image.sh), starts a Kafka broker on the node address
# inside the cluster's network namespace, runs the tests there, and always
# tears everything down. Exit status: the tests' (1 when the cluster cannot
# come up, with the reason).
#
#   scripts/k8s-e2e.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
K8S="bash scripts/k8s.sh"
PY="${PYTHON:-$PWD/.venv/bin/python}"
export KAFKA_HOST=192.0.2.2 KAFKA_PORT=9092 KAFKA_DATA=/tmp/protosessions-kafka-k8s PYTHON="$PY"
t0=$SECONDS
cleanup() {
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  $K8S down || true
}
trap cleanup EXIT
$K8S up
bash scripts/k8s-image.sh >/dev/null
eval "$($K8S env)"
$K8S exec bash scripts/kafka.sh start >/dev/null
echo "k8s-e2e.sh: cluster, image and broker ready in $((SECONDS - t0))s" >&2
rc=0
K8S_E2E=1 PROTOSESSIONS_TEST_KAFKA="$KAFKA_HOST:$KAFKA_PORT" \
  $K8S exec "$PY" -m pytest -q -p no:cacheprovider -s -m k8s tests/test_k8s_e2e.py "$@" || rc=$?
cleanup
trap - EXIT
echo "k8s-e2e.sh: done in $((SECONDS - t0))s (rc $rc)" >&2
exit $rc
