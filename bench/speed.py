"""Speed of photo -> written bundle on this machine, per stage.

Targets live here, not in tests. CPU figures are reported as ratios to the issue's 3-second
budget for one photo, measured in one run, plus each stage's share of the total.

    .venv/bin/python -m bench.speed [--repeat 3] [--out bench/results/speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media" / "images"
BUDGET_S = 3.0
PHOTOS = ["d8.jpg", "d9.jpg", "d19.jpg"]


def warm_runs(repeat: int) -> dict:
    from backend.reconstruct import ReconstructOptions, Reconstructor

    stages: dict[str, list[float]] = {}
    totals = []
    with Reconstructor(ReconstructOptions(progress=False)) as rec, tempfile.TemporaryDirectory() as tmp:
        rec.texels  # built once per worker; timed separately below
        for r in range(repeat + 1):
            for name in PHOTOS:
                result = rec.reconstruct([MEDIA / name], Path(tmp) / f"{name}-{r}", force=True)
                if r == 0:
                    continue  # warm-up round
                totals.append(sum(result.timings.values()))
                for k, v in result.timings.items():
                    stages.setdefault(k, []).append(v)
    total = float(np.median(totals))
    return {
        "median_total_x_budget": total / BUDGET_S,
        "stage_share": {k: float(np.median(v)) / total for k, v in stages.items()},
        "runs": len(totals),
    }


COLD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import torch, mediapipe
t1 = time.perf_counter()
from backend.reconstruct import ReconstructOptions, Reconstructor
rec = Reconstructor(ReconstructOptions(progress=False))
rec.texels
t2 = time.perf_counter()
rec.reconstruct([sys.argv[1]], sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "model_and_detectors": t2 - t1, "first_photo": t3 - t2}))
"""


def cold_run() -> tuple[float, dict]:
    """One fresh process: interpreter start, imports, model load, one photo, bundle written.
    Returns the whole wall time and the shares of its parts."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(MEDIA / "d8.jpg"), f"{tmp}/b"], check=True, cwd=REPO,
                              capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "2"})
        total = time.perf_counter() - start
    parts = json.loads(done.stdout.strip().splitlines()[-1])
    parts["interpreter_start"] = total - sum(parts.values())
    return total, {k: v / total for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.json")
    args = parser.parse_args()
    warm = warm_runs(args.repeat)
    cold, cold_share = cold_run()
    report = {"budget_s": BUDGET_S, "warm": warm, "cold_process_x_budget": cold / BUDGET_S,
              "cold_process_share": cold_share, "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
