#!/usr/bin/env bash
# The project's test command (README, .ci/run): sets up .venv on first use, lints, runs the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `-k sweeps`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
source scripts/env.sh
echo "[test] ruff check + ruff format --check" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
