"""Dense photometric refinement of a landmark fit: the SHeaP step, through the textured mesh.

Landmarks carry a face's outline and features but not its shape between them: with perfect
landmarks a landmark-only fit stops at 1.8 mm. This stage lets every visible skin point vote.
The fitted head is posed into each photo (or video frame); a few thousand points on its face
skin are projected and the image's colour read there (bilinear, differentiable in the position);
the colour each point *should* have is its albedo (shared by all views) times the irradiance of
its normal under the view's second-order SH lighting (``backend.fitting.shading``). The robust
residual flows into the shared identity and focal length and into each view's pose and
expression (SHeaP: photometric gradients reach the morphable model). Anchors keep it stable:
the landmark term of the landmark fit (interior points), a one-sided silhouette term (no face
point outside the person mask), the identity prior, and albedo smoothness, strong when there is
only one view (then shading is the only cue and albedo must not absorb it) and weak for many
views (then the same point seen from several sides pins the geometry, as in multi-view stereo).

Images are blurred coarse-to-fine (sigmas in inter-ocular units) so the colour gradients reach
beyond a pixel early on. Visibility (facing, z-buffer, person mask) is recomputed every few
steps and held constant in between.

Units as in ``landmark_fit``: model cm, camera cm (OpenCV axes), pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from backend.bundle.texture_bake import project_points, visible_points
from backend.fitting.geometry import axis_angle_to_matrix, project
from backend.fitting.landmark_fit import FitResult, LandmarkFitter, Observation
from backend.fitting.landmark_solve import Solved
from backend.fitting.optim import Adam
from backend.fitting.shading import sh_basis, srgb_to_linear
from backend.headmodel.torch_model import MorphableModel


@dataclass
class PhotometricConfig:
    """Weights are relative to the photometric term (mean robust linear-RGB residual)."""

    steps: int = 90
    points: int = 3000                 # skin points that vote (a subset of the face's vertices)
    blur_iod: tuple[float, ...] = (0.06, 0.03, 0.015)  # coarse-to-fine blur sigmas, inter-ocular units
    robust_scale: float = 0.02         # Charbonnier knee of the colour residual (linear RGB)
    landmark_weight: float = 0.3       # times the mean Charbonnier landmark error (inter-ocular units)
    landmark_scale: float = 0.03
    silhouette_weight: float = 0.3     # times the mean distance (inter-ocular units) of face points outside the mask
    identity_prior: float = 0.003      # times mean(identity^2)
    expression_l1: float = 2e-4        # times sum(expression)
    focal_prior: float = 0.01          # times (log f - log f_landmarks)^2
    albedo_smooth_single: float = 3.0  # one view: shading is the only cue
    albedo_smooth_multi: float = 0.1   # several views
    visibility_every: int = 15
    min_cos: float = 0.2               # points more grazing than this do not vote
    lr_identity: float = 0.04
    lr_expression: float = 0.01
    lr_rotation: float = 0.002
    lr_offset: float = 0.001
    lr_depth: float = 0.002
    lr_focal: float = 0.005
    lr_albedo: float = 0.01
    lr_lighting: float = 0.02
    optimise_focal: bool = True


@dataclass
class PhotometricResult:
    """fit: the refined fit; lighting: per view [9, 3] linear SH coefficients, scaled so that the
    median irradiance on the visible face is 1 (the albedo is then the colour under that light)."""

    fit: FitResult
    lighting: list[np.ndarray]
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


class PhotometricRefiner:
    """The face-skin model and its sample points; reuse it for many fits."""

    def __init__(self, fitter: LandmarkFitter, config: PhotometricConfig | None = None):
        self.fitter = fitter
        self.asset = asset = fitter.asset
        self.config = config or PhotometricConfig()
        last = asset.parts["face"][1]
        tri = asset.triangles
        self.triangles = torch.as_tensor(tri[(tri <= last).all(1)], dtype=torch.long)
        self.face_model = MorphableModel(asset.neutral[: last + 1], asset.identity_basis[:, : last + 1],
                                         asset.expression_basis[:, : last + 1])
        used = np.unique(self.triangles.numpy())
        step = max(1, len(used) // self.config.points)
        self.samples = torch.as_tensor(used[::step], dtype=torch.long)
        samples = self.samples.numpy()
        self.sample_model = MorphableModel(asset.neutral[samples], asset.identity_basis[:, samples],
                                           asset.expression_basis[:, samples])
        # Albedo smoothness over each sample's nearest samples on the mean face.
        pos = asset.neutral[self.samples.numpy()]
        _, nbrs = cKDTree(pos).query(pos, k=7)
        self.neighbours = torch.as_tensor(nbrs[:, 1:], dtype=torch.long)

    def refine(self, observations: list[Observation], images: list[np.ndarray], masks: list[np.ndarray],
               landmark_fit: FitResult, focal_known: bool = False) -> PhotometricResult:
        """Refine ``landmark_fit`` on the photos (``images`` [H, W, 3] uint8 sRGB, ``masks`` [H, W]
        person masks in [0, 1]); one identity and focal length for all (the focal length held when
        ``focal_known``), pose and expression each."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small ops: extra threads only spin (see LandmarkFitter.solve)
        try:
            return self._refine(observations, images, masks, landmark_fit, focal_known)
        finally:
            torch.set_num_threads(threads)

    def _refine(self, observations, images, masks, landmark_fit: FitResult, focal_known: bool) -> PhotometricResult:
        cfg, fitter = self.config, self.fitter
        t_start = time.perf_counter()
        n = len(observations)
        photos = landmark_fit.photos
        iod = np.array([max(o.interocular_px, 1.0) for o in observations])
        principal = torch.tensor([p.principal for p in photos], dtype=torch.float32)  # [N, 2]

        base_rot = axis_angle_to_matrix(torch.tensor(np.stack([p.rotation for p in photos]), dtype=torch.float32))
        delta_rot = torch.zeros(n, 3, requires_grad=True)
        trans0 = np.stack([p.translation for p in photos])
        offset = torch.tensor(trans0[:, :2] / trans0[:, 2:], dtype=torch.float32, requires_grad=True)
        log_depth = torch.tensor(np.log(trans0[:, 2]), dtype=torch.float32, requires_grad=True)
        f0 = float(photos[0].focal)
        log_focal = torch.tensor([np.log(f0)], dtype=torch.float32, requires_grad=cfg.optimise_focal and not focal_known)
        identity = torch.tensor(landmark_fit.identity, dtype=torch.float32)[None].clone().requires_grad_(True)
        expression = torch.tensor(np.stack([p.expression for p in photos]), dtype=torch.float32).clone().requires_grad_(True)

        targets = torch.tensor(np.stack([o.points[:, :2] for o in observations]), dtype=torch.float32)
        rigid = torch.as_tensor(fitter.rigid_ids)
        iod_t = torch.tensor(iod, dtype=torch.float32)[:, None]
        # Distance (inter-ocular units) from outside the person mask to it; the same at every stage.
        dist_maps = [_image_tensor((_outside_distance(m) / d)[..., None]) for m, d in zip(masks, iod)]
        linear = [srgb_to_linear(img.astype(np.float32) / 255.0) for img in images]

        def pose() -> tuple[torch.Tensor, torch.Tensor]:
            z = log_depth.exp()[:, None]
            return axis_angle_to_matrix(delta_rot) @ base_rot, torch.cat([offset * z, z], dim=1)

        def face_camera(rot, trans) -> torch.Tensor:  # [N, F, 3]
            shape = self.face_model.shape(identity.expand(n, -1), expression)
            return shape @ rot.transpose(-1, -2) + trans[:, None, :]

        weights = torch.zeros(n, len(self.samples))
        no_expression = torch.zeros(1, expression.shape[1])
        albedo = lighting = None
        stages = np.array_split(np.arange(cfg.steps), len(cfg.blur_iod))
        params = [identity, expression, delta_rot, offset, log_depth, log_focal]
        rates = [cfg.lr_identity, cfg.lr_expression, cfg.lr_rotation, cfg.lr_offset, cfg.lr_depth, cfg.lr_focal]
        history: list[float] = []
        smooth = cfg.albedo_smooth_single if n == 1 else cfg.albedo_smooth_multi
        optim = None
        for stage, steps in enumerate(stages):
            blurred = [_image_tensor(cv2.GaussianBlur(img, (0, 0), max(cfg.blur_iod[stage] * d, 0.3))) for img, d in zip(linear, iod)]
            for step in steps:
                if step % cfg.visibility_every == 0:
                    with torch.no_grad():
                        rot, trans = pose()
                        cam = face_camera(rot, trans)
                        weights = self._visibility(cam, log_focal.exp().item(), principal, masks)
                        if albedo is None:
                            albedo, lighting = self._initial_appearance(cam, log_focal.exp(), principal, blurred, weights)
                            params += [albedo, lighting]
                            rates += [cfg.lr_albedo, cfg.lr_lighting]
                            optim = Adam(params, rates, cfg.steps)
                optim.zero_grad()
                rot, trans = pose()
                focal = log_focal.exp()
                # Normals of the neutral identity, turned with each view: expressions bend them
                # little on the skin, and one mesh instead of N keeps the step cheap.
                neutral = self.face_model.shape(identity, no_expression)
                normals = _vertex_normals(neutral, self.triangles)[:, self.samples] @ rot.transpose(-1, -2)  # [N, P, 3]
                pts = self.sample_model.shape(identity.expand(n, -1), expression) @ rot.transpose(-1, -2) + trans[:, None, :]
                uv = project(pts, focal.expand(n), principal)
                colour = torch.stack([_sample(b, uv[i]) for i, b in enumerate(blurred)])  # [N, P, 3]
                shading = sh_basis(normals) @ lighting  # [N, P, 9] @ [N, 9, 3]
                residual = _charbonnier(albedo[None] * shading - colour, cfg.robust_scale).sum(-1)
                photo = (residual * weights).sum() / weights.sum().clamp_min(1e-6)

                lm_pts = fitter.points_model.shape(identity.expand(n, -1), expression)
                lm_uv = project(lm_pts @ rot.transpose(-1, -2) + trans[:, None, :], focal.expand(n), principal)
                lm_err = ((lm_uv[:, rigid] - targets[:, rigid]).norm(dim=-1) / iod_t)
                landmarks = _charbonnier(lm_err, cfg.landmark_scale).mean()

                facing = (weights > 0).float()
                dist = torch.stack([_sample(d, uv[i])[:, 0] for i, d in enumerate(dist_maps)])
                silhouette = (dist * facing).sum() / facing.sum().clamp_min(1.0)

                albedo_lap = (albedo - albedo[self.neighbours].mean(1)).abs().sum(-1).mean()
                loss = (photo + cfg.landmark_weight * landmarks + cfg.silhouette_weight * silhouette
                        + cfg.identity_prior * (identity**2).mean() + cfg.expression_l1 * expression.sum(-1).mean()
                        + cfg.focal_prior * (log_focal[0] - np.log(f0)) ** 2 + smooth * albedo_lap)
                loss.backward()
                optim.step()
                with torch.no_grad():
                    expression.clamp_(0.0, 1.0)
                    albedo.clamp_(0.0, 4.0)
                history.append(float(loss.detach()))

        with torch.no_grad():
            rot, trans = pose()
            focal = float(log_focal.exp())
            lm_pts = fitter.points_model.shape(identity.expand(n, -1), expression)
            projected = project(lm_pts @ rot.transpose(-1, -2) + trans[:, None, :], torch.full((n,), focal), principal)
            cam = face_camera(rot, trans)
            normals = _vertex_normals(cam, self.triangles)[:, self.samples]
            shading = (sh_basis(normals) @ lighting)[..., 1]  # green channel: the luminance's bulk
            scale = [float(torch.quantile(shading[i][weights[i] > 0], 0.5)) if (weights[i] > 0).any() else 1.0 for i in range(n)]
        solved = Solved(identity[0].detach().numpy().astype(np.float64), focal, rot.detach().numpy().astype(np.float64),
                        trans.detach().numpy().astype(np.float64), expression.detach().numpy().astype(np.float64),
                        projected.numpy().astype(np.float64), history)
        refined_photos = fitter.photo_fits(observations, solved)
        ident = solved.identity
        fit = FitResult(ident, refined_photos, float(np.mean(ident**2)), landmark_fit.loss_history + history)
        lights = [lighting[i].detach().numpy().astype(np.float64) / max(s, 1e-6) for i, s in enumerate(scale)]
        return PhotometricResult(fit, lights, history, time.perf_counter() - t_start)

    def _visibility(self, cam: torch.Tensor, focal: float, principal: torch.Tensor, masks: list[np.ndarray]) -> torch.Tensor:
        """[N, P] weights: cos^2 of the view angle where the sample faces the camera, is not hidden by
        the face itself, and lies inside the person mask; 0 elsewhere."""
        normals = _vertex_normals(cam, self.triangles)[:, self.samples].numpy()
        out = np.zeros((len(cam), len(self.samples)), np.float32)
        for i, (verts, mask) in enumerate(zip(cam.numpy(), masks)):
            pts = verts[self.samples.numpy()]
            cos = -(normals[i] * pts).sum(1) / np.linalg.norm(pts, axis=1)
            centre = tuple(principal[i].tolist())
            # Depth-test against all face vertices: the samples alone are too sparse a z-buffer.
            shown = visible_points(np.r_[pts, verts], focal, centre, mask.shape)[: len(pts)]
            uv = project_points(pts, focal, centre).astype(int)
            m = np.zeros(len(pts), np.float32)
            m[shown] = mask[uv[shown, 1], uv[shown, 0]]
            out[i] = np.where((cos > self.config.min_cos) & (m > 0.5), cos**2, 0.0)
        return torch.from_numpy(out)

    def _initial_appearance(self, cam, focal, principal, blurred, weights) -> tuple[torch.Tensor, torch.Tensor]:
        """Albedo [P, 3] as the visibility-weighted mean colour, lighting [N, 9, 3] uniform and white."""
        n = len(cam)
        uv = project(cam[:, self.samples], focal.expand(n), principal)
        colour = torch.stack([_sample(b, uv[i]) for i, b in enumerate(blurred)])
        w = weights[..., None]
        seen = (w.sum(0) > 0).float()
        mean = (colour * w).sum(0) / w.sum(0).clamp_min(1e-6)
        fallback = (mean * seen).sum(0) / seen.sum().clamp_min(1.0)
        albedo = torch.where(seen > 0, mean, fallback.expand_as(mean)).clone().requires_grad_(True)
        lighting = torch.zeros(n, 9, 3)
        lighting[:, 0, :] = 1.0 / 0.886227  # irradiance 1 everywhere (see shading._C0)
        return albedo, lighting.requires_grad_(True)


def _vertex_normals(verts: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """verts: [N, V, 3], triangles: [T, 3] -> [N, V, 3] unit area-weighted normals."""
    a, b, c = verts[:, triangles[:, 0]], verts[:, triangles[:, 1]], verts[:, triangles[:, 2]]
    face_n = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals = normals.index_add(1, triangles[:, k], face_n)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, C] float -> [1, C, H, W] float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1)))[None]


def _sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """image: [1, C, H, W]; uv: [P, 2] continuous pixels (pixel i spans [i, i + 1]) -> [P, C]."""
    h, w = image.shape[-2:]
    grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], dim=-1)[None, None]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def _charbonnier(x: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * (torch.sqrt((x / scale) ** 2 + 1.0) - 1.0)


def _outside_distance(mask: np.ndarray) -> np.ndarray:
    """[H, W] float32 pixels from each pixel outside the mask to the mask (0 inside)."""
    outside = (np.asarray(mask) < 0.5).astype(np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, 5).astype(np.float32)
