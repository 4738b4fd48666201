#!/usr/bin/env bash
# The OL and Adult grids through `ct-sweep` on one lent GPU machine (issue 6, part 3), this tree
# against an older commit, alternating, at resources.gpu=0.5 (two packs side by side), 100 epochs,
# MLflow on; also how long the heavy imports take there. For the `device` tool's machines, which
# have torch but neither Ray nor MLflow and no network: prepare an ignored folder .gpu here, carry
# it, and run `bash bench/gpu_ab.sh` there (results in $OUT, or OUT_DIR).
#
#   # here, once (Python 3.12 wheels of what the machine lacks, installed flat and packed;
#   # bench/README.md, "GPU, again", says which were left out to fit the 64 MiB carry):
#   pip install --no-index --no-deps --target /tmp/site312 --python-version 3.12 \
#       --only-binary=:all: --platform manylinux2014_x86_64 --platform any .whl/*.whl
#   tar cJf .gpu/site312.tar.xz -C /tmp/site312 .
#   git archive --format=tar BASE | xz > .gpu/base.tar.xz
#   tar cJf .gpu/data.tar.xz -C "$CT_DATA_DIR" adult README.md SHA256SUMS
set -uo pipefail
out=${OUT_DIR:-${OUT:?set OUT_DIR}}
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 CT_DATA_DIR=/tmp/ct-gpu-data
t0=$(date +%s)
mkdir -p /tmp/site /tmp/base "$CT_DATA_DIR"
tar xJf .gpu/site312.tar.xz -C /tmp/site &
tar xJf .gpu/base.tar.xz -C /tmp/base &
tar xJf .gpu/data.tar.xz -C "$CT_DATA_DIR" &
wait
echo "unpacked in $(($(date +%s) - t0)) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 \
    >"$out/gpu_util_ab.csv" 2>/dev/null </dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT # a sampler left running holds the caller's pipe open
for m in "import torch" "import ray" "from ray import tune" "import mlflow"; do
    for _ in 1 2; do
        TIMEFORMAT="import: $m %R s"
        time PYTHONPATH=$PWD:/tmp/site python3 -c "$m"
    done
done
PYTHONPATH=/tmp/site python3 -c "import torch, ray, mlflow; print('torch', torch.__version__, \
torch.cuda.is_available(), 'ray', ray.__version__, 'mlflow', mlflow.__version__)"
run() { # tree, case, tag, limit in s
    echo "== $(date +%T) $3 --case $2"
    PYTHONPATH=$1:/tmp/site timeout -s INT "$4" python3 "$1/bench/bench_sweep.py" --case "$2" \
        --epochs 100 --modes packed --num-cpus "$(nproc)" --set resources.gpu=0.5 \
        --out "$out/gpu_ab_$2_$3.csv" 2>&1 | tail -4 || echo "FAILED $3 $2"
    pkill -9 -f 'raylet|gcs_server|ray::' 2>/dev/null # a killed sweep's Ray, if any
    sleep 1
}
run "$PWD" 270 new 170
run /tmp/base 270 base 170
run "$PWD" adult new 100
run /tmp/base adult base 100
echo "total $(($(date +%s) - t0)) s"
