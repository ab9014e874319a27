"""Fit the head model to 2D landmarks of one or more photos of one person.

Pose is initialised from MediaPipe's 3D landmarks by similarity alignment (as in PGN: pose from
3D landmarks, not regressed), then focal length, per-photo pose and expression, and one shared
identity are optimised on the robust 2D reprojection error. Units: model space in cm; camera
space in cm (OpenCV axes: x right, y down, z forward); image space in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backend.fitting.contour import ContourCandidates, build_contour_candidates
from backend.fitting.landmark_solve import Solved, SolveSpec, solve_landmarks
from backend.fitting.geometry import axis_angle_to_matrix, matrix_to_axis_angle, umeyama
from backend.headmodel.asset import HeadModelAsset
from backend.headmodel.torch_model import MorphableModel
from backend.landmarks.correspondence import LandmarkCorrespondence

IRIS = np.arange(468, 478)


@dataclass
class FitConfig:
    """Weights are relative to the mean robust landmark residual measured in inter-ocular units."""

    rigid_steps: int = 40
    steps: int = 180
    lr: float = 0.03
    identity_prior: float = 2e-4   # times sum(identity^2): the N(0, 1) prior of ICT's identity weights
    expression_l1: float = 2e-3    # times sum(expression): sparse, non-negative expressions
    focal_prior: float = 0.05      # times (log f - log f0)^2
    robust_scale: float = 0.03     # Charbonnier knee, in inter-ocular distances
    contour_weight: float = 0.5
    iris_weight: float = 0.5
    contour_every: int = 20        # re-pick silhouette points this often
    depth_weight: float = 0.3      # MediaPipe's relative landmark depth (PGN: 3D landmarks), interior points
    initial_focal_factor: float = 1.3  # f0 = factor * max(width, height): a mild portrait lens


@dataclass
class Observation:
    """One photo's landmarks. points: [478, 3] (x, y pixels; z MediaPipe depth in pixels)."""

    points: np.ndarray
    width: int
    height: int

    @property
    def interocular_px(self) -> float:
        return float(np.linalg.norm(self.points[468, :2] - self.points[473, :2]))


@dataclass
class PhotoFit:
    """rotation: [3] axis-angle model->camera; translation: [3] cm; expression: [E] in [0, 1];
    projected: [478, 2] fitted landmark pixels."""

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    focal: float
    principal: tuple[float, float]
    projected: np.ndarray
    landmark_rmse_px: float
    landmark_rmse_iod: float
    contour_rmse_iod: float  # the face outline alone: the first thing to go wrong on non-human faces


@dataclass
class FitResult:
    """identity: [I] shared weights; photos: one PhotoFit per observation."""

    identity: np.ndarray
    photos: list[PhotoFit]
    identity_prior_energy: float  # mean of identity^2 (about 1 for people drawn from the prior)
    loss_history: list[float] = field(default_factory=list)

    @property
    def landmark_rmse_iod(self) -> float:
        return float(np.sqrt(np.mean([p.landmark_rmse_iod**2 for p in self.photos])))

    def implausibility(self, photo: int) -> float:
        """How un-human the fit of one photo looks: a sum of errors, each scaled by a typical value
        for real photos. Landmark and outline errors grow with the head's turn for real faces too,
        so they are discounted by it; identity energy is what sets animals apart. Measured on
        ../shared/media (16 human photos and video frames, paintings, old and small faces) and
        24 synthetic heads turned up to 35 degrees: humans 1.1-2.8 (the highest: a child, d11);
        the dog (s25), which MediaPipe annotates, 3.7."""
        p = self.photos[photo]
        turn = 1.0 + abs(self.yaw_degrees(photo)) / 30.0
        return (p.landmark_rmse_iod / 0.045 + p.contour_rmse_iod / 0.12) / turn + self.identity_prior_energy / 0.12

    def yaw_degrees(self, photo: int) -> float:
        """Left-right turn of the head: the face's forward axis (model +z) in the camera's x-z plane.
        Only yaw discounts errors: a non-human face tends to fit with a spurious pitch."""
        rot = axis_angle_to_matrix(torch.tensor(self.photos[photo].rotation, dtype=torch.float64)).numpy()
        forward = rot[:, 2]
        return float(np.degrees(np.arctan2(forward[0], -forward[2])))


