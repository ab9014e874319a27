"""A clip -> one identity and per-frame pose, expression and gaze (``VideoTrack``).

Stages: check the file against the limits; decode every frame and find its landmarks; pick sharp,
varied frames and fit one identity and focal length to them together (PGN: many frames of one
person); track every frame with those held; gaze from the irises; frames without a face are
filled in from their neighbours and listed, long runs of them reported as gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from backend.errors import InputError
from backend.image_input import focal_from_35mm
from backend.fitting.geometry import axis_angle_to_matrix, continuous_quaternions
from backend.fitting.landmark_fit import FitResult, Observation
from backend.fitting.tracking import TrackConfig, track_frames
from backend.retarget.one_euro import OneEuroConfig, one_euro_filter
from backend.video.decode import (
    DecodeReport,
    VideoInfo,
    VideoLimits,
    decode_frames,
    probe_video,
    read_frames,
)
from backend.landmarks.blendshapes import TasksFaceLandmarker
from backend.video.face_track import VideoFaceTracker
from backend.video.predictor import EXPRESSION_METHODS, load_predictor
from backend.video.temporal import smooth_offline
from backend.video.frame_select import frame_features, pick_frames
from backend.video.gaze import (
    LEFT_IRIS,
    RIGHT_IRIS,
    EyeModel,
    GazeRange,
    estimate_gaze,
    gaze_weights,
    lid_blink,
)
from shared.bundle import sha256_file

_NO_FACE_HINT = "use a clip where one human face is visible, lit and unobstructed for most of its length"


@dataclass
class ExpressionOptions:
    """How the per-frame weights are made.

    ``fused`` (default, offline): the learned predictor's weights start every frame's landmark solve
    and pull it towards them, then a forward-backward smoother; ``predictor``: the predictor alone
    (the real-time path; the pose still comes from the landmark solve); ``solve``: the landmark
    solve alone (no blendshape model needed)."""

    method: str = "fused"
    face_landmarker: str | None = None  # a user's face_landmarker.task (None: the installed one)
    predictor: str | None = None        # a predictor weights file (None: the committed one)
    offline_smoothing: float = 0.5      # smooth_offline strength on the weights; 0: off


@dataclass
class VideoOptions:
    limits: VideoLimits = field(default_factory=VideoLimits)
    identity_frames: int = 16
    max_identity_yaw: float = 40.0   # degrees: beyond it landmarks on the far side are guesses
    track: TrackConfig = field(default_factory=TrackConfig)
    max_gap_seconds: float = 0.5     # longer runs of frames without a face are reported as gaps
    min_face_fraction: float = 0.2   # fewer frames with a face than this is an error
    focal_prior: float = 0.05        # see FitConfig.focal_prior
    # Each key's rest level over the clip (this quantile of its weights) is taken as 0: landmark
    # placement biases a few keys (a brow, an upper lip) by 0.1-0.2 on every frame. 0 turns it off.
    baseline_quantile: float = 0.05
    # Gaze is measured relative to the head, so a degree or two of head-pose error shows up as a
    # constant gaze offset; the clip's median gaze (relative to the head) is taken as straight ahead.
    centre_gaze: bool = True
    lid_blinks: str = "max"          # eyeBlink from the lid gap: "max" with the fit's, "replace", or ""
    gaze: GazeRange = field(default_factory=GazeRange)
    gaze_filter: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=1.5, beta=0.05))  # degrees
    expressions: ExpressionOptions = field(default_factory=ExpressionOptions)
    progress: bool = True


@dataclass
class VideoTrack:
    """Per-frame results of one clip; every array has one row per decoded frame.

    times: [N] s; expressions: [N, E]; rotations: [N, 3] axis-angle model -> OpenCV camera;
    translations: [N, 3] cm; gaze: [N, 2, 2] (yaw, pitch) degrees, eye 0 = subject's left;
    landmark_rmse_px: [N] (0 where missing); landmarks: per frame [478, 3] or None;
    scores: [N, 52] MediaPipe blendshape scores (zeros where missing) or None (``solve`` method)."""

    info: VideoInfo
    times: np.ndarray
    identity: np.ndarray
    focal: float
    expressions: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    gaze: np.ndarray
    landmark_rmse_px: np.ndarray
    missing: list[int]
    gaps: list[tuple[int, int]]
    identity_frames: list[int]
    identity_fit: FitResult
    report: DecodeReport
    landmarks: list[np.ndarray | None]
    notes: list[str] = field(default_factory=list)
    lighting: np.ndarray | None = None  # [9, 3] SH lighting fitted by the photometric stage (camera axes)
    scores: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.times)

    def rotation_matrices(self) -> np.ndarray:
        """[N, 3, 3] model -> camera."""
        return Rotation.from_rotvec(self.rotations).as_matrix()


def track_video(rec, path: str | Path, options: VideoOptions,
                on_progress: Callable[[str, float], None] | None = None) -> VideoTrack:
    """Track a clip with the models held by ``rec`` (a ``backend.reconstruct.Reconstructor``)."""
    report_progress = on_progress or (lambda stage, fraction: None)
    shown = str(path)
    info = probe_video(path, options.limits)
    info.sha256 = sha256_file(Path(path))
    name = Path(shown).name

    method = options.expressions.method
    if method not in EXPRESSION_METHODS:
        raise ValueError(f"unknown expression method {method!r}; one of {EXPRESSION_METHODS}")
    tasks = None if method == "solve" else TasksFaceLandmarker(options.expressions.face_landmarker)
    predictor = None if method == "solve" else load_predictor(options.expressions.predictor)
    report = DecodeReport()
    times, landmarks, sharpness, scores = [], [], [], []
    expected = max(info.frame_estimate, 1)
    with VideoFaceTracker(rec.landmarker, tasks=tasks) as tracker:
        for frame in read_frames(info, report):
            found = tracker.track(frame.rgb, f"{shown} (frame {frame.index}, {frame.time:.2f} s)", frame.time)
            times.append(frame.time)
            landmarks.append(None if found is None else found.points)
            sharpness.append(0.0 if found is None else found.sharpness)
            scores.append(None if found is None else found.scores)
            if frame.index % 25 == 0:
                report_progress("landmarks", min(frame.index / expected, 1.0))
    if report.decoded == 0:
        raise InputError(shown, f"no frame could be decoded ({report.error or 'unknown error'})",
                         "check that the clip plays; re-export it if it does not", code="corrupt")
    have = np.array([p is not None for p in landmarks])
    if not have.any():
        raise InputError(shown, f"no face found in any of the {len(landmarks)} frames", _NO_FACE_HINT, code="no_face")
    if have.mean() < options.min_face_fraction:
        raise InputError(shown, f"a face was found in only {have.sum()} of {len(have)} frames "
                                f"({100 * have.mean():.0f}%)", _NO_FACE_HINT, code="no_face")

    n = len(times)
    size = (info.width, info.height)
    tracked = np.nonzero(have)[0]
    observations = [Observation(landmarks[i].astype(np.float64), *size) for i in tracked]

    report_progress("identity", 0.0)
    picked = _pick_identity_frames(rec, observations, np.asarray(sharpness)[tracked], options)
    known_focal = focal_from_35mm(info.focal_35mm, *size) if info.focal_35mm else None
    chosen_obs = [observations[i] for i in picked]
    fit = rec.fitter.fit(chosen_obs, focal_prior=options.focal_prior, known_focal=known_focal)
    _check_plausible(fit, shown)
    identity_frames = [int(tracked[i]) for i in picked]
    lighting = None
    if rec.options.photometric.steps > 0:
        # The dense photometric stage on the identity frames: every later stage (tracking,
        # texture, animation, avatar) is made with the refined identity and focal length.
        report_progress("photometric", 0.0)
        wanted = set(identity_frames)
        images = decode_frames(info, wanted)
        if all(i in images for i in identity_frames):
            masks = [rec.segmenter.mask(images[i], f"{shown} (frame {i})") for i in identity_frames]
            refined = rec.refiner.refine(chosen_obs, [images[i] for i in identity_frames], masks, fit,
                                         focal_known=known_focal is not None)
            fit = refined.fit
            # Light is fixed to the camera in a clip: one lighting for every frame's bake.
            lighting = np.median(np.stack(refined.lighting), axis=0)

    if tasks is not None:
        tasks.close()
    report_progress("tracking", 0.0)
    names = list(rec.asset.expression_names)
    free = np.array([not k.startswith("eyeLook") for k in names])
    predicted, predicted_gaze, score_rows = None, None, None
    if predictor is not None:
        score_rows = np.stack([scores[i] for i in tracked])
        predicted, predicted_gaze = predictor.predict(np.stack([landmarks[i] for i in tracked]), score_rows)
        predicted = predicted[:, [predictor.shape_keys.index(k) for k in names]]
    track_cfg = options.track
    if method == "predictor":  # the solve only finds the pose: the weights stay the predictor's
        free = np.zeros(len(names), bool)
    fits = track_frames(rec.fitter, observations, [int(i) for i in tracked], fit.identity, fit.photos[0].focal,
                        track_cfg, on_batch=lambda done, total: report_progress("tracking", done / total),
                        expression_free=free, expression_prior=predicted)

    rot = np.stack([axis_angle_to_matrix(torch.tensor(f.rotation, dtype=torch.float64)).numpy() for f in fits])
    trans = np.stack([f.translation for f in fits])
    iris = np.stack([[landmarks[i][LEFT_IRIS, :2], landmarks[i][RIGHT_IRIS, :2]] for i in tracked])
    ident = torch.tensor(fit.identity, dtype=torch.float32)[None]
    neutral_points = rec.fitter.points_model.shape(ident, torch.zeros(1, len(names)))[0].numpy().astype(np.float64)
    eyes = EyeModel.from_asset(rec.asset, fit.identity, neutral_points)
    if predicted_gaze is not None:
        gaze = predicted_gaze  # learned against the true eyeball turn: no offset to remove
    else:
        gaze = estimate_gaze(eyes, rot, trans, fits[0].focal, fits[0].principal, iris)
        if options.centre_gaze:
            gaze = gaze - np.median(gaze, axis=0)
    # Iris points jitter by a pixel or two, several degrees of gaze; the filter's speed term lets
    # saccades through while a steady gaze stays still.
    gaze = one_euro_filter(gaze.reshape(len(tracked), 4), np.asarray(times)[tracked], options.gaze_filter).reshape(-1, 2, 2)
    expressions = np.stack([f.expression for f in fits])
    if method == "fused" and options.expressions.offline_smoothing > 0:
        # Recorded clips look both ways: a zero-phase smoother instead of the causal filter.
        expressions = np.clip(smooth_offline(expressions, np.asarray(times)[tracked], options.expressions.offline_smoothing), 0, 1)
    if options.baseline_quantile > 0:
        base = np.quantile(expressions, options.baseline_quantile, axis=0)
        expressions = np.clip((expressions - base) / np.maximum(1.0 - base, 1e-3), 0.0, 1.0)
    for key, values in gaze_weights(gaze, names, options.gaze).items():
        expressions[:, names.index(key)] = values
    if options.lid_blinks:
        lids = lid_blink(np.stack([landmarks[i] for i in tracked]))
        for e, key in enumerate(("eyeBlink_L", "eyeBlink_R")):
            k = names.index(key)
            expressions[:, k] = np.maximum(expressions[:, k], lids[:, e]) if options.lid_blinks == "max" else lids[:, e]

    t = np.asarray(times)
    rmse = np.zeros(n)
    rmse[tracked] = [f.landmark_rmse_px for f in fits]
    missing = [int(i) for i in np.nonzero(~have)[0]]
    gaps = _gaps(missing, t, options.max_gap_seconds)
    notes = list(report.notes)
    if missing:
        notes.append(f"{name}: no face in {len(missing)} of {n} frames; their values are interpolated")
    for first, last in gaps:
        notes.append(f"{name}: no face from {t[first]:.2f} s to {t[last]:.2f} s (frames {first}-{last})")
    return VideoTrack(
        info=info, times=t, identity=fit.identity, focal=fits[0].focal,
        expressions=_fill(t, tracked, expressions),
        rotations=_fill_rotations(t, tracked, rot),
        translations=_fill(t, tracked, trans),
        gaze=_fill(t, tracked, gaze.reshape(len(tracked), 4)).reshape(n, 2, 2),
        landmark_rmse_px=rmse, missing=missing, gaps=gaps, identity_frames=identity_frames, identity_fit=fit,
        report=report, landmarks=landmarks, notes=notes, lighting=lighting,
        scores=None if score_rows is None else _fill(t, tracked, score_rows),
    )


def _pick_identity_frames(rec, observations: list[Observation], sharpness: np.ndarray, options: VideoOptions) -> list[int]:
    """Indices into ``observations`` of sharp, varied frames with a moderate head turn."""
    f0 = rec.fitter.config.initial_focal_factor * max(observations[0].width, observations[0].height)
    feats, usable = [], []
    for obs in observations:
        rotvec, _ = rec.fitter.initial_pose(obs, f0)
        forward = Rotation.from_rotvec(rotvec).as_matrix()[:, 2]  # the face's +z in camera axes
        yaw = np.degrees(np.arctan2(forward[0], -forward[2]))
        pitch = np.degrees(np.arcsin(np.clip(forward[1], -1, 1)))
        feats.append(frame_features(obs.points, yaw, pitch))
        usable.append(abs(yaw) <= options.max_identity_yaw)
    usable_ids = np.nonzero(usable)[0]
    if len(usable_ids) == 0:
        usable_ids = np.arange(len(observations))
    chosen = pick_frames(np.asarray(feats)[usable_ids], sharpness[usable_ids], options.identity_frames)
    return [int(usable_ids[i]) for i in chosen]


def _check_plausible(fit: FitResult, shown: str, limit: float = 3.25) -> None:
    """The photo check (``FitResult.implausibility``), on the median over the identity frames:
    one odd frame of a real person must not reject a clip."""
    scores = [fit.implausibility(i) for i in range(len(fit.photos))]
    score = float(np.median(scores))
    if score > limit:
        raise InputError(shown, f"the face does not fit a human head (median score {score:.1f} > {limit} over "
                                f"{len(scores)} frames); it may be an animal, a mask or heavily distorted",
                         "use a clip of a real human face", code="implausible_face")


def _fill(times: np.ndarray, have: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[N, ...] with rows at ``have`` from values and the others linearly interpolated in time
    (held constant before the first and after the last tracked frame)."""
    flat = values.reshape(len(have), -1)
    out = np.empty((len(times), flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(times, times[have], flat[:, c])
    return out.reshape((len(times),) + values.shape[1:])


def _fill_rotations(times: np.ndarray, have: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """[N, 3] axis-angle: tracked rotations, the rest by normalised quaternion interpolation."""
    quat = continuous_quaternions(Rotation.from_matrix(matrices).as_quat())
    filled = _fill(times, have, quat)
    filled /= np.linalg.norm(filled, axis=1, keepdims=True)
    return Rotation.from_quat(filled).as_rotvec()


def _gaps(missing: list[int], times: np.ndarray, max_gap_seconds: float) -> list[tuple[int, int]]:
    """Runs of consecutive missing frames spanning more than ``max_gap_seconds``, as (first, last)."""
    runs: list[list[int]] = []
    for idx in missing:
        if runs and idx == runs[-1][1] + 1:
            runs[-1][1] = idx
        else:
            runs.append([idx, idx])
    out = []
    for first, last in runs:
        before = times[first - 1] if first > 0 else times[first]
        after = times[last + 1] if last + 1 < len(times) else times[last]
        if after - before > max_gap_seconds:
            out.append((first, last))
    return out
