#!/usr/bin/env bash
# One-shot accelerator check: parity tests on the GPU, then the benchmark (torch on CUDA,
# so its GRU peer is cuDNN). Usage: OUT=<dir> bash benchmarks/gpu_check.sh
# Writes <OUT>/gpu_tests.log, <OUT>/<device>.json and <OUT>/bench.log.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu_tests.log"
python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu_tests.log"
# Exactness on the accelerator: float32 matmuls at full precision (TF32 would need looser
# tolerances than the 1e-5 the parity tests assert).
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 200 python3 -m pytest -q -p no:cacheprovider \
  tests/test_parity_reference.py tests/test_parity_flax_linen.py tests/test_convgru_reference.py \
  2>&1 | tail -15 | tee -a "$OUT/gpu_tests.log"
timeout 300 python3 -m benchmarks.run --peers gru_jax,flax_linen,flax_nnx,torch --rounds 3 \
  --output "$OUT/$(python3 -c 'from benchmarks.run import device_name; print(device_name())').json" \
  2>&1 | tee "$OUT/bench.log" | grep -v '^running'
