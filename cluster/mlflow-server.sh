#!/usr/bin/env bash
# The MLflow tracking server alone (sqlite backend + artifact root in the state dir, 127.0.0.1).
#   cluster/mlflow-server.sh up [--port P] [--host H] | down
# `cluster/local.sh up` starts it together with the Ray cluster; use this without Ray.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${CT_PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
exec "$py" "$here/ctcluster.py" mlflow "$@"
