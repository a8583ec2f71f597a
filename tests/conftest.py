import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The end-to-end tests on the local cluster run inside its network namespace,
# by scripts/k8s-e2e.sh (which sets K8S_E2E=1); elsewhere they are not collected.
import os  # noqa: E402

collect_ignore = [] if os.environ.get("K8S_E2E") == "1" else ["test_k8s_e2e.py"]
