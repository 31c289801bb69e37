#!/usr/bin/env bash
# One-shot accelerator check, sized to a fixed time budget (GPU_CHECK_SECONDS, default 540):
#   1. the benchmark (torch on CUDA, so its GRU peer is cuDNN), plus gru_jax with the scan
#      rolled (unroll=1, the CPU default) as an extra row (BENCH_ARGS, BENCH_SECONDS);
#   2. the parity tests on the accelerator at full float32 matmul precision (RUN_TESTS=0: off);
#   3. the moving-digits experiment in whatever time is left (TRAIN_ARGS overrides its flags).
# Usage: OUT=<dir> bash benchmarks/gpu_check.sh
# Writes <OUT>/bench.log, <OUT>/<device>.json, <OUT>/gpu_tests.log, <OUT>/train.log and the
# run's results.json / predictions.png.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
BUDGET=${GPU_CHECK_SECONDS:-540}
BENCH_ARGS=${BENCH_ARGS:---peers gru_jax,flax_linen,flax_nnx,torch --rounds 3 --variants unroll1:unroll=1}
BENCH_SECONDS=${BENCH_SECONDS:-$((BUDGET * 42 / 100))}
RUN_TESTS=${RUN_TESTS:-1}
TRAIN_ARGS=${TRAIN_ARGS:---config configs/moving_digits.py --config.train.num_epochs=8 \
--config.train.eval_every_steps=3000 --config.train.checkpoint_every_steps=3000}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
left() { echo $((BUDGET - SECONDS)); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu_tests.log"
python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax',
flax.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | tee -a "$OUT/gpu_tests.log"

device=$(python3 -c 'from benchmarks.run import device_name; print(device_name())')
# shellcheck disable=SC2086
timeout "$BENCH_SECONDS" python3 -m benchmarks.run $BENCH_ARGS --output "$OUT/$device.json" \
  2>&1 | tee "$OUT/bench.log" | grep -v '^running'

# Exactness on the accelerator: float32 matmuls at full precision (TF32 would need looser
# tolerances than the parity tests assert).
if [ "$RUN_TESTS" = 1 ]; then
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout $((BUDGET * 22 / 100)) python3 -m pytest -q \
    -p no:cacheprovider tests/test_parity_reference.py tests/test_parity_flax_linen.py \
    tests/test_convgru_reference.py tests/test_parity_torch.py \
    2>&1 | tail -15 | tee -a "$OUT/gpu_tests.log"
fi

remaining=$(($(left) - 15))
echo "training with ${remaining} s left" | tee "$OUT/train.log"
if [ "$remaining" -gt 60 ]; then
  workdir=$(mktemp -d)
  # shellcheck disable=SC2086
  timeout "$remaining" python3 -m experiments.train $TRAIN_ARGS --workdir "$workdir" \
    2>&1 | tee -a "$OUT/train.log" | grep -E 'eval at|test |rror'
  cp "$workdir/results.json" "$OUT/" 2>/dev/null
  cp "$workdir/plots/predictions.png" "$OUT/" 2>/dev/null
fi
echo "gpu_check done after ${SECONDS} s"
