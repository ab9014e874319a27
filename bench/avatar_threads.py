"""The avatar's training beside a busy neighbour (a render using every core, as Cycles does):
seconds per step with torch's default threads (one per core: oversubscribed) and with the thread
governor (``backend.avatar.device``: the cores others leave free), as ratios within one run.

    python -m bench.avatar_threads CLIP.npz [--steps 10] [--repeats 1]

The neighbour is ``cores`` processes spinning in pure Python (no OpenMP of their own, like a
renderer's worker threads). Conditions are interleaved and repeated; medians are reported. The
machine may be shared: the load others put on it is printed with each timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(10000):
            x += 1


class Neighbour:
    """``n`` spinning processes while the context is open."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.stop = mp.Event()
        self.procs = [mp.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(1.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(timeout=5)


def timed_training(asset, clip, cfg, threads: int | None) -> tuple[float, list[int]]:
    """Seconds of ``cfg.steps`` training steps with ``threads`` (None: the governor), and the
    thread counts the governor chose."""
    from backend.avatar.model import initial_avatar
    from backend.avatar.train import AvatarTrainer

    torch.manual_seed(0)
    verts = asset.vertices(clip.identity)
    avatar = initial_avatar(asset, verts, clip.texture, cfg.avatar, clip.fallback)
    trainer = AvatarTrainer(avatar, clip.identity, verts, clip.train, clip.landmark_model, replace(cfg, threads=threads),
                            "cpu")
    trainer.landmark_ids = torch.as_tensor(clip.rigid_ids)
    stats = trainer.train()
    return stats["seconds"], stats["threads"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from backend.avatar.device import others_busy_cores, usable_cores
    from backend.avatar.prepared import load_prepared
    from backend.avatar.train import PRESETS
    from backend.headmodel.ict_source import load_ict

    asset = load_ict(progress=False)
    clip = load_prepared(args.clip)
    cfg = replace(PRESETS["fast"], size=clip.size, steps=args.steps, coverage_views=8)
    cores = usable_cores()
    # (spinning neighbours, our threads: None = the governor)
    conditions = {"no neighbour, governor": (0, None), "no neighbour, one thread a core": (0, cores),
                  "neighbour, governor": (cores, None), "neighbour, one thread a core": (cores, cores)}
    times: dict[str, list[float]] = {k: [] for k in conditions}
    chosen: dict[str, list] = {k: [] for k in conditions}
    loads: dict[str, list] = {k: [] for k in conditions}
    timed_training(asset, clip, replace(cfg, steps=2), 1)  # warm-up
    for _ in range(args.repeats):
        for name, (spinners, threads) in conditions.items():
            with Neighbour(spinners):
                others = others_busy_cores(0.5)  # the machine's other users, and our neighbour
                seconds, used = timed_training(asset, clip, cfg, threads)
            times[name].append(seconds / args.steps)
            chosen[name].append(used)
            loads[name].append(round(others or 0, 2))
            print(json.dumps({"condition": name, "s_per_step": round(seconds / args.steps, 3), "threads": used,
                              "others_busy_cores": loads[name][-1]}), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["no neighbour, governor"]
    report = {"cores": cores, "steps": args.steps, "s_per_step": med, "others_busy_cores": loads,
              "threads_chosen": chosen,
              "slowdown_beside_neighbour_governor": med["neighbour, governor"] / base,
              "slowdown_beside_neighbour_one_thread_a_core": med["neighbour, one thread a core"] / base,
              "one_thread_a_core_vs_governor_no_neighbour": med["no neighbour, one thread a core"] / base,
              # our t threads among the neighbour's `cores` busy ones get t / (cores + t) of the machine
              "machine_share_1_thread_beside_neighbour": 1 / (cores + 1)}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
