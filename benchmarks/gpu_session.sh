#!/usr/bin/env bash
# The GPU checks in one device call, for a session that is lent a GPU (about 7-8 minutes there).
#
# Here, once per checkout: `bash benchmarks/gpu_wheels.sh` (the wheels of transformers 4.57,
# which the GPU image does not have, into .whl/, git-ignored through .git/info/exclude).
# Then the device tool: run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540).
#
# 1. the GPU tests: the whole GPU suite, with the kernels of fast/preview.py (4-bit
#    products, one-launch attention) switched on by the tests that check them, and the
#    CPU-side checks of those kernels (emulator, nvcc), and the Trainer on CuPy (tests/trainer/test_trainer_gpu.py);
# 2. bench_gpu.py on the large shape with the preview kernels on (adds the NF4 rows), then
#    fused and graph modes with them off, for the before/after in one sitting.
# Everything it prints is kept under $OUT (logs and JSON), also when a step is cut short.
set -o pipefail
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "could not install the carried wheels (.whl/)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import transformers, cupy, torch; print('transformers', transformers.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/device.txt"

timeout 240 python3 -m pytest -q -p no:cacheprovider tests/fast/test_gpu.py tests/fast/test_cuda_fourbit.py \
  tests/fast/test_cuda_attention.py tests/training/test_training_gpu.py tests/trainer/test_trainer_gpu.py \
  tests/quantization 2>&1 | tee "$OUT/gpu_tests.log"
tests=$?

timeout 150 python3 benchmarks/bench_gpu.py --shapes large --reps 5 --preview on \
  --json "$OUT/gpu_preview_on.json" 2>&1 | tee "$OUT/gpu_bench_preview_on.log"
timeout 90 python3 benchmarks/bench_gpu.py --shapes large --reps 5 --modes fused,graph --no-fourbit --preview off \
  --json "$OUT/gpu_preview_off.json" 2>&1 | tee "$OUT/gpu_bench_preview_off.log"
exit $tests
