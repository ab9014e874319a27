"""The landmark objective and its minimisation, shared by photo fits and video tracking.

Parameters per observation: pose (a small rotation on top of an initial one, image-plane offset
and log depth) and 53 expression weights in [0, 1]; shared: identity and focal length, each
either optimised or held. Video tracking holds identity and focal and adds temporal terms:
squared differences of expression and pose between consecutive frames (and to the frame before
the batch, the ``anchor``), scaled down across gaps where frames had no face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backend.fitting.contour import select_silhouette
from backend.fitting.geometry import axis_angle_to_matrix, project
from backend.fitting.optim import Adam


@dataclass
class SolveSpec:
    """What to optimise and where to start.

    identity: [I] initial identity (None: the mean face); poses: per observation (axis-angle [3],
    translation [3] cm), None: from MediaPipe's 3D landmarks; expression: [N, E] start (None: 0).
    anchor: (expression [E], rotation matrix [3, 3], translation [3]) of the frame before the
    batch; spacing: [N] frame-index distance of each observation to the previous one (1 = adjacent).
    expression_free: which weights the landmarks may move (video holds ``eyeLook*``: they come
    from the irises, see ``backend.video.gaze``).
    """

    focal: float
    identity: np.ndarray | None = None
    optimise_identity: bool = True
    optimise_focal: bool = True
    rigid_steps: int = 40
    steps: int = 180
    lr: float = 0.03
    expression_lr: float | None = None  # default: lr
    poses: list[tuple[np.ndarray, np.ndarray]] | None = None
    expression: np.ndarray | None = None
    smooth_expression: float = 0.0
    smooth_pose: float = 0.0
    anchor: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    spacing: np.ndarray | None = None
    expression_free: np.ndarray | None = None  # [E] bool; held weights stay at their start value
    expression_l1: float | None = None  # overrides FitConfig.expression_l1
    focal_prior: float | None = None    # overrides FitConfig.focal_prior
    point_weights: np.ndarray | None = None  # [478] overrides the fitter's per-landmark weights
    # [N, E] weights the solve is pulled towards (the learned predictor's), with this weight on the
    # mean squared difference per frame; 0 leaves the landmarks alone to decide.
    expression_prior: np.ndarray | None = None
    prior_weight: float = 0.0


@dataclass
class Solved:
    """identity: [I]; rotations: [N, 3, 3] model -> camera; translations: [N, 3] cm;
    expressions: [N, E]; projected: [N, 478, 2] fitted landmark pixels."""

    identity: np.ndarray
    focal: float
    rotations: np.ndarray
    translations: np.ndarray
    expressions: np.ndarray
    projected: np.ndarray
    history: list[float] = field(default_factory=list)


def solve_landmarks(fitter, observations, spec: SolveSpec) -> Solved:
    """Minimise the robust landmark objective (see the module docstring) with Adam."""
    cfg = fitter.config
    n = len(observations)
    target = torch.tensor(np.stack([o.points[:, :2] for o in observations]), dtype=torch.float32)  # [N, P, 2]
    rigid = torch.as_tensor(fitter.rigid_ids)
    depth_target = torch.tensor(np.stack([o.points[fitter.rigid_ids, 2] for o in observations]), dtype=torch.float32)
    depth_target = depth_target - depth_target.mean(1, keepdim=True)  # [N, R] pixels, relative
    iod = torch.tensor([max(o.interocular_px, 1.0) for o in observations])[:, None]  # [N, 1]
    principal = torch.tensor([[o.width / 2, o.height / 2] for o in observations], dtype=torch.float32)
    poses = spec.poses or [fitter.initial_pose(o, spec.focal, spec.identity) for o in observations]

    log_focal = torch.tensor([np.log(spec.focal)], dtype=torch.float32, requires_grad=spec.optimise_focal)
    # Rotation = R(delta) @ R0: optimising a small delta avoids axis-angle's singularity at
    # 180 degrees, where every photo starts (model y up, camera y down).
    base_rot = axis_angle_to_matrix(torch.tensor(np.stack([p[0] for p in poses]), dtype=torch.float32))
    delta_rot = torch.zeros(n, 3, requires_grad=True)
    # Translation as (x/z, y/z, log z): image-plane offsets and depth are then equally scaled.
    trans0 = np.stack([p[1] for p in poses])
    offset = torch.tensor(trans0[:, :2] / trans0[:, 2:], dtype=torch.float32, requires_grad=True)
    log_depth = torch.tensor(np.log(trans0[:, 2]), dtype=torch.float32, requires_grad=True)
    ident0 = np.zeros(fitter.asset.n_identity) if spec.identity is None else spec.identity
    identity = torch.tensor(ident0, dtype=torch.float32)[None].clone().requires_grad_(spec.optimise_identity)
    expr0 = np.zeros((n, fitter.asset.n_expressions)) if spec.expression is None else spec.expression
    expression = torch.tensor(expr0, dtype=torch.float32).clone().requires_grad_(True)
    held = None if spec.expression_free is None else torch.as_tensor(~np.asarray(spec.expression_free, dtype=bool))
    held_values = expression.detach().clone()
    k, m = fitter.contour.vertices.shape
    depth_px = torch.zeros_like(depth_target)
    temporal = _Temporal(spec, n) if spec.smooth_expression or spec.smooth_pose else None
    if spec.optimise_identity:
        points_model, contour_model, ident_in = fitter.points_model, fitter.contour_model, identity
    else:
        points_model = fitter.points_model.with_identity(ident0)
        contour_model = fitter.contour_model.with_identity(ident0)
        ident_in = torch.zeros(1, 0)
    contour_ids = torch.as_tensor(fitter.contour.landmark)
    picked_parts = None  # the chosen silhouette points' model rows, re-gathered when the choice changes
    rot_now = None

    def translation() -> torch.Tensor:
        z = log_depth.exp()[:, None]
        return torch.cat([offset * z, z], dim=1)

    def rotation_matrix() -> torch.Tensor:
        return axis_angle_to_matrix(delta_rot) @ base_rot

    def predict(update_contour: bool) -> torch.Tensor:
        nonlocal picked_parts, depth_px, rot_now
        rot_now = rotation_matrix()  # once per step: the temporal term reuses it
        rot_t, trans = rot_now.transpose(-1, -2), translation()[:, None, :]

        def to_camera(pts: torch.Tensor) -> torch.Tensor:
            return pts @ rot_t + trans

        focal = log_focal.exp().expand(n)
        ids = ident_in.expand(n, -1)
        cam = to_camera(points_model.shape(ids, expression))
        z = cam[:, rigid, 2]
        depth_px = (z - z.mean(1, keepdim=True)) * focal[:, None] / z.mean(1, keepdim=True)
        pts = project(cam, focal, principal)
        if update_contour or picked_parts is None:
            # All candidates only when re-picking: evaluating them every step was most of the cost.
            with torch.no_grad():
                cand = project(to_camera(contour_model.shape(ids, expression)), focal, principal).reshape(n, k, m, 2)
                chosen = select_silhouette(cand, pts[:, fitter.rigid_ids].mean(1))
            picked_parts = contour_model.gathered(torch.arange(k)[None] * m + chosen)
        picked = project(to_camera(contour_model.shape_gathered(picked_parts, ids, expression)), focal, principal)
        return pts.index_copy(1, contour_ids, picked)

    def data_term(pred: torch.Tensor) -> torch.Tensor:
        err = (pred - target).norm(dim=-1) / iod  # [N, P] in inter-ocular units
        rho = torch.sqrt(err**2 + cfg.robust_scale**2) - cfg.robust_scale
        term = (rho * weights).sum(1).mean() / weights.sum()
        if cfg.depth_weight:
            derr = (depth_px - depth_target).abs() / iod
            term = term + cfg.depth_weight * (torch.sqrt(derr**2 + cfg.robust_scale**2) - cfg.robust_scale).mean()
        return term

    weights = fitter.weights if spec.point_weights is None else torch.tensor(spec.point_weights, dtype=torch.float32)
    expression_l1 = cfg.expression_l1 if spec.expression_l1 is None else spec.expression_l1
    focal_prior = cfg.focal_prior if spec.focal_prior is None else spec.focal_prior
    history: list[float] = []
    prior = None if spec.expression_prior is None or not spec.prior_weight else \
        torch.tensor(spec.expression_prior, dtype=torch.float32)
    pose_params = [delta_rot, offset, log_depth] + ([log_focal] if spec.optimise_focal else [])
    all_params = pose_params + ([identity] if spec.optimise_identity else []) + [expression]
    for steps, params in ((spec.rigid_steps, pose_params), (spec.steps, all_params)):
        if steps <= 0:
            continue
        rates = [spec.expression_lr or spec.lr if p is expression else spec.lr for p in params]
        opt = Adam(params, lr=rates, steps=steps)
        for step in range(steps):
            opt.zero_grad()
            pred = predict(update_contour=step % cfg.contour_every == 0)
            loss = (
                data_term(pred)
                + expression_l1 * expression.sum() / n
                + (cfg.identity_prior * identity.square().sum() if spec.optimise_identity else 0.0)
                + (focal_prior * (log_focal[0] - np.log(spec.focal)) ** 2 if spec.optimise_focal else 0.0)
            )
            if temporal is not None:
                loss = loss + temporal.penalty(expression, rot_now, offset, log_depth)
            if prior is not None:
                loss = loss + spec.prior_weight * (expression - prior).square().sum() / n
            loss.backward()
            opt.step()
            with torch.no_grad():
                expression.clamp_(0.0, 1.0)
                if held is not None:
                    expression[:, held] = held_values[:, held]
            history.append(float(loss.detach()))

    with torch.no_grad():
        pred = predict(update_contour=True).numpy()
        trans = translation().numpy().astype(np.float64)
        rots = rotation_matrix().numpy().astype(np.float64)
    return Solved(identity[0].detach().numpy().astype(np.float64), float(log_focal.detach().exp()), rots, trans,
                  expression.detach().numpy().astype(np.float64), pred, history)


class _Temporal:
    """Squared first differences between consecutive observations (and the anchor before them)."""

    def __init__(self, spec: SolveSpec, n: int):
        self.spec = spec
        spacing = np.ones(n) if spec.spacing is None else np.asarray(spec.spacing, dtype=np.float64)
        # A neighbour k frames away may differ k times as much: weight 1 / k^2 on the squared step.
        self.link = torch.tensor(1.0 / np.maximum(spacing, 1.0) ** 2, dtype=torch.float32)  # [N]
        self.anchor = None
        if spec.anchor is not None:
            expr, rot, trans = spec.anchor
            self.anchor = (torch.tensor(expr, dtype=torch.float32)[None],
                           torch.tensor(rot, dtype=torch.float32)[None],
                           torch.tensor(trans[:2] / trans[2], dtype=torch.float32)[None],
                           torch.tensor([np.log(trans[2])], dtype=torch.float32))

    def penalty(self, expression, rotation, offset, log_depth) -> torch.Tensor:
        if self.anchor is not None:
            e0, r0, o0, d0 = self.anchor
            expression = torch.cat([e0, expression])
            rotation = torch.cat([r0, rotation])
            offset = torch.cat([o0, offset])
            log_depth = torch.cat([d0, log_depth])
            link = self.link
        else:
            link = self.link[1:]
        if len(expression) < 2:
            return expression.new_zeros(())
        total = expression.new_zeros(())
        if self.spec.smooth_expression:
            step = (expression[1:] - expression[:-1]).square().sum(1)
            total = total + self.spec.smooth_expression * (link * step).mean()
        if self.spec.smooth_pose:
            # Rotation steps in radians (Frobenius / sqrt 2 ~ angle); offsets are x/z, about radians too.
            step = ((rotation[1:] - rotation[:-1]).square().sum((1, 2)) / 2
                    + (offset[1:] - offset[:-1]).square().sum(1) + (log_depth[1:] - log_depth[:-1]).square())
            total = total + self.spec.smooth_pose * (link * step).mean()
        return total
