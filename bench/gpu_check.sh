#!/usr/bin/env bash
# The GPU check (one H200, Python 3.12 + torch 2.11+cu130 + nvcc + ninja, no package registry),
# within 8 minutes: compile gsplat's CUDA kernels (timed), run the CUDA parity tests, train the
# `quality` preset on the prepared clip and print held-out PSNR / SSIM, training seconds, render
# frames per second and the hole fraction from every side.
#
# Inputs: .gpu/ from bench/gpu_prepare.sh (run on the CPU machine first); the repository root is
# the working directory. Results: $OUT/gpu_check.log and $OUT/quality.json ($OUT defaults to
# /tmp/gpu_check). Budget: BUDGET_S (default 480) for everything; the training gets what the
# compile and the tests leave, less EVAL_S (default 75) for evaluation and the hole renders.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
BUDGET_S=${BUDGET_S:-480}
EVAL_S=${EVAL_S:-75}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
start=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - start))); }

for f in .gpu/clip.npz .gpu/ict-facekit.npz; do
    [ -f "$f" ] || { echo "missing $f: run bench/gpu_prepare.sh on the CPU machine first"; exit 2; }
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
# Hopper only: one architecture compiles in a fraction of the time of gsplat's default list
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== 1. compile gsplat's CUDA kernels"
timeout $(( $(left) - 120 )) python3 -c "
import time; t = time.perf_counter()
from gsplat.cuda._backend import _C
assert _C is not None, 'gsplat: no CUDA extension'
print(f'gsplat CUDA kernels compiled and loaded in {time.perf_counter() - t:.1f} s')" || { echo "FAILED: gsplat compile"; exit 1; }

echo "== 2. CUDA parity tests (gsplat kernels vs the torch rasteriser; device switch)"
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_avatar_cuda.py tests/test_avatar_raster.py
tests_rc=$?

echo "== 3. train 'quality' on $(python3 -c "import numpy, json; print(json.loads(numpy.load('.gpu/clip.npz')['meta'].tobytes())['clip'])")"
train_s=$(( $(left) - EVAL_S ))
[ "$train_s" -gt 30 ] || { echo "FAILED: no time left to train ($train_s s)"; exit 1; }
timeout $(( $(left) - 5 )) python3 -m bench.avatar_run .gpu/clip.npz --preset quality --device cuda \
    --asset .gpu/ict-facekit.npz --set max_seconds=$train_s --fps-repeats 200 --hole-size 256 --out "$OUT/quality.json"
run_rc=$?
python3 - "$OUT/quality.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"held-out PSNR {r['heldout_psnr']:.2f} dB, SSIM {r['heldout_ssim']:.3f} (textured mesh {r['mesh_psnr']:.2f} dB)")
print(f"training {r['training_s']:.1f} s for {r['steps']} steps, {r['gaussians']} Gaussians at {r['size']}^2")
print(f"render {r['render_fps']:.0f} frames/s; holes: worst view {r['holes']['max_pct']:.2f} %")
PY
echo "== done in $(( $(date +%s) - start )) s (tests rc=$tests_rc, training rc=$run_rc)"
[ $tests_rc -eq 0 ] && [ $run_rc -eq 0 ]
