#!/usr/bin/env bash
# Run a real sweep: sets up .venv on first use, then `ct-sweep run configs/quickstart.yaml`
# (embedded single-node Ray, local MLflow store under the run directory).
# Extra arguments go to ct-sweep run, e.g. `bash scripts/quickstart.sh --set train.epochs=5`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
source scripts/env.sh
exec .venv/bin/ct-sweep run configs/quickstart.yaml "$@"
