# Environment defaults every ct entry point uses (sourced by the scripts; ct-sweep sets the same
# defaults itself). Telemetry off, Ray on loopback, Ray's auth mode explicit.
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
export DO_NOT_TRACK="${DO_NOT_TRACK:-true}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"
export TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="${TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S:-0}"
export PYTHONUNBUFFERED=1
# A checkout beside a shared/data folder (as in this project's CI) reads the datasets from there.
_ct_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${CT_DATA_DIR:-}" ] && [ -d "$_ct_root/../shared/data" ]; then
  export CT_DATA_DIR="$(cd "$_ct_root/../shared/data" && pwd)"
fi
unset _ct_root
