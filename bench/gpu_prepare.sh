#!/usr/bin/env bash
# Prepare the GPU check's inputs HERE (a CPU machine with the project's venv and ../shared), once:
# the quality preset's crops of one clip (tracked with MediaPipe here, so the GPU machine needs
# neither MediaPipe nor PyAV), the converted ICT asset, and the Python 3.12 wheels the GPU image
# lacks. All land in .gpu/ (git-ignored, about 40 MiB: it travels with the working tree, never commit it).
#
#   bash bench/gpu_prepare.sh [CLIP.mp4]        then, on the GPU machine: bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CLIP=${1:-../shared/media/video/d3.mp4}  # 354 frames at 512²: the "300-frame clip" of the GPU goal
mkdir -p .gpu/whl
PYTHONPATH=$PWD "$PY" -m bench.avatar_prepare "$CLIP" --preset quality -o .gpu/clip.npz --asset-to .gpu
# pure-Python wheels the GPU image (Python 3.12, torch 2.11+cu130, numpy 2) does not hold
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    gsplat==1.5.3 plyfile==1.0.3 pygltflib==1.16.5 dataclasses-json==0.6.7 marshmallow==3.26.2 deprecated==1.3.1
du -sh .gpu
