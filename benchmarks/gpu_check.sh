#!/usr/bin/env bash
# One prepared GPU session: the benchmarks behind the book's cost page (or, with --notebook, notebook 4 end to end).
# Offline: synthetic CIFAR-format data, 50k train / 10k test images, written on the machine.
#   bash benchmarks/gpu_check.sh [--attention|--notebook]     (results -> $OUT or benchmarks/out)
# default: every benchmark; --attention: a shorter run for the attention paths only -
# the switched hybrid against ResNet-18 (eager and compiled), the per-layer breakdown
# (benchmarks/gpsa_layer.py), and ConViT-Ti and DeiT-Ti (the engine fuses ConViT's attention).
# Wheels for packages the GPU image lacks may be carried in .whl/ (installed to /tmp/site).
set -uo pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PRS_DATA=/tmp/prs-data PYTHONUNBUFFERED=1 CI=true
# No git on the GPU machine: pass the commit in, e.g. PRS_COMMIT=$(git rev-parse --short=12 HEAD).
export PRS_COMMIT=${PRS_COMMIT:-unknown}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "from prs import data; data.write_synthetic_cifar100('$PRS_DATA/synthetic', train_per_class=500, test_per_class=100)"

bench() { timeout "${BENCH_TIMEOUT:-150}" python3 -m prs bench --output "$OUT/bench.json" --steps 30 --warmup 10 --rounds 2 "$@" 2>&1 | tail -2 | tee -a "$OUT/bench.txt"; }
layers() { timeout 120 python3 benchmarks/gpsa_layer.py --output "$OUT/gpsa_layer.json" 2>&1 | tee "$OUT/gpsa_layer.txt"; }
# The attention paths against ResNet-18 at batch 512 (both modes run these).
attention() {
  layers
  bench --model resnet18 --batch-size 512
  bench --model hybrid_resnet18 --batch-size 512 --switched
  bench --model deit_tiny --batch-size 512
  bench --model convit_tiny --batch-size 512
}
if [ "${1:-}" = "--attention" ]; then
  attention
  BENCH_TIMEOUT=200 bench --model hybrid_resnet18 --batch-size 512 --switched --compile
elif [ "${1:-}" != "--notebook" ]; then
  attention
  bench --model resnet18 --batch-size 128
  # A real run: the standard 200-epoch ResNet-18 recipe, 3 epochs of it, eval included.
  timeout 200 python3 -m prs train --config sgd_cifar100 --set data.dataset=synthetic --set train.epochs=3 \
    --set train.channels_last=true --set run.root=/tmp/runs 2>&1 | tail -5 | tee "$OUT/train_resnet18.txt"
  cp /tmp/runs/*/results.json "$OUT/train_resnet18.json" 2>/dev/null
  BENCH_TIMEOUT=150 bench --model resnet18 --batch-size 512 --compile
else
  # The hybrid with every layer switched, against the same network as a CNN (engine side).
  bench --model hybrid_resnet18 --batch-size 512 --switched
  # One notebook end to end on the GPU with papermill: notebook 4 under the `full` profile's
  # models and recipe, on synthetic data, 2 epochs, one seed, schedules squeezed into 2 epochs.
  start=$(date +%s)
  timeout 300 python3 -m prs reproduce --profile full --only 04_prs_cifar100 --no-book --output /tmp/book \
    --set dataset=synthetic --set download=false --set epochs=2 --set 'seeds=[0]' --set 'overrides={train: {warmup_epochs: 0.5}}' \
    --set 'schedules={prs: {name: prs, first: 1, last: 0}, never: {name: never}, uniform: {name: uniform, epoch: 1}, reverse: {name: reverse, first: 0, last: 1}, from_start: {name: from_start}}' \
    2>&1 | tail -25 | tee "$OUT/notebook.txt"
  echo "notebook wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/notebook.txt"
  cp /tmp/book/executed/notebooks/04_prs_cifar100.ipynb "$OUT/" 2>/dev/null
fi
ls -la "$OUT"
