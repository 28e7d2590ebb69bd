#!/usr/bin/env bash
# Issue 3's device check as one command, for the `device` tool's run on an H200:
#   bash bench/gpu_check.sh        (at most ~9.5 min; logs also land in $OUT)
# 1. the kernel tests on the GPU: Triton compiled for real (no TRITON_INTERPRET) on CUDA
#    tensors, and the torch path on CUDA in bfloat16, forward and backward against the
#    reference loop (the C kernel's tests run on the machine's CPU);
# 2. `bench/kernels.py --device cuda`: transformers' eager / grouped_mm / batched_mm against
#    moeplane (Triton, its default on CUDA) and moeplane's torch path, with the GPU targets;
# 3. `bench/triton_configs.py`: candidate block sizes per shape and token count, for
#    triton_path.BLOCK_CONFIGS (vLLM's defaults, never tuned on a GPU here).
# It uses the machine's own python3 (torch, Triton, transformers are installed there) and puts
# moeplane on the path without installing it. Wheels in .whl/ (carried: see the device tool's
# README) are installed first, e.g. the transformers this repo pins if the machine's is older.
set -uo pipefail
out=${OUT:-$(mktemp -d)}
site=$(mktemp -d)
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
fi
ln -s "$PWD/platform" "$site/moeplane"
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__,
  'triton', triton.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$out/gpu.txt"
# the repo's conftest needs the whole platform (FastAPI, SQLAlchemy...): the kernel tests do not
timeout 150 python3 -m pytest -c /dev/null --noconftest -q -p no:cacheprovider \
  --import-mode=importlib -o python_files='test_*.py' tests/unit/kernels 2>&1 | tee "$out/kernel_tests.txt"
timeout 270 python3 bench/kernels.py --device cuda 2>&1 | tee "$out/kernels_gpu.txt"
timeout 150 python3 bench/triton_configs.py 2>&1 | tee "$out/triton_configs.txt"
