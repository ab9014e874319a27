"""Fit the Gaussian avatar to a clip's frames (SHeaP + GPHM), and evaluate it on held-out frames.

Per step: one training frame; the 3DMM (identity + that frame's expression and pose, each with a
learnable correction) gives the posed mesh; the bound Gaussians (+ the expression MLP) are
rendered; the loss is L1 + D-SSIM on the foreground, a landmark term that keeps the 3DMM where
MediaPipe sees the face, and penalties on offsets, scales, MLP deformations and the 3DMM
corrections. Photometric gradients reach identity, expressions and poses (SHeaP), not only the
Gaussians. Every ``densify_every`` steps Gaussians with large screen-space gradients are cloned
within their triangle and nearly transparent ones pruned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from backend.avatar.binding import GaussianBinding
from backend.avatar.coverage import coverage_targets
from backend.avatar.device import ThreadGovernor
from backend.avatar.frames import AvatarFrame
from backend.avatar.model import AvatarConfig, GaussianAvatar, bound_triangles, canonical_positions
from backend.avatar.raster import rasterize, rasterize_2dgs
from backend.avatar.ssim import psnr, ssim
from backend.fitting.geometry import axis_angle_to_matrix
from backend.headmodel.torch_model import MorphableModel


@dataclass
class TrainConfig:
    """One preset's knobs; see ``PRESETS``."""

    size: int = 128
    steps: int = 300
    train_frames: int = 24
    heldout_frames: int = 8
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    lr_position: float = 2e-3
    lr_colour: float = 2.5e-2
    lr_opacity: float = 5e-2
    lr_scale: float = 1e-2
    lr_mlp: float = 1e-3
    lr_expression: float = 5e-3
    lr_pose: float = 2e-4
    lr_identity: float = 2e-3
    ssim_weight: float = 0.2
    landmark_weight: float = 1e-2
    offset_weight: float = 1e-2
    mlp_offset_weight: float = 1e-1
    correction_weight: float = 1e-2
    # Surfaces seen only at grazing angles (cheeks and ears in a frontal clip) otherwise thin out to
    # holes that show from the side; the surface is opaque skin, so opacity is pulled towards 1.
    opacity_weight: float = 0.0  # 0.05 was tried: no visible change from the side, -0.3 dB held-out
    densify_every: int = 100
    densify_until: float = 0.7       # fraction of the steps
    densify_fraction: float = 0.05
    prune_opacity: float = 0.01
    max_growth: float = 2.0          # at most this many times the initial count
    threads: int | None = None       # CPU threads; None: the cores other processes leave free
    max_seconds: float | None = None  # stop early past this much training time (a budget, e.g. the GPU check's)
    # Coverage prior: from random views all around the head (not only the clip's), the avatar's
    # alpha is pulled to 1 inside the fitted mesh's silhouette, so surfaces the clip sees at
    # grazing angles, or never, stay opaque (the hole metric of backend.avatar.coverage).
    # 1.0 over 0.5: worst hole view 1.51 -> 0.86 % (d6), 2.57 -> 1.80 % (s32) where the template's
    # neck is wider than the person's; held-out PSNR unchanged within noise on d0, d10, d6, s32
    coverage_weight: float = 1.0
    coverage_views: int = 48
    coverage_size: int = 64
    # x alpha outside the silhouette (no blobs past the outline). 1.0 was tried on d0: spill 13 -> 6 %
    # of the silhouette, but held-out PSNR 28.3 -> 23.0 dB (hair lies outside the scalp mesh): off.
    coverage_spill: float = 0.0


PRESETS = {
    # CPU: small crops, few Gaussians, minutes.
    # SH degree 0: a talking-head clip shows the face from a narrow range of views, too few to
    # learn view-dependent colour that still looks right from the side (turntables).
    "fast": TrainConfig(size=128, steps=300, train_frames=24, avatar=AvatarConfig(n_gaussians=8000, sh_degree=0)),
    # CPU, the same with twice the steps: the only change that moved held-out PSNR here (+0.75 / +0.8 dB
    # on the tune clips d0 / d10, +0.6 / +0.3 on d19 / d6; more frames, Gaussians, learning rate or
    # looser regularisers did not: BENCHMARKS.md)
    "balanced": TrainConfig(size=128, steps=600, train_frames=24, avatar=AvatarConfig(n_gaussians=8000, sh_degree=0)),
    # GPU: the evaluation resolution, many Gaussians.
    "quality": TrainConfig(size=512, steps=6000, train_frames=64,
                           avatar=AvatarConfig(n_gaussians=100_000, sh_degree=3, mlp_hidden=128), coverage_size=128),
}


