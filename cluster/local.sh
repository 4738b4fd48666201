#!/usr/bin/env bash
# Local multi-node Ray cluster + MLflow server (loopback, token auth). See cluster/README.md.
#   cluster/local.sh up [--workers N --cpus-per-worker C --gpus G] | down | status | health | logs [NAME] | env
# State (token, logs, sqlite, env.sh) lives in $CT_CLUSTER_DIR or cluster/.state (git-ignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${CT_PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
exec "$py" "$here/ctcluster.py" "$@"
