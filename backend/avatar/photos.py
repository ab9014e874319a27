"""Photos of the person filmed (a front and profiles, say) as extra avatar training frames.

A talking-head clip shows the face from a narrow range of angles; a few photos from the sides
show the cheeks, ears and hair it never sees. Each photo is fitted to the clip's identity (pose,
expression and focal length free, identity fixed: one head for all), masked, and cropped like a
video frame (``frames.make_frame``), so the trainer treats it as one more frame of the clip.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from backend.avatar.frames import AvatarFrame, make_frame

PHOTO_INDEX0 = 1_000_000  # photo k is "frame" PHOTO_INDEX0 + k in reports: never a video frame number


def fit_photos_to_identity(rec, photos: list, identity: np.ndarray) -> tuple[list, list]:
    """Landmarks and fits of ``photos`` (``backend.image_input.Photo``) with ``identity`` [I] held
    fixed. Returns (FaceLandmarks per photo, PhotoFit per photo)."""
    from backend.fitting.landmark_fit import Observation
    from backend.fitting.landmark_solve import SolveSpec

    marks = [rec.landmarker.detect(ph.rgb, ph.path) for ph in photos]
    observations = [Observation(m.points, ph.width, ph.height) for m, ph in zip(marks, photos)]
    cfg = rec.fitter.config
    f0 = cfg.initial_focal_factor * max(max(o.width, o.height) for o in observations)
    spec = SolveSpec(focal=f0, identity=np.asarray(identity), optimise_identity=False, optimise_focal=True,
                     rigid_steps=cfg.rigid_steps, steps=cfg.steps, lr=cfg.lr)
    solved = rec.fitter.solve(observations, spec)
    return marks, rec.fitter.photo_fits(observations, solved)


def photo_frames(rec, paths: list[str | Path], identity: np.ndarray, size: int) -> list[AvatarFrame]:
    """AvatarFrames (``size``² crops) of the photos at ``paths``, fitted to ``identity`` [I]."""
    from backend.image_input import load_photo

    photos = [load_photo(p, rec.options.max_pixels) for p in paths]
    marks, fits = fit_photos_to_identity(rec, photos, identity)
    frames = []
    for k, (ph, m, fit) in enumerate(zip(photos, marks, fits)):
        mask = rec.segmenter.mask(ph.rgb, ph.path)
        # make_frame reads a track: one "frame" with this photo's fit; its principal point is the
        # fit's (the image centre), given as a frame size of twice it
        track = SimpleNamespace(landmarks=[m.points], focal=fit.focal, rotations=fit.rotation[None],
                                translations=fit.translation[None], expressions=fit.expression[None],
                                info=SimpleNamespace(width=2 * fit.principal[0], height=2 * fit.principal[1]))
        frame = make_frame(0, ph.rgb, mask, track, size)
        frame.index = PHOTO_INDEX0 + k
        frames.append(frame)
    return frames
