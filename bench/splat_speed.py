"""Speed and peak memory of the Gaussian rasteriser on a head-like scene.

CPU (the torch path): figures are ratios measured within one run (project rule) — frames per
second as multiples of real time at 30 fps, and relative to the baseline configuration
(128^2, 10k Gaussians, forward). Each configuration runs in a fresh process so its peak RSS
growth (over the scene's own tensors) is its own. Times are best of --repeat after a warm-up.
``--device cuda`` times gsplat (absolute fps; only meaningful on a GPU).

    .venv/bin/python -m bench.splat_speed [--sizes 128 256 512] [--counts 10000 30000 100000]
    .venv/bin/python -m bench.splat_speed --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

REAL_TIME_FPS = 30.0
BASELINE = (128, 10_000)


def head_scene(n: int, size: int, seed: int = 0, device: str = "cpu") -> dict:
    """n Gaussians on a 10 cm sphere 60 cm in front of a camera whose image spans 30 cm there,
    flattened along the sphere normal (like surface-bound avatar Gaussians), for a size^2 image.
    Returns gsplat-style keyword arguments (means [N, 3], quats [N, 4], ... Ks [1, 3, 3])."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = 0.1 * normal + torch.tensor([0.0, 0.0, 0.6])
    # rotation taking z to the normal: quaternion of the half-way vector (w, x, y, z)
    half = torch.nn.functional.normalize(normal + torch.tensor([0.0, 0.0, 1.0 + 1e-6]), dim=-1)
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(half)
    quats = torch.cat([(z * half).sum(-1, keepdim=True), torch.linalg.cross(z, half)], -1)
    spacing = math.sqrt(4 * math.pi * 0.1 ** 2 / n)
    # tangential sigma 1-2 x the spacing: neighbours overlap, so the surface is opaque as trained
    # avatars are (pixels saturate and the back of the head is skipped)
    scales = spacing * torch.rand(n, 3, generator=g).add(1.0) * torch.tensor([1.0, 1.0, 0.1])
    opacities = torch.rand(n, generator=g) * 0.5 + 0.5
    colors = torch.rand(n, 3, generator=g)
    f = size * 0.6 / 0.3
    ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])[None]
    scene = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
             "viewmats": torch.eye(4)[None], "Ks": ks, "width": size, "height": size}
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in scene.items()}


def rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def time_one(size: int, n: int, repeat: int, backend: str, device: str) -> dict:
    """Best-of-repeat seconds of forward and forward+backward, and peak RSS growth (MiB) of this
    process over the scene's own footprint."""
    from backend.avatar.raster import rasterize

    scene = head_scene(n, size, device=device)
    params = [scene[k].requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    before = rss_kib()
    out = {}
    for mode in ("forward", "forward_backward"):
        times = []
        for _ in range(repeat + 1):  # first run warms up
            sync()
            t0 = time.perf_counter()
            with torch.set_grad_enabled(mode != "forward"):
                img, alpha, meta = rasterize(**scene, backend=backend)
                if mode != "forward":
                    (img.sum() + alpha.sum()).backward()
            sync()
            times.append(time.perf_counter() - t0)
            for p in params:
                p.grad = None
        out[mode] = min(times[1:])  # best of: the 2-core machine is shared, interference only adds
        out["n_dropped"] = meta.get("n_dropped", 0)
        # peaks only grow, and forward+backward runs second: its figure covers both
        if device == "cuda":
            out[f"{mode}_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            out[f"{mode}_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return out


def run_cpu(sizes: list[int], counts: list[int], repeat: int) -> list[dict]:
    rows = []
    for size in sizes:
        for n in counts:
            cmd = [sys.executable, "-m", "bench.splat_speed", "--one", json.dumps([size, n, repeat])]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            rows.append({"size": size, "n": n, **res})
            print(f"measured {size}^2 {n}", file=sys.stderr)
    base_row = next((r for r in rows if (r["size"], r["n"]) == BASELINE), rows[0])
    base = base_row["forward"]
    print(f"torch CPU rasteriser, {torch.get_num_threads()} threads, best of {repeat}. Ratios: x real time ="
          f" fps / {REAL_TIME_FPS:g}; 'vs base' = speed relative to the forward pass at {base_row['size']}^2 with"
          f" {base_row['n']} Gaussians.")
    print(f"{'size':>6} {'N':>7} | {'fwd x RT':>8} {'vs base':>8} | {'f+b x RT':>8} {'vs base':>8} | "
          f"{'f+b/fwd':>7} | {'MiB fwd':>7} {'f+b':>5} | dropped")
    for r in rows:
        fwd, fb = r["forward"], r["forward_backward"]
        print(f"{r['size']:>6} {r['n']:>7} | {1 / fwd / REAL_TIME_FPS:8.3f} {base / fwd:8.3f} | "
              f"{1 / fb / REAL_TIME_FPS:8.3f} {base / fb:8.3f} | {fb / fwd:7.2f} | {r['forward_mib']:7.0f} "
              f"{r['forward_backward_mib']:5.0f} | {r['n_dropped']}")
    return rows


def run_cuda(sizes: list[int], counts: list[int], repeat: int) -> None:
    if not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (torch.cuda.is_available() is False); nothing timed.")
    try:
        import gsplat  # noqa: F401
    except ImportError:
        sys.exit("--device cuda: gsplat is not installed (pip install gsplat); nothing timed.")
    print(f"gsplat on {torch.cuda.get_device_name()}: absolute frames per second")
    for size in sizes:
        for n in counts:
            r = time_one(size, n, repeat, "gsplat", "cuda")
            print(f"{size:>5}^2 {n:>7}: forward {1 / r['forward']:8.1f} fps, forward+backward "
                  f"{1 / r['forward_backward']:8.1f} fps, peak GPU memory {r['forward_backward_mib']:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--counts", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one CPU configuration, JSON out
    args = ap.parse_args()
    if args.one:
        size, n, repeat = json.loads(args.one)
        print(json.dumps(time_one(size, n, repeat, "torch", "cpu")))
    elif args.device == "cuda":
        run_cuda(args.sizes, args.counts, args.repeat)
    else:
        run_cpu(args.sizes, args.counts, args.repeat)


if __name__ == "__main__":
    main()
