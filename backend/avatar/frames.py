"""Training and held-out frames for the avatar: face crops with their tracked pose and masks.

Frames come from a ``VideoTrack``: a crop around the face (landmark box x ``crop_scale``), resized
to the working resolution with an area filter (each crop pixel is the mean of the frame pixels
it covers: no aliasing however far it shrinks; ``warpAffine`` with ``INTER_AREA`` is bilinear), with the intrinsics moved and scaled to match, the person mask from
MediaPipe's selfie segmentation, and the tracked pose and expression as the starting point that
photometric fitting refines (SHeaP).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation


@dataclass
class AvatarFrame:
    """rgb: [H, W, 3] float in [0, 1]; mask: [H, W, 1]; K: [3, 3] crop intrinsics; rotation:
    [3, 3] model -> camera; translation: [3] cm; expression: [E]; landmarks: [478, 2] crop pixels;
    valid: [H, W, 1] share of each pixel inside the video frame (a crop past the frame's edge is
    unknown there, not background: the loss ignores it), None for all."""

    index: int
    rgb: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    expression: torch.Tensor
    landmarks: torch.Tensor
    valid: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> AvatarFrame:
        """The same frame with every tensor on ``device``."""
        return AvatarFrame(self.index, *(getattr(self, k).to(device) for k in
                                         ("rgb", "mask", "K", "rotation", "translation", "expression", "landmarks")),
                           valid=None if self.valid is None else self.valid.to(device))


def split_frames(track, n_train: int, n_heldout: int, guard: int = 3) -> tuple[list[int], list[int]]:
    """Frame numbers for training (spread over the clip, identity frames first) and held-out
    frames that are at least ``guard`` frames from any training frame (never used in fitting)."""
    usable = np.setdiff1d(np.arange(track.n_frames), track.missing)
    train = list(dict.fromkeys([i for i in track.identity_frames if i in set(usable)]))
    spread = usable[np.linspace(0, len(usable) - 1, max(n_train, 1)).round().astype(int)]
    for i in spread:
        if len(train) >= n_train:
            break
        if i not in train:
            train.append(int(i))
    train = sorted(train[:n_train])
    far = [int(i) for i in usable if np.min(np.abs(np.asarray(train) - i)) >= guard]
    heldout = [far[int(k)] for k in np.linspace(0, len(far) - 1, min(n_heldout, len(far))).round()] if far else []
    return train, sorted(set(heldout))


def crop_box(points: np.ndarray, width: int, height: int, crop_scale: float = 1.7) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the landmarks, in frame pixels (may extend past the frame)."""
    x0, y0 = points[:, :2].min(0)
    x1, y1 = points[:, :2].max(0)
    side = int(round(max(x1 - x0, y1 - y0) * crop_scale))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.08 * side  # a little above centre: forehead and hair
    return int(round(cx - side / 2)), int(round(cy - side / 2)), max(side, 8)


def crop_window(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """image[y0:y0 + side, x0:x0 + side] ([H, W] or [H, W, C]), black where it is past the frame."""
    out = np.zeros((side, side) + image.shape[2:], image.dtype)
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize_crop(window: np.ndarray, size: int) -> np.ndarray:
    """A square window [S, S(, C)] -> [size, size(, C)]: area filter when shrinking, bilinear when
    enlarging. Both map pixel edges to edges (u' = u * size / S, centres at +0.5), which is the
    intrinsics' convention in ``make_frame``."""
    side = window.shape[0]
    if side == size:
        return window.copy()
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(window, (size, size), interpolation=interp)


def resized(frame: AvatarFrame, size: int) -> AvatarFrame:
    """The frame at ``size``² (area filter when shrinking), intrinsics and landmarks scaled to match."""
    s = size / frame.rgb.shape[0]
    rgb = resize_crop(frame.rgb.cpu().numpy(), size)
    mask = resize_crop(frame.mask.cpu().numpy()[..., 0], size)
    K = frame.K.clone()
    K[:2] *= s
    valid = None if frame.valid is None else torch.as_tensor(resize_crop(frame.valid.cpu().numpy()[..., 0], size))[..., None]
    return AvatarFrame(frame.index, torch.as_tensor(rgb), torch.as_tensor(mask)[..., None], K, frame.rotation,
                       frame.translation, frame.expression, frame.landmarks * s, valid)


def make_frame(index: int, rgb: np.ndarray, mask: np.ndarray, track, size: int) -> AvatarFrame:
    """One AvatarFrame at ``size``² from the full frame ``rgb`` [H, W, 3] uint8 and ``mask`` [H, W]."""
    points = track.landmarks[index]
    x0, y0, side = crop_box(points, rgb.shape[1], rgb.shape[0])
    scale = size / side
    crop = resize_crop(crop_window(rgb, x0, y0, side), size)
    crop_mask = resize_crop(crop_window(mask.astype(np.float32), x0, y0, side), size)
    inside = np.ones(rgb.shape[:2], np.float32)
    valid = resize_crop(crop_window(inside, x0, y0, side), size) if (x0 < 0 or y0 < 0 or x0 + side > rgb.shape[1]
                                                                    or y0 + side > rgb.shape[0]) else None
    info = track.info
    K = np.array([[track.focal * scale, 0, (info.width / 2 - x0) * scale],
                  [0, track.focal * scale, (info.height / 2 - y0) * scale], [0, 0, 1]], np.float32)
    rot = Rotation.from_rotvec(track.rotations[index]).as_matrix()
    return AvatarFrame(
        index=index,
        rgb=torch.as_tensor(crop, dtype=torch.float32) / 255.0,
        mask=torch.as_tensor(crop_mask, dtype=torch.float32)[..., None],
        K=torch.as_tensor(K),
        rotation=torch.as_tensor(rot, dtype=torch.float32),
        translation=torch.as_tensor(track.translations[index], dtype=torch.float32),
        expression=torch.as_tensor(track.expressions[index], dtype=torch.float32),
        landmarks=torch.as_tensor((points[:, :2] - np.array([x0, y0])) * scale, dtype=torch.float32),
        valid=None if valid is None else torch.as_tensor(valid)[..., None],
    )