@dataclass
class FrameParams:
    """Per-training-frame corrections (SHeaP: photometric gradients refine the 3DMM fit)."""

    rotation: torch.Tensor      # [F, 3] axis-angle, applied on top of the tracked rotation
    translation: torch.Tensor   # [F, 3] cm
    expression: torch.Tensor    # [F, E]


class AvatarTrainer:
    """Holds the avatar, the 3DMM and the frames; ``train`` runs the loop, ``render`` any pose."""

    def __init__(self, avatar: GaussianAvatar, identity: np.ndarray, verts_neutral: np.ndarray,
                 frames: list[AvatarFrame], landmark_model: MorphableModel, config: TrainConfig,
                 device: torch.device | str | None = None):
        """Everything (avatar, 3DMMs, frames, corrections) goes to ``device`` (default: the
        avatar's); frames may be passed on any device."""
        device = torch.device(device) if device is not None else avatar.device
        self.device = device
        self.avatar, self.config = avatar.to(device), config
        self.frames = [f.to(device) for f in frames]
        self.model = MorphableModel.from_asset(avatar.asset).to(device)
        self.landmark_model = landmark_model.to(device)
        self.identity0 = torch.as_tensor(identity, dtype=torch.float32, device=device)
        self.identity_delta = torch.zeros_like(self.identity0, requires_grad=True)
        n, e = len(frames), avatar.asset.n_expressions
        self.params = FrameParams(*(torch.zeros(n, k, device=device, requires_grad=True) for k in (3, 3, e)))
        self.verts_neutral = verts_neutral
        self.history: list[float] = []
        # MediaPipe points the landmark term uses (the pipeline leaves out the sliding outline).
        self.landmark_ids = torch.arange(468, device=device)
        self.threads = ThreadGovernor(fixed=config.threads)
        tris = bound_triangles(avatar.asset)
        corners = verts_neutral[avatar.asset.triangles[tris]]
        area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
        tri_size = np.ones(len(avatar.asset.triangles), np.float32)
        tri_size[tris] = np.sqrt(np.maximum(area, 1e-12))
        # scale cap (log, relative to the triangle): e x the larger of the triangle and the mean share
        self.scale_cap = torch.as_tensor(1.0 + np.maximum(0.0, np.log(np.sqrt(area.sum() / avatar.tri.shape[0]) / tri_size)),
                                         dtype=torch.float32, device=device)
        self.coverage = coverage_targets(verts_neutral, avatar.asset.triangles[tris], config.coverage_views,
                                         config.coverage_size, config.avatar.seed, device,
                                         spill_weight=config.coverage_spill) if config.coverage_weight else None

    # ---- geometry ----

    def pose(self, frame: AvatarFrame, k: int | None, model: MorphableModel | None = None):
        """Model-space points (cm) of ``model`` (default: all vertices) for a frame, with its
        rotation [3, 3], translation [3] (model -> camera) and expression [E]; ``k`` is the frame's
        training index (None: held-out, no corrections)."""
        model = model or self.model
        expr = frame.expression if k is None else (frame.expression + self.params.expression[k]).clamp(0, 1)
        ident = (self.identity0 + self.identity_delta)[None]
        pts = model.shape(ident, expr[None])[0]
        rot = frame.rotation if k is None else axis_angle_to_matrix(self.params.rotation[k]) @ frame.rotation
        trans = frame.translation if k is None else frame.translation + self.params.translation[k]
        return pts, rot, trans, expr

    def posed(self, frame: AvatarFrame, k: int | None, model: MorphableModel | None = None):
        """Camera-space points (cm) and expression [E] (see ``pose``)."""
        pts, rot, trans, expr = self.pose(frame, k, model)
        return pts @ rot.T + trans, expr

    def render(self, frame: AvatarFrame, k: int | None, size: int | None = None, background: torch.Tensor | None = None):
        """(image [H, W, 3], alpha [H, W, 1], gaussians dict, meta) of the avatar in this frame.

        The Gaussians live in model space (the glTF frame of head.glb, in cm) and the pose is the
        camera's view matrix, so view-dependent colour (spherical harmonics) is learned in the
        frame the exported PLY and every viewer use."""
        size = size or self.config.size
        verts, rot, trans, expr = self.pose(frame, k)
        g = self.avatar.gaussians(verts, expr)
        K = frame.K.clone()
        if size != frame.rgb.shape[0]:
            K[:2] *= size / frame.rgb.shape[0]
        viewmat = torch.eye(4, device=self.device)
        viewmat = torch.cat([torch.cat([rot, trans[:, None]], 1), viewmat[3:]], 0)
        raster = rasterize_2dgs if self.avatar.config.surfels else rasterize
        background = torch.zeros(3, device=self.device) if background is None else background
        colors, alphas, meta = raster(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"],
                                      viewmat[None], K[None], size, size, sh_degree=self.avatar.config.sh_degree,
                                      backgrounds=background[None])
        return colors[0, ..., :3], alphas[0], g, meta

    # ---- training ----

    def _optimiser(self) -> torch.optim.Optimizer:
        cfg, a = self.config, self.avatar
        groups = [
            {"params": [a.offset], "lr": cfg.lr_position}, {"params": [a.rot_local], "lr": cfg.lr_scale},
            {"params": [a.log_scale], "lr": cfg.lr_scale}, {"params": [a.opacity_logit], "lr": cfg.lr_opacity},
            {"params": [a.sh], "lr": cfg.lr_colour},
            {"params": [self.params.expression], "lr": cfg.lr_expression},
            {"params": [self.params.rotation, self.params.translation], "lr": cfg.lr_pose},
            {"params": [self.identity_delta], "lr": cfg.lr_identity},
        ]
        if a.mlp is not None:
            groups.append({"params": list(a.mlp.parameters()), "lr": cfg.lr_mlp})
        return torch.optim.Adam(groups, eps=1e-15)

    def loss(self, k: int) -> tuple[torch.Tensor, dict]:
        cfg, frame = self.config, self.frames[k]
        # A random background each step: outside the person a Gaussian can then only match by being
        # transparent, not by turning dark (against black, dark and transparent look the same, and
        # the dark ones then speckle the head seen from the side).
        background = torch.rand(3, device=self.device)
        image, _, g, meta = self.render(frame, k, background=background)
        target = frame.rgb * frame.mask + background * (1 - frame.mask)
        if frame.valid is not None:
            # past the video frame's edge the crop is unknown: no photometric pull there (it would
            # make the neck below a close crop transparent, then prune it)
            image = image * frame.valid + target * (1 - frame.valid)
        l1 = (image - target).abs().mean()
        d_ssim = 1 - ssim(image, target)
        lm_pts, _ = self.posed(frame, k, self.landmark_model)
        lm_px = lm_pts[:, :2] / lm_pts[:, 2:] * frame.K[0, 0] + frame.K[:2, 2]
        ids = self.landmark_ids
        landmark = ((lm_px[ids] - frame.landmarks[ids]).norm(dim=1) / cfg.size).mean()
        reg = cfg.offset_weight * self.avatar.offset.square().sum(1).mean()
        if g["mlp_offset"] is not None:
            reg = reg + cfg.mlp_offset_weight * g["mlp_offset"].square().sum(1).mean()
        reg = reg + cfg.correction_weight * (self.params.expression[k].square().sum() + self.identity_delta.square().mean())
        # no Gaussian much larger than its triangle, or than its share where the triangle is tiny
        reg = reg + torch.relu(self.avatar.log_scale - self.scale_cap[self.avatar.tri, None]).mean()
        reg = reg + cfg.opacity_weight * (1 - torch.sigmoid(self.avatar.opacity_logit)).mean()
        total = (1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * d_ssim + cfg.landmark_weight * landmark + reg
        if self.coverage is not None:
            # the Gaussians of this step (model space, this frame's expression) from a random view
            total = total + cfg.coverage_weight * self.coverage.loss(g, self.avatar.config.surfels)
        return total, {"l1": float(l1.detach()), "ssim": 1 - float(d_ssim.detach()), "meta": meta}

    def train(self, on_step: Callable[[int, int, float], None] | None = None) -> dict:
        """Run the loop; on CPU with torch's thread count governed, restored afterwards."""
        before = torch.get_num_threads()
        try:
            return self._train(on_step)
        finally:
            torch.set_num_threads(before)

    def _train(self, on_step: Callable[[int, int, float], None] | None) -> dict:
        cfg = self.config
        opt = self._optimiser()
        rng = np.random.default_rng(cfg.avatar.seed)
        grad_sum = torch.zeros(self.avatar.offset.shape[0], device=self.device)
        grad_count = torch.zeros_like(grad_sum)
        initial_n = self.avatar.offset.shape[0]
        if self.device.type == "cpu":
            self.threads.start()
        start = time.perf_counter()
        done = 0
        for step in range(cfg.steps):
            if cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds:
                break
            done = step + 1
            if self.device.type == "cpu":
                self.threads.tick()
            k = int(rng.integers(len(self.frames)))
            opt.zero_grad(set_to_none=True)
            total, info = self.loss(k)
            # 2DGS's densification signal is gsplat's gradient of a screen-space shift of each splat.
            means2d = info["meta"].get("gradient_2dgs" if self.avatar.config.surfels else "means2d")
            if means2d is not None and means2d.requires_grad:
                means2d.retain_grad()
            total.backward()
            opt.step()
            self.history.append(float(total.detach()))
            if means2d is not None and means2d.grad is not None:
                g = means2d.grad.reshape(-1, means2d.shape[-2], 2)[0].norm(dim=-1)
                grad_sum += g
                grad_count += (g > 0).float()
            if (step + 1) % cfg.densify_every == 0 and step + 1 < cfg.densify_until * cfg.steps:
                self._densify_and_prune(grad_sum / grad_count.clamp_min(1), rng, initial_n)
                opt = self._optimiser()
                grad_sum = torch.zeros(self.avatar.offset.shape[0], device=self.device)
                grad_count = torch.zeros_like(grad_sum)
            if on_step is not None:
                on_step(step + 1, cfg.steps, float(total.detach()))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {"steps": done, "seconds": time.perf_counter() - start, "gaussians": int(self.avatar.offset.shape[0]),
                "device": str(self.device), "threads": self.threads.history,
                "loss_first": self.history[0], "loss_last": float(np.mean(self.history[-10:]))}

    @torch.no_grad()
    def _densify_and_prune(self, grad: torch.Tensor, rng: np.random.Generator, initial_n: int) -> None:
        """Clone the Gaussians with the largest screen gradients (new barycentric point in the same
        triangle, half the size: the surface stays covered), then drop nearly transparent ones."""
        a, cfg = self.avatar, self.config
        b = a.current_binding().detach()
        room = int(cfg.max_growth * initial_n) - b.n
        n_new = max(0, min(room, int(cfg.densify_fraction * b.n)))
        parts = [b]
        if n_new:
            top = torch.topk(grad, n_new).indices
            clone = b.subset(top)
            clone.bary = torch.as_tensor(rng.dirichlet(np.ones(3), size=n_new), dtype=torch.float32, device=self.device)
            clone.log_scale = clone.log_scale - np.log(1.6)
            b.log_scale[top] -= np.log(1.6)
            parts.append(clone)
        merged = GaussianBinding(*(torch.cat([getattr(p, f) for p in parts]) for f in
                                   ("tri", "bary", "offset", "rot_local", "log_scale", "opacity_logit", "sh")))
        keep = torch.sigmoid(merged.opacity_logit) > cfg.prune_opacity
        merged = merged.subset(keep)
        a.replace_binding(merged, canonical_positions(a.asset, self.verts_neutral, merged))

    # ---- evaluation ----

    @torch.no_grad()
    def evaluate(self, frames: list[AvatarFrame], baseline: Callable[[AvatarFrame], np.ndarray] | None = None) -> dict:
        """PSNR / SSIM of the avatar (and of ``baseline(frame)`` -> [H, W, 3], the textured mesh)
        against held-out frames, on the person mask, at the training size."""
        rows = []
        for frame in frames:
            frame = frame.to(self.device)
            image, _, _, _ = self.render(frame, None)
            target = frame.rgb * frame.mask
            row = {"frame": frame.index, "psnr": float(psnr(image * frame.mask, target, frame.mask)),
                   "ssim": float(ssim(image * frame.mask, target))}
            if baseline is not None:
                base = torch.as_tensor(baseline(frame), dtype=torch.float32, device=self.device)
                row.update(mesh_psnr=float(psnr(base * frame.mask, target, frame.mask)),
                           mesh_ssim=float(ssim(base * frame.mask, target)))
            rows.append(row)
        summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "frame"} if rows else {}
        return {"frames": rows, "mean": summary}
