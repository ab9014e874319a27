"""Frames per second of the learned expression predictor alone, on one core.

    python -m bench.predictor_speed [--frames 2000]

Pinned to one CPU (``sched_setaffinity``) with BLAS limited to one thread (set before numpy
loads): the real-time path's cost per frame, features (similarity alignment) included, on inputs
shaped like MediaPipe's (478 points, 52 scores). Frames run one at a time, as they arrive live,
and also as one batch (the offline tracker's way).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.predictor_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from backend.video.predictor import load_predictor

    model = load_predictor()
    rng = np.random.default_rng(0)
    points = model.template[None] * 100 + rng.normal(0, 0.5, (args.frames, 478, 3))
    scores = rng.uniform(0, 0.3, (args.frames, 52))
    model.predict(points[:10], scores[:10])  # warm-up
    t0 = time.perf_counter()
    for i in range(args.frames):
        model.predict(points[i:i + 1], scores[i:i + 1])
    single = args.frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.predict(points, scores)
    batch = args.frames / (time.perf_counter() - t0)
    print(json.dumps({"frames": args.frames, "one_at_a_time_fps": round(single, 1), "batched_fps": round(batch, 1),
                      "cores": 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
