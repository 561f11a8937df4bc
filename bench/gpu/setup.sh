#!/usr/bin/env bash
# GPU machine set-up: install carried wheels (Ray, MLflow, Serve deps; made by ../shared/tools/make-device-wheelhouse.sh)
# into .site in ONE pip call (separate --target installs skip an existing google/ namespace folder).
# Usage: bash bench/gpu/setup.sh WHEEL_DIR...
set -euo pipefail
wheels=()
for d in "$@"; do wheels+=("$d"/*.whl); done
rm -rf .site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site "${wheels[@]}" 2>&1 | grep -v WARNING || true
PYTHONPATH=.site python3 -c "import ray, mlflow, fastapi, google.rpc; print('ray', ray.__version__, 'mlflow', mlflow.__version__)"
