"""Training and held-out frames for the avatar: face crops with their tracked pose and masks.

Frames come from a ``VideoTrack``: a crop around the face (landmark box x ``crop_scale``), resized
to the working resolution, with the intrinsics moved and scaled to match, the person mask from
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
    [3, 3] model -> camera; translation: [3] cm; expression: [E]; landmarks: [478, 2] crop pixels."""

    index: int
    rgb: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    expression: torch.Tensor
    landmarks: torch.Tensor


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


def make_frame(index: int, rgb: np.ndarray, mask: np.ndarray, track, size: int) -> AvatarFrame:
    """One AvatarFrame at ``size``² from the full frame ``rgb`` [H, W, 3] uint8 and ``mask`` [H, W]."""
    points = track.landmarks[index]
    x0, y0, side = crop_box(points, rgb.shape[1], rgb.shape[0])
    scale = size / side
    # An affine warp crops and resizes in one step and pads outside the frame with black. Pixel
    # centres: continuous u' = (u - x0) * scale, with OpenCV's integer centres at u - 0.5.
    warp = np.array([[scale, 0, (0.5 - x0) * scale - 0.5], [0, scale, (0.5 - y0) * scale - 0.5]], np.float32)
    crop = cv2.warpAffine(rgb, warp, (size, size), flags=cv2.INTER_AREA, borderValue=(0, 0, 0))
    crop_mask = cv2.warpAffine(mask.astype(np.float32), warp, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
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
    )
