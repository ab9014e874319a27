"""Photos of one person -> a fitted, textured head bundle (the ``reconstruct`` job).

Stages: load and check each photo; MediaPipe landmarks and person mask; one landmark fit for all
photos (shared identity and focal length); plausibility check; texture bake; glTF; bundle written
atomically. Nothing is written unless every stage succeeds.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from backend import __version__
from backend.bundle.gltf_writer import build_head_glb, vertex_normals
from backend.bundle.overlay import contact_sheet, draw_overlay, face_edges
from backend.bundle.texture_bake import PhotoView, bake_texture, cached_texel_map
from backend.errors import InputError
from backend.fitting.geometry import axis_angle_to_matrix
from backend.fitting.landmark_fit import FitConfig, FitResult, LandmarkFitter, Observation, PhotoFit
from backend.fitting.photometric import PhotometricConfig, PhotometricRefiner
from backend.fitting.shading import srgb_to_linear
from backend.headmodel.ict_source import cache_dir, load_ict
from backend.image_input import Photo, load_photo
from backend.landmarks import FaceLandmarker, PersonSegmenter
from backend.landmarks.correspondence import load_correspondence
from shared.bundle import CameraIntrinsics, HeadManifest, InputFit, InputRecord, write_bundle


# The texture as the photos show it (their light baked in); texture.png is the albedo beside it.
SHADED_TEXTURE = "texture_shaded.png"
STAGES = 7  # load, landmarks, fit, photometric, texture, gltf, write


@dataclass
class ReconstructOptions:
    max_pixels: int = 50_000_000
    fit: FitConfig = field(default_factory=FitConfig)
    # The dense photometric stage after the landmark fit; steps = 0 turns it off.
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    # Plausibility of a human face: MediaPipe annotates animals too (see FitResult.implausibility).
    max_implausibility: float = 3.25
    progress: bool = True


@dataclass
class ReconstructResult:
    """identity: [I]; vertices_cm: [V, 3] identity-applied neutral mesh (model space, cm)."""

    bundle_dir: Path
    identity: np.ndarray
    fits: list[PhotoFit]
    vertices_cm: np.ndarray
    manifest: HeadManifest
    timings: dict[str, float]


class Reconstructor:
    """Holds the model, the detectors and the texel map; reuse it for many jobs."""

    def __init__(self, options: ReconstructOptions | None = None):
        self.options = options or ReconstructOptions()
        self.asset = load_ict(progress=self.options.progress)
        self.correspondence = load_correspondence()
        self.fitter = LandmarkFitter(self.asset, self.correspondence, self.options.fit)
        self.refiner = PhotometricRefiner(self.fitter, self.options.photometric)
        self.landmarker = FaceLandmarker()
        self.segmenter = PersonSegmenter()
        self._edges = face_edges(self.asset.triangles, self.asset.parts["face"][1] + 1)

    def close(self) -> None:
        self.landmarker.close()
        self.segmenter.close()

    def __enter__(self) -> "Reconstructor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @functools.cached_property
    def texels(self):
        """The skin atlas' texel map (cached on disk; loaded on the first bake)."""
        return cached_texel_map(self.asset, cache_dir())

    def reconstruct(self, paths: list[Path], out_dir: Path, force: bool = False, job_id: str | None = None,
                    on_stage: Callable[[str, int, int], None] | None = None) -> ReconstructResult:
        """Fit the photos of one person and write the bundle to ``out_dir``.

        ``on_stage(name, done, total)`` is called after each stage (the service forwards it as
        progress events)."""
        if not paths:
            raise InputError("(no input)", "no photos given", "pass one or more photo files", code="no_input")
        timings: dict[str, float] = {}
        bar = tqdm(total=STAGES, desc="Reconstructing", unit="stage", disable=not self.options.progress)

        def stage(name: str, start: float) -> None:
            timings[name] = time.perf_counter() - start
            bar.set_postfix_str(name)
            bar.update(1)
            if on_stage is not None:
                on_stage(name, len(timings), STAGES)

        t = time.perf_counter()
        photos = [load_photo(p, self.options.max_pixels) for p in paths]
        stage("load", t)

        t = time.perf_counter()
        marks = [self.landmarker.detect(ph.rgb, ph.path) for ph in photos]
        masks = [self.segmenter.mask(ph.rgb, ph.path) for ph in photos]
        stage("landmarks", t)

        t = time.perf_counter()
        observations = [Observation(m.points, ph.width, ph.height) for m, ph in zip(marks, photos)]
        known = [ph.focal_px for ph in photos if ph.focal_px]
        fit = self.fitter.fit(observations, known_focal=float(np.median(known)) if known else None)
        self._check_plausible(fit, photos)
        stage("fit", t)

        t = time.perf_counter()
        lighting: list[np.ndarray | None] = [None] * len(photos)
        if self.options.photometric.steps > 0:
            refined = self.refiner.refine(observations, [ph.rgb for ph in photos], masks, fit, focal_known=bool(known))
            fit, lighting = refined.fit, refined.lighting
        stage("photometric", t)

        t = time.perf_counter()
        neutral = self.asset.vertices(fit.identity)
        views = [self.view(ph.rgb, mask, fit.identity, p, light) for ph, mask, p, light in zip(photos, masks, fit.photos, lighting)]
        baked = bake_texture(self.texels, views, *self.skin_masks)
        texture_png, coverage = png_bytes(baked.albedo), baked.coverage
        shaded_png = png_bytes(baked.shaded)
        stage("texture", t)

        t = time.perf_counter()
        colours = {name: iris_colour(ph.rgb, m.points) for ph, m in zip(photos[:1], marks[:1]) for name in ("M_IrisLeft", "M_IrisRight")}
        glb = build_head_glb(self.asset, neutral, texture_png, colours)
        overlay = contact_sheet([draw_overlay(v, self._edges, m.points[:, :2], p.projected) for v, m, p in zip(views, marks, fit.photos)])
        stage("gltf", t)

        t = time.perf_counter()
        notes = [note for m in marks for note in m.notes]
        inputs = [InputRecord(Path(ph.path).name, ph.sha256, ph.width, ph.height) for ph in photos]
        manifest = self._manifest(inputs, fit, list(range(len(photos))), coverage, notes, job_id)
        manifest.files = {"head.glb": {"role": "mesh"}, "texture.png": {"role": "texture"},
                          SHADED_TEXTURE: {"role": "texture_shaded"}, "fit_overlay.png": {"role": "preview"}}
        files = {"head.glb": glb, "texture.png": texture_png, SHADED_TEXTURE: shaded_png, "fit_overlay.png": png_bytes(np.asarray(overlay))}
        written = write_bundle(out_dir, manifest, files, force=force)
        stage("write", t)
        bar.close()
        return ReconstructResult(Path(out_dir), fit.identity, fit.photos, neutral, written, timings)

    @functools.cached_property
    def skin_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """[N] bool texels of the back-head tile (gated by skin colour) and of the narrow face
        (the colour reference); fixed per model, so computed once per worker."""
        width = self.texels.size[0]
        # By atlas tile, not vertex range: M_BackHead also uses vertices of the face part.
        gated = self.texels.pixel % width >= width // 2
        reference = (self.texels.corners <= self.asset.parts["narrow_face"][1]).all(1)
        return gated, reference

    def _check_plausible(self, fit: FitResult, photos: list[Photo]) -> None:
        opts = self.options
        for i, (ph, p) in enumerate(zip(photos, fit.photos)):
            score = fit.implausibility(i)
            if score > opts.max_implausibility:
                raise InputError(
                    ph.path,
                    f"the face does not fit a human head (score {score:.1f} > {opts.max_implausibility}: landmark error "
                    f"{100 * p.landmark_rmse_iod:.1f}% of the eye distance, outline {100 * p.contour_rmse_iod:.1f}%, "
                    f"identity energy {fit.identity_prior_energy:.2f}); it may be an animal or a heavily distorted photo",
                    "use a photo of a real human face, roughly frontal and unobstructed",
                    code="implausible_face",
                )

    def view(self, rgb: np.ndarray, mask: np.ndarray, identity: np.ndarray, p: PhotoFit,
             lighting: np.ndarray | None = None) -> PhotoView:
        """An image as the texture baker sees it, with the fitted head in its camera frame and, when
        the photometric stage ran, its lighting ([9, 3] SH), so the bake can remove the shading."""
        shape = self.asset.vertices(identity, p.expression)
        rot = axis_angle_to_matrix(torch.tensor(p.rotation, dtype=torch.float64)).numpy()
        verts = shape @ rot.T + p.translation
        normals = vertex_normals(verts, self.asset.triangles)
        return PhotoView(rgb, mask, verts, normals, p.focal, p.principal, lighting)

    def _manifest(self, inputs: list[InputRecord], fit: FitResult, input_of_fit: list[int], coverage: float,
                  notes: list[str], job_id: str | None, frames: list[int] | None = None) -> HeadManifest:
        """head.json for ``fit``; ``input_of_fit[i]`` is the input (photo or video) fit i belongs to,
        ``frames[i]`` its frame number when that input is a video."""
        names = self.asset.expression_names
        fits = [
            InputFit(
                input_index=k,
                rotation=p.rotation.tolist(),
                translation=p.translation.tolist(),
                expression={n: float(w) for n, w in zip(names, p.expression)},
                landmark_rmse_px=p.landmark_rmse_px,
                landmark_rmse_iod=p.landmark_rmse_iod,
                camera=CameraIntrinsics(inputs[k].width, inputs[k].height, p.focal, p.focal, p.principal[0], p.principal[1]),
                frame=None if frames is None else frames[i],
            )
            for i, (k, p) in enumerate(zip(input_of_fit, fit.photos))
        ]
        return HeadManifest(
            head_model=self.asset.name,
            vertex_count=self.asset.n_vertices,
            face_count=len(self.asset.face_sizes),
            shape_keys=list(names),
            identity=fit.identity.tolist(),
            inputs=inputs,
            fits=fits,
            quality={
                "landmark_rmse_px": float(np.sqrt(np.mean([p.landmark_rmse_px**2 for p in fit.photos]))),
                "landmark_rmse_iod": fit.landmark_rmse_iod,
                "identity_prior": fit.identity_prior_energy,
                "implausibility": max(fit.implausibility(i) for i in range(len(fit.photos))),
                "texture_coverage": coverage,
                "accepted": True,
            },
            notes=notes,
            job_id=job_id,
            generator=f"headrig {__version__}",
        )


