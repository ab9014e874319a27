"""Differentiable linear head model: neutral + identity . B_id + expression . B_exp, then a
similarity pose. Units: centimetres in model space; camera space is whatever the pose maps to
(centimetres when scale is 1)."""

from __future__ import annotations

import numpy as np
import torch

from backend.fitting.geometry import axis_angle_to_matrix
from backend.headmodel.asset import HeadModelAsset


class MorphableModel(torch.nn.Module):
    """A linear morphable model over P points: mesh vertices or barycentric surface points.

    Buffers: mean [P, 3], identity_basis [I, P*3], expression_basis [E, P*3] (all cm).
    """

    def __init__(self, mean: np.ndarray, identity_basis: np.ndarray, expression_basis: np.ndarray):
        super().__init__()
        # Bases as contiguous [K, P*3] matrices: a plain matmul is tens of times faster than an
        # einsum over a strided [K, P, 3] view (measured 44 ms -> under 1 ms per step at P=478).
        mean = np.ascontiguousarray(mean, np.float32)
        self.register_buffer("mean", torch.from_numpy(mean.copy()))
        n_values = mean.size  # P * 3; explicit so that an empty basis ([0, P, 3]) reshapes too
        self.register_buffer("identity_basis", torch.from_numpy(np.ascontiguousarray(identity_basis, np.float32).reshape(len(identity_basis), n_values).copy()))
        self.register_buffer("expression_basis", torch.from_numpy(np.ascontiguousarray(expression_basis, np.float32).reshape(len(expression_basis), n_values).copy()))

    @classmethod
    def from_asset(cls, asset: HeadModelAsset) -> "MorphableModel":
        """The model over all mesh vertices."""
        return cls(asset.neutral, asset.identity_basis, asset.expression_basis)

    @classmethod
    def at_surface_points(cls, asset: HeadModelAsset, corners: np.ndarray, bary: np.ndarray) -> "MorphableModel":
        """The model restricted to barycentric points; exact, because the model is linear.

        Args:
            corners: [P, 3] vertex indices of the triangle each point lies on.
            bary: [P, 3] barycentric weights.
        """

        def interp(values: np.ndarray) -> np.ndarray:  # values [..., V, 3] -> [..., P, 3]
            return np.einsum("...pkc,pk->...pc", values[..., corners, :], bary.astype(np.float32))

        return cls(interp(asset.neutral), interp(asset.identity_basis), interp(asset.expression_basis))

    def with_identity(self, identity: np.ndarray) -> "MorphableModel":
        """The same points with identity [I] folded into the mean and no identity modes left:
        tracking holds identity fixed, and this drops two thirds of every step's arithmetic."""
        ident = torch.as_tensor(np.asarray(identity, np.float32))
        mean = (self.mean + (ident @ self.identity_basis).reshape(-1, 3)).numpy()
        n_points = mean.shape[0]
        return MorphableModel(mean, np.zeros((0, n_points, 3), np.float32),
                              self.expression_basis.numpy().reshape(-1, n_points, 3))

    def gathered(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-batch-item point subsets, for ``shape_gathered``.

        Args:
            index: [B, K] point indices (different per item).
        Returns:
            mean [B, K, 3], identity_basis [B, I, K*3], expression_basis [B, E, K*3].
        """
        b, k = index.shape
        cols = (index[..., None] * 3 + torch.arange(3)).reshape(b, 1, k * 3)  # [B, 1, K*3]

        def take(basis: torch.Tensor) -> torch.Tensor:
            return torch.gather(basis[None].expand(b, -1, -1), 2, cols.expand(b, basis.shape[0], k * 3))

        return self.mean[index], take(self.identity_basis), take(self.expression_basis)

    @staticmethod
    def shape_gathered(parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor], identity: torch.Tensor,
                       expression: torch.Tensor) -> torch.Tensor:
        """[B, K, 3] model-space points of a ``gathered`` subset; identity [B, I], expression [B, E]."""
        mean, id_basis, ex_basis = parts
        offsets = torch.bmm(expression[:, None, :], ex_basis)[:, 0]
        if id_basis.shape[1]:
            offsets = offsets + torch.bmm(identity[:, None, :], id_basis)[:, 0]
        return mean + offsets.reshape(mean.shape)

    @property
    def n_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def n_expressions(self) -> int:
        return self.expression_basis.shape[0]

    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """Model-space points in cm.

        Args:
            identity: [B, I]; expression: [B, E].
        Returns:
            [B, P, 3].
        """
        offsets = identity @ self.identity_basis + expression @ self.expression_basis  # [B, P*3]
        return self.mean + offsets.reshape(len(offsets), -1, 3)

    def forward(
        self,
        identity: torch.Tensor,
        expression: torch.Tensor,
        rotation: torch.Tensor,
        translation: torch.Tensor,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posed points: scale * R(rotation) @ shape + translation.

        Args:
            identity: [B, I]; expression: [B, E]; rotation: [B, 3] axis-angle;
            translation: [B, 3] (cm); scale: [B] or None for 1.
        Returns:
            [B, P, 3] camera-space points (cm when scale is 1).
        """
        points = self.shape(identity, expression)
        rot = axis_angle_to_matrix(rotation)
        posed = points @ rot.transpose(-1, -2)
        if scale is not None:
            posed = posed * scale[:, None, None]
        return posed + translation[:, None, :]
