"""``--avatar fast|balanced|quality``: a tracked clip -> a Gaussian avatar bound to the head mesh.

Picks training and held-out frames, crops them, initialises the Gaussians from the fitted mesh
and baked texture (GPHM), trains (``backend.avatar.train``), evaluates the held-out frames against
the textured mesh alone, and returns what the bundle gets: ``gaussians.ply`` (standard 3DGS layout
+ the binding; metres, in the OpenCV axes splat tools expect: ``shared.splat_axes``; the avatar at
the neutral expression, the expression MLP's neutral output included), ``gaussians_expr.bin`` (the
MLP linearised per shape key, ``backend.avatar.expression_bake``; with the MLP only),
``avatar.json`` (settings, timings, metrics) and ``avatar_sheet.png`` (held-out frames: input |
Gaussians | error | textured mesh).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from backend.avatar.device import requested_threads, resolve_device
from backend.avatar.expression_bake import expression_deltas, neutral_binding
from backend.avatar.frames import AvatarFrame, make_frame, split_frames
from backend.avatar.prepared import PreparedClip
from backend.avatar.mesh_render import ict_textured_mesh, render_mesh
from backend.avatar.model import bound_triangles, initial_avatar
from backend.avatar.ply import write_gaussians_ply
from backend.avatar.train import PRESETS, AvatarTrainer, TrainConfig
from backend.avatar.video_out import contact_sheet
from shared.gaussian_expressions import EXPRESSIONS_FILE, GaussianExpressions, expressions_bytes


@dataclass
class AvatarResult:
    identity: np.ndarray          # [I] refined by the photometric fit
    files: dict[str, bytes]       # gaussians.ply, gaussians_expr.bin (with the MLP), avatar.json, avatar_sheet.png
    report: dict


def build_avatar(rec, track, texture: np.ndarray, preset: str, decode: Callable[[set[int]], dict[int, np.ndarray]],
                 on_progress: Callable[[str, float], None] | None = None, config: TrainConfig | None = None,
                 device: str | torch.device = "auto", threads: int | str | None = None,
                 photos: list[str | Path] | None = None) -> AvatarResult:
    """Train the avatar for ``track`` (a ``VideoTrack``) with models from ``rec`` (a Reconstructor).

    texture: [H, W, 3] uint8 baked atlas; decode(frame numbers) -> {frame: rgb [H, W, 3] uint8};
    device: "auto" | "cpu" | "cuda" (``backend.avatar.device.resolve_device``); threads: CPU threads,
    None for the cores other processes leave free ($HEADRIG_THREADS overrides); photos: stills of
    the same person (front, profiles) added to the training frames (``backend.avatar.photos``)."""
    progress = on_progress or (lambda stage, fraction: None)
    cfg = config or PRESETS[preset]
    if cfg.threads is None:
        cfg = replace(cfg, threads=requested_threads(threads))
    torch.manual_seed(cfg.avatar.seed)
    clip = prepare_clip(rec, track, texture, cfg, decode, photos)
    trainer, stats, metrics, mesh_baseline = fit_avatar(rec.asset, clip, cfg, device, progress)
    identity = (trainer.identity0 + trainer.identity_delta).detach().cpu().numpy().astype(np.float64)
    verts_m = torch.as_tensor(rec.asset.vertices(identity) / 100.0, dtype=torch.float32, device=trainer.device)
    ply = avatar_ply_bytes(trainer.avatar, verts_m)
    sheet = heldout_sheet(trainer, clip.heldout, mesh_baseline)
    report = {"preset": preset, "config": _plain(asdict(cfg)), "train_frames": [f.index for f in clip.train],
              "heldout_frames": [f.index for f in clip.heldout], "training": stats, "heldout": metrics,
              "identity_change": float(np.abs(identity - track.identity).max())}
    files = {"gaussians.ply": ply, "avatar.json": (json.dumps(report, indent=1) + "\n").encode(), "avatar_sheet.png": sheet}
    if trainer.avatar.mlp is not None:
        files[EXPRESSIONS_FILE] = expression_bake_bytes(trainer.avatar, ply)
    return AvatarResult(identity, files, report)


def prepare_clip(rec, track, texture: np.ndarray, cfg: TrainConfig, decode,
                 photos: list[str | Path] | None = None,
                 split: tuple[list[int], list[int]] | None = None) -> PreparedClip:
    """The clip's avatar inputs (``PreparedClip``): crops of the training and held-out frames
    with their person masks (MediaPipe), tracked poses, identity, atlas and landmark model; the
    ``photos`` (fitted to the clip's identity) join the training frames. ``split``: (training,
    held-out) frame numbers instead of ``split_frames``'s (A/B runs of two trackings compare
    the same frames)."""
    train_ids, heldout_ids = split or split_frames(track, cfg.train_frames, cfg.heldout_frames)
    images = decode(set(train_ids) | set(heldout_ids))
    frames = {}
    for i in train_ids + heldout_ids:
        mask = rec.segmenter.mask(images[i], f"{track.info.path} (frame {i})")
        frames[i] = make_frame(i, images[i], mask, track, cfg.size)
    train = [frames[i] for i in train_ids]
    if photos:
        from backend.avatar.photos import photo_frames

        train += photo_frames(rec, photos, track.identity, cfg.size)
    verts = rec.asset.vertices(track.identity)
    return PreparedClip(Path(str(track.info.path)).name, cfg.size, train, [frames[i] for i in heldout_ids],
                        np.asarray(track.identity), np.asarray(texture), _triangle_colours(rec.asset, verts, train[0]),
                        rec.fitter.points_model, np.asarray(rec.fitter.rigid_ids))


def fit_avatar(asset, clip: PreparedClip, cfg: TrainConfig, device: str | torch.device = "auto",
               on_progress: Callable[[str, float], None] | None = None):
    """Initialise (GPHM: fitted mesh + atlas), train and evaluate the avatar of a prepared clip on
    ``device``. Returns (trainer, training stats, held-out metrics, mesh_baseline(frame) -> [H, W, 3])."""
    progress = on_progress or (lambda stage, fraction: None)
    torch.manual_seed(cfg.avatar.seed)
    verts = asset.vertices(clip.identity)
    avatar = initial_avatar(asset, verts, clip.texture, cfg.avatar, clip.fallback)
    trainer = AvatarTrainer(avatar, clip.identity, verts, clip.train, clip.landmark_model, cfg, resolve_device(device))
    trainer.landmark_ids = torch.as_tensor(clip.rigid_ids, device=trainer.device)
    progress("avatar", 0.0)
    stats = trainer.train(lambda step, total, loss: progress("avatar", step / total) if step % 10 == 0 else None)
    textured = ict_textured_mesh(asset, clip.texture)

    def mesh_baseline(frame: AvatarFrame) -> np.ndarray:
        verts, _ = trainer.posed(frame.to(trainer.device), None)
        size = frame.rgb.shape[0]
        return render_mesh(verts.detach().cpu().numpy(), frame.K.cpu().numpy(), textured, size, size).image

    metrics = trainer.evaluate(clip.heldout, mesh_baseline)
    return trainer, stats, metrics, mesh_baseline


def _triangle_colours(asset, verts: np.ndarray, frame: AvatarFrame) -> np.ndarray:
    """[T'] colours of the bound triangles seen in one frame (centroids projected, no occlusion):
    the starting colour of eyes, teeth and mouth, which the skin atlas does not hold."""
    tris = bound_triangles(asset)
    centres = verts[asset.triangles[tris]].mean(1)
    cam = centres @ frame.rotation.numpy().T + frame.translation.numpy()
    uv = cam[:, :2] / cam[:, 2:] * frame.K[0, 0].item() + frame.K[:2, 2].numpy()
    size = frame.rgb.shape[0]
    x = np.clip(uv[:, 0].astype(int), 0, size - 1)
    y = np.clip(uv[:, 1].astype(int), 0, size - 1)
    return frame.rgb.numpy()[y, x]


def avatar_ply_bytes(avatar, verts_m: torch.Tensor) -> bytes:
    """gaussians.ply: the avatar at the neutral expression (w = 0, the MLP's output at 0 folded
    into the binding, as training rendered it) on the neutral mesh ``verts_m`` [V, 3] (metres,
    head.glb's frame, on the avatar's device)."""
    with torch.no_grad():
        g = avatar.gaussians(verts_m, torch.zeros(avatar.asset.n_expressions, device=verts_m.device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gaussians.ply"
        arrays = [g[k].detach().cpu().numpy() for k in ("means", "quats", "scales", "opacities", "sh")]
        write_gaussians_ply(path, *arrays, _cpu(neutral_binding(avatar)))
        return path.read_bytes()


def expression_bake_bytes(avatar, ply: bytes, linearisation: str = "secant") -> bytes:
    """``gaussians_expr.bin`` for the avatar whose neutral is ``ply`` (its sha256 ties them). The
    secant: closer to the MLP than the tangent at the weights animation uses (BENCHMARKS.md)."""
    offsets, colours = expression_deltas(avatar, linearisation)
    expr = GaussianExpressions(list(avatar.asset.expression_names), offsets.cpu().numpy(), colours.cpu().numpy(),
                               hashlib.sha256(ply).hexdigest(), linearisation)
    return expressions_bytes(expr)


def heldout_sheet(trainer: AvatarTrainer, frames: list[AvatarFrame], baseline) -> bytes:
    """PNG bytes: the first six ``frames``, one row each: input | Gaussians | error | textured mesh."""
    rows = []
    with torch.no_grad():
        for frame in frames[:6]:
            image = trainer.render(frame.to(trainer.device), None)[0].cpu().numpy()
            target = (frame.rgb * frame.mask).numpy()
            error = np.clip(np.abs(image - target) * 4, 0, 1)
            rows.append([_u8(frame.rgb.numpy()), _u8(image), _u8(error), _u8(baseline(frame) * frame.mask.numpy())])
    sheet = contact_sheet(rows, ["input", "Gaussians", "|error| x4", "textured mesh"])
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(sheet).save(buf, format="PNG")
    return buf.getvalue()


def _cpu(binding):
    return type(binding)(*(t.cpu() for t in (binding.tri, binding.bary, binding.offset, binding.rot_local,
                                              binding.log_scale, binding.opacity_logit, binding.sh)))


def _u8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