def reconstruct_photos(paths: list[Path], out_dir: Path, options: ReconstructOptions | None = None,
                       force: bool = False) -> ReconstructResult:
    """One-shot convenience around ``Reconstructor``."""
    with Reconstructor(options) as rec:
        return rec.reconstruct([Path(p) for p in paths], Path(out_dir), force=force)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def iris_colour(rgb: np.ndarray, points: np.ndarray) -> tuple[float, float, float, float]:
    """Median colour inside both irises (linear RGBA), from the iris landmarks."""
    samples = []
    for centre, ring in ((468, slice(469, 473)), (473, slice(474, 478))):
        c = points[centre, :2]
        radius = 0.6 * np.linalg.norm(points[ring, :2] - c, axis=1).mean()
        x0, y0 = max(int(c[0] - radius), 0), max(int(c[1] - radius), 0)
        window = rgb[y0 : int(c[1] + radius) + 1, x0 : int(c[0] + radius) + 1]
        ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
        samples.append(window[(xs + x0 - c[0]) ** 2 + (ys + y0 - c[1]) ** 2 <= radius**2])
    pixels = np.concatenate(samples).astype(np.float32) / 255.0
    srgb = np.median(pixels, axis=0) if len(pixels) else np.array([0.3, 0.2, 0.1])
    linear = srgb_to_linear(srgb)
    return (float(linear[0]), float(linear[1]), float(linear[2]), 1.0)
