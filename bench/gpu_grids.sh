#!/usr/bin/env bash
# The paper's two target grids through `ct-sweep` on one GPU machine (issue 6, part 3): the OL
# gen_params grid (270 settings) and the Adult tune grid (18 settings, nce 5000), 100 epochs,
# MLflow on, each run by bench/bench_sweep.py (wall clock, training vs overhead). GPU trials take
# a share of the GPU (resources.gpu); the same grids on the machine's CPUs alone are the baseline.
#
#   bash bench/gpu_grids.sh [OUT_DIR]      # CSVs in OUT_DIR (default bench/results)
#
# Needs a CUDA GPU and, for Adult, the data (CT_DATA_DIR or the download cache). One run of each
# (about 6 minutes in all on an H100 with 16 CPUs); each run stops after 200 s at most. The GPU's
# use is sampled every 2 s into gpu_util.csv (the CPU-only runs must leave it idle).
set -uo pipefail
out=${1:-bench/results}
py=${PYTHON:-python3}
cpus=${CPUS:-$(nproc)}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import torch, ray, mlflow; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__, 'mlflow', mlflow.__version__)"

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 \
    >"$out/gpu_util.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT

grid() { # case, GPU share per trial (0: CPU only), file tag
    echo "== $(date +%T) --case $1 resources.gpu=$2"
    timeout -s INT 200 "$py" bench/bench_sweep.py --case "$1" --epochs 100 --modes packed \
        --num-cpus "$cpus" --set "resources.gpu=$2" --out "$out/sweep_gpu_$1_$3.csv" || {
        echo "FAILED: --case $1 resources.gpu=$2"
        pkill -9 -f 'raylet|gcs_server|ray::' || true # a killed sweep's Ray, if any
    }
}
grid 270 0.5 g050     # two slots: the Generic/ECCo pack (180) and the REVISE pack (90) side by side
grid adult 0.5 g050   # two slots: the 9 CT settings and the 9 vanilla ones
grid 270 0.25 g025    # four slots: Generic/ECCo cut in three packs by cost
grid 270 1 g100       # one slot: the two packs one after the other
grid 270 0 cpu        # no GPU: CPU trials on all cores (the CPU planner)
grid adult 0 cpu
