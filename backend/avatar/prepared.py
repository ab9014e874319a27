"""A clip's avatar inputs in one small file: the cropped training and held-out frames (JPEG / PNG
bytes), their tracked pose and expression, the fitted identity, the baked atlas and the landmark
model. Training from it needs neither MediaPipe nor PyAV nor the ICT-FaceKit sources (only the
converted asset), so a GPU machine without a package registry can run ``--avatar`` on it
(``bench/gpu_check.sh``), and CPU benchmarks can repeat a training without re-tracking the clip.

Written by ``bench/avatar_prepare.py`` (which tracks the clip); read by ``load_prepared``.
One ``.npz`` without pickles: images as concatenated encoded bytes + offsets.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.avatar.frames import AvatarFrame
from backend.headmodel.torch_model import MorphableModel

FORMAT = "headrig-avatar-clip-1"
_FRAME_FIELDS = ("K", "rotation", "translation", "expression", "landmarks")


@dataclass
class PreparedClip:
    """train / heldout: AvatarFrames on the CPU; identity [I]; texture [H, W, 3] uint8; fallback
    [T'] x 3 per bound triangle in [0, 1]; landmark model (``MorphableModel`` over 478 points) and
    rigid_ids [R]; clip: name; size: crop side in pixels."""

    clip: str
    size: int
    train: list[AvatarFrame]
    heldout: list[AvatarFrame]
    identity: np.ndarray
    texture: np.ndarray
    fallback: np.ndarray
    landmark_model: MorphableModel
    rigid_ids: np.ndarray


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def _unpack(data: np.ndarray, offsets: np.ndarray, i: int) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]].tobytes())))


def save_prepared(path: str | Path, clip: PreparedClip) -> Path:
    """Write ``clip`` to ``path`` (.npz). RGB crops as JPEG (quality 95), masks as 8-bit PNG."""
    frames = clip.train + clip.heldout
    rgb, rgb_off = _pack([_encode((f.rgb.numpy() * 255 + 0.5).astype(np.uint8), "JPEG") for f in frames])
    mask, mask_off = _pack([_encode((f.mask.numpy()[..., 0] * 255 + 0.5).astype(np.uint8), "PNG") for f in frames])
    ones = torch.ones(clip.size, clip.size, 1)
    valid, valid_off = _pack([_encode(((ones if f.valid is None else f.valid).numpy()[..., 0] * 255 + 0.5)
                                      .astype(np.uint8), "PNG") for f in frames])
    lm = clip.landmark_model
    arrays = {f"frame_{k}": np.stack([getattr(f, k).numpy() for f in frames]) for k in _FRAME_FIELDS}
    meta = {"format": FORMAT, "clip": clip.clip, "size": clip.size, "n_train": len(clip.train)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), rgb=rgb, rgb_offsets=rgb_off, mask=mask,
        mask_offsets=mask_off, valid=valid, valid_offsets=valid_off, index=np.array([f.index for f in frames]), identity=clip.identity,
        texture=np.frombuffer(_encode(clip.texture, "PNG"), np.uint8), fallback=clip.fallback,
        lm_mean=lm.mean.numpy(), lm_identity=lm.identity_basis.numpy(), lm_expression=lm.expression_basis.numpy(),
        rigid_ids=clip.rigid_ids, **arrays)
    return path


def load_prepared(path: str | Path) -> PreparedClip:
    """Read a file written by ``save_prepared``; ValueError if it is not one."""
    with np.load(path, allow_pickle=False) as d:
        meta = json.loads(d["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a prepared avatar clip ({meta.get('format')!r})")
        frames = []
        for i, index in enumerate(d["index"]):
            rgb = torch.as_tensor(_unpack(d["rgb"], d["rgb_offsets"], i), dtype=torch.float32) / 255.0
            mask = torch.as_tensor(_unpack(d["mask"], d["mask_offsets"], i), dtype=torch.float32)[..., None] / 255.0
            fields = {k: torch.as_tensor(d[f"frame_{k}"][i]) for k in _FRAME_FIELDS}
            valid = None
            if "valid" in d.files:  # files written before it was kept: all valid
                valid = torch.as_tensor(_unpack(d["valid"], d["valid_offsets"], i), dtype=torch.float32)[..., None] / 255.0
                valid = None if bool((valid == 1).all()) else valid
            frames.append(AvatarFrame(int(index), rgb, mask, **fields, valid=valid))
        n_points = d["lm_mean"].shape[0]
        model = MorphableModel(d["lm_mean"], d["lm_identity"].reshape(-1, n_points, 3),
                               d["lm_expression"].reshape(-1, n_points, 3))
        n = meta["n_train"]
        return PreparedClip(meta["clip"], meta["size"], frames[:n], frames[n:], d["identity"],
                            np.asarray(Image.open(io.BytesIO(d["texture"].tobytes())).convert("RGB")), d["fallback"],
                            model, d["rigid_ids"])
