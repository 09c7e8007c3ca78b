#!/usr/bin/env bash
# Fetch, on this (CPU) machine, the wheels benchmarks/gpu_session.sh installs on the GPU machine,
# which has CuPy, torch and transformers 5.x but no registry: transformers 4.57 (the version
# minibertgen is compared with) and the two packages of it that 5.x pins differently.
# .whl/ is kept out of git through .git/info/exclude. Run from anywhere; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1
ls -l .whl
