"""``headrig turntable BUNDLE -o turntable.mp4``: the Gaussian avatar rendered around the head.

The Gaussians of ``gaussians.ply`` are re-bound to the bundle's mesh (identity from head.json) and
deformed per frame: neutral, or the weights of an ``animation.json`` played along the orbit. gsplat
renders on CUDA, the torch rasteriser on CPU (keep ``size`` small there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.avatar.binding import GaussianBinding, deform
from backend.avatar.cameras import orbit_cameras
from backend.avatar.device import ThreadGovernor, requested_threads, resolve_device
from backend.avatar.ply import read_gaussians_ply
from backend.avatar.raster import rasterize, rasterize_2dgs
from backend.avatar.video_out import write_mp4
from backend.errors import InputError
from shared.animation import read_animation
from shared.bundle import MANIFEST_FILE, BundleError, HeadManifest
from shared.bundle_fields import read_json


@dataclass
class TurntableOptions:
    frames: int = 120
    size: int = 512
    fps: float = 30.0
    elevation_deg: float = 5.0
    distance_m: float = 0.75
    fov_deg: float = 30.0
    surfels: bool = True
    background: tuple[float, float, float] = (0.08, 0.08, 0.09)


def render_turntable(bundle_dir: str | Path, out_path: str | Path, options: TurntableOptions | None = None,
                     animation: str | Path | None = None, asset=None, device: str | None = None,
                     on_frame: Callable[[int, int], None] | None = None) -> Path:
    """Write an MP4 of the avatar orbiting once; returns its path.

    Raises InputError when the bundle has no Gaussians (build it with ``--avatar``)."""
    opts = options or TurntableOptions()
    bundle_dir = Path(bundle_dir)
    manifest = _read_manifest(bundle_dir)
    ply = bundle_dir / "gaussians.ply"
    if not ply.is_file():
        raise InputError(str(bundle_dir), "the bundle has no gaussians.ply",
                         "build the head with 'headrig reconstruct VIDEO --avatar fast' first", code="no_gaussians")
    cloud = read_gaussians_ply(ply)
    if cloud.binding is None:
        raise InputError(str(ply), "has no binding to the mesh (tri, bary, ...)", "re-export it from HeadRig", code="no_binding")
    if asset is None:
        from backend.headmodel.ict_source import load_ict

        asset = load_ict(progress=False)
    clip = read_animation(animation) if animation else None
    device = resolve_device(device)
    names = list(asset.expression_names)
    identity = np.asarray(manifest.identity)
    binding = _to(cloud.binding, device)
    triangles = torch.as_tensor(asset.triangles, dtype=torch.long, device=device)
    sh = torch.as_tensor(cloud.sh, dtype=torch.float32, device=device)
    opacities = torch.as_tensor(cloud.opacities, dtype=torch.float32, device=device)
    sh_degree = int(round(np.sqrt(sh.shape[1]))) - 1
    verts0 = asset.vertices(identity)
    viewmats, K = orbit_cameras(opts.frames, opts.distance_m, opts.elevation_deg, target=(verts0.mean(0) / 100.0),
                                fov_deg=opts.fov_deg, size=opts.size)
    viewmats = torch.as_tensor(viewmats, dtype=torch.float32, device=device)
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    raster = rasterize_2dgs if opts.surfels else rasterize
    background = torch.tensor([opts.background], dtype=torch.float32, device=device)

    def frames():
        for i in range(opts.frames):
            expr = _weights_at(clip, names, i / opts.fps) if clip else None
            verts = torch.as_tensor(asset.vertices(identity, expr) / 100.0, dtype=torch.float32, device=device)
            with torch.no_grad():
                means, quats, scales = deform(binding, verts, triangles)
                if opts.surfels:
                    scales = torch.cat([scales[:, :2], scales[:, 2:] * 1e-3], 1)
                colors, _, _ = raster(means, quats, scales, opacities, sh, viewmats[i:i + 1], K[None], opts.size,
                                      opts.size, sh_degree=sh_degree, backgrounds=background)
            if on_frame is not None:
                on_frame(i + 1, opts.frames)
            yield (colors[0, ..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    before = torch.get_num_threads()
    if device.type == "cpu":  # beside Blender: the cores it leaves free ($HEADRIG_THREADS overrides)
        ThreadGovernor(fixed=requested_threads(None)).start()
    try:
        write_mp4(out_path, frames(), opts.fps)
    finally:
        torch.set_num_threads(before)
    return Path(out_path)


def _read_manifest(bundle_dir: Path) -> HeadManifest:
    """head.json alone (the service gets head.json and gaussians.ply, not the whole bundle)."""
    path = bundle_dir / MANIFEST_FILE
    try:
        return HeadManifest.from_dict(read_json(path, "the folder is not a HeadRig head bundle"))
    except BundleError as exc:
        raise InputError(str(path), exc.reason, "pass a head bundle folder", code="not_a_bundle") from None


def _weights_at(clip, names: list[str], t: float) -> np.ndarray:
    """[E] weights of the clip at time t (looped), linearly interpolated."""
    times = np.asarray(clip.times)
    t = t % max(clip.duration, 1e-6)
    return np.array([np.interp(t, times, clip.weights[n]) if n in clip.weights else 0.0 for n in names])


def _to(binding: GaussianBinding, device: str) -> GaussianBinding:
    return GaussianBinding(*(torch.as_tensor(t).to(device) for t in (binding.tri, binding.bary, binding.offset,
                                                                      binding.rot_local, binding.log_scale,
                                                                      binding.opacity_logit, binding.sh)))
