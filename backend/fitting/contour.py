"""Sliding contour landmarks: the face outline a detector reports is the silhouette, whose
surface point moves as the head turns. Each contour landmark gets a band of candidate vertices
across the outline; during fitting the candidate that is outermost in the image is used."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.headmodel.asset import HeadModelAsset


@dataclass
class ContourCandidates:
    """landmark: [K] indices of contour landmarks; vertices: [K, M] candidate vertex ids (padded
    by repeating the default); outward: [K, 2] model-space outward direction (x, y)."""

    landmark: np.ndarray
    vertices: np.ndarray
    outward: np.ndarray


def build_contour_candidates(asset: HeadModelAsset, default_points: np.ndarray, contour: np.ndarray,
                             band_cm: float = 0.5, reach_cm: float = 2.5, max_candidates: int = 48) -> ContourCandidates:
    """Candidate bands around each contour landmark's default surface point on the neutral mesh.

    Args:
        default_points: [478, 3] neutral-mesh positions of the landmarks (cm).
        contour: [K] landmark indices that slide.
    """
    # Face part only: neck vertices project below the chin in frontal views and would win.
    skin = asset.part_mask("face")
    skin_ids = np.nonzero(skin)[0]
    skin_pos = asset.neutral[skin_ids]
    centre = default_points[:468].mean(0)
    rows, outwards = [], []
    for lm in contour:
        p = default_points[lm]
        out = p[:2] - centre[:2]
        out /= np.linalg.norm(out) + 1e-9
        perp = np.array([-out[1], out[0]])
        rel = skin_pos - p
        along = rel[:, :2] @ out
        across = rel[:, :2] @ perp
        keep = (np.abs(across) < band_cm) & (along > -reach_cm) & (along < reach_cm) & (rel[:, 2] > -reach_cm)
        ids = skin_ids[keep]
        if len(ids) > max_candidates:  # thin evenly along the band, keeping its extent
            ids = ids[np.argsort(along[keep])][np.linspace(0, len(ids) - 1, max_candidates).round().astype(int)]
        nearest = skin_ids[np.argmin(np.linalg.norm(rel, axis=1))]
        ids = np.concatenate([[nearest], ids])
        rows.append(np.pad(ids, (0, max_candidates + 1 - len(ids)), mode="edge"))
        outwards.append(out)
    return ContourCandidates(np.asarray(contour), np.stack(rows), np.stack(outwards))


def select_silhouette(projected: torch.Tensor, centre_2d: torch.Tensor) -> torch.Tensor:
    """Pick the outermost candidate of every band in the image.

    Args:
        projected: [B, K, M, 2] candidate pixels; centre_2d: [B, 2] projected face centre.
    Returns:
        [B, K] index of the chosen candidate per band.
    """
    direction = projected.mean(2) - centre_2d[:, None, :]  # [B, K, 2] image outward direction
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    score = ((projected - centre_2d[:, None, None, :]) * direction[:, :, None, :]).sum(-1)
    return score.argmax(-1)
