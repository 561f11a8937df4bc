# source bench/gpu/env.sh: the environment every GPU-machine command runs in
export PYTHONPATH=.site:. RAY_AUTH_MODE=disabled MLFLOW_ALLOW_FILE_STORE=true
