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


def cold_run() -> float:
    """One fresh process: interpreter start, imports, model load, one photo, bundle written."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "backend", "reconstruct", str(MEDIA / "d8.jpg"), "-o", f"{tmp}/b", "-q"],
                       check=True, cwd=REPO, capture_output=True, env={**os.environ, "GLOG_minloglevel": "2"})
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.json")
    args = parser.parse_args()
    warm = warm_runs(args.repeat)
    cold = cold_run()
    report = {"budget_s": BUDGET_S, "warm": warm, "cold_process_x_budget": cold / BUDGET_S, "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