class LandmarkFitter:
    """Holds the model restricted to landmark points; reuse it across fits (and video frames)."""

    def __init__(self, asset: HeadModelAsset, correspondence: LandmarkCorrespondence, config: FitConfig | None = None):
        self.asset = asset
        self.config = config or FitConfig()
        self.points_model = MorphableModel.at_surface_points(asset, correspondence.corners, correspondence.bary)
        default = correspondence.positions(asset.neutral)
        # Only the outline below the eyes is a silhouette (cheeks, jaw, chin); the upper face oval
        # lies on the forehead and stays a fixed surface point.
        eye_level = default[[33, 263], 1].mean()
        sliding = correspondence.contour[default[correspondence.contour, 1] < eye_level]
        self.contour: ContourCandidates = build_contour_candidates(asset, default, sliding)
        flat = self.contour.vertices.reshape(-1)
        self.contour_model = MorphableModel(asset.neutral[flat], asset.identity_basis[:, flat], asset.expression_basis[:, flat])
        weights = np.ones(correspondence.n_points, np.float32)
        weights[correspondence.contour] = self.config.contour_weight
        weights[IRIS] = self.config.iris_weight
        self.weights = torch.tensor(weights)
        self.rigid_ids = np.setdiff1d(np.arange(468), self.contour.landmark)

    def initial_pose(self, obs: Observation, focal: float, identity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rotation (axis-angle) and translation (cm) from MediaPipe's 3D landmarks.

        MediaPipe's (x, y, z) are pixels in OpenCV-like axes under weak perspective, so a
        similarity from the (mean or given) face's landmark points gives the rotation and the pixel
        scale; depth follows from scale = focal / depth."""
        if identity is None:
            model_pts = self.points_model.mean.numpy()
        else:
            ident = torch.tensor(identity, dtype=torch.float32)[None]
            model_pts = self.points_model.shape(ident, torch.zeros(1, self.asset.n_expressions))[0].numpy()
        model_pts = model_pts[self.rigid_ids].astype(np.float64)
        scale, rot, _ = umeyama(model_pts, obs.points[self.rigid_ids].astype(np.float64))
        depth = focal / scale
        centre_px = obs.points[self.rigid_ids, :2].mean(0)
        centre_cam = rot @ model_pts.mean(0)  # model centroid offset after rotation (cm)
        cx, cy = obs.width / 2, obs.height / 2
        tz = depth - centre_cam[2]
        tx = (centre_px[0] - cx) * depth / focal - centre_cam[0]
        ty = (centre_px[1] - cy) * depth / focal - centre_cam[1]
        return matrix_to_axis_angle(rot), np.array([tx, ty, tz])

    def fit(self, observations: list[Observation], init_identity: np.ndarray | None = None,
            focal_prior: float | None = None, known_focal: float | None = None) -> FitResult:
        """Fit one identity and per-photo pose and expression to the observations' landmarks
        (``focal_prior`` overrides the config's: many video frames need less of it). A
        ``known_focal`` (pixels, from EXIF or the container) is held: landmarks alone leave the
        focal length 16-40 % off."""
        cfg = self.config
        f0 = known_focal or cfg.initial_focal_factor * max(max(o.width, o.height) for o in observations)
        spec = SolveSpec(focal=f0, identity=init_identity, optimise_identity=True, optimise_focal=known_focal is None,
                         rigid_steps=cfg.rigid_steps, steps=cfg.steps, lr=cfg.lr, focal_prior=focal_prior)
        solved = self.solve(observations, spec)
        photos = self.photo_fits(observations, solved)
        ident = solved.identity.astype(np.float64)
        return FitResult(ident, photos, float(np.mean(ident**2)), solved.history)

    def photo_fits(self, observations: list[Observation], solved: Solved) -> list[PhotoFit]:
        """One PhotoFit per observation from a solution, with its landmark errors."""
        photos = []
        for i, obs in enumerate(observations):
            res = np.linalg.norm(solved.projected[i] - obs.points[:, :2], axis=1)
            rmse = float(np.sqrt(np.mean(res[:468] ** 2)))
            contour_rmse = float(np.sqrt(np.mean(res[self.contour.landmark] ** 2)))
            photos.append(PhotoFit(
                rotation=matrix_to_axis_angle(solved.rotations[i]),
                translation=solved.translations[i],
                expression=solved.expressions[i],
                focal=solved.focal,
                principal=(obs.width / 2, obs.height / 2),
                projected=solved.projected[i],
                landmark_rmse_px=rmse,
                landmark_rmse_iod=rmse / max(obs.interocular_px, 1.0),
                contour_rmse_iod=contour_rmse / max(obs.interocular_px, 1.0),
            ))
        return photos

    def solve(self, observations: list[Observation], spec: SolveSpec) -> Solved:
        """Minimise the landmark objective for ``spec`` (photo fits and video tracking share it)."""
        # Hundreds of tiny matmuls: extra intra-op threads only spin, and with MediaPipe's or
        # Blender's threads alive they made each fit 10x slower (measured 2 s -> 21-37 s).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return solve_landmarks(self, observations, spec)
        finally:
            torch.set_num_threads(threads)

