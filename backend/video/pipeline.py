"""Video jobs: a clip -> an animated head bundle, and a driving clip -> a retargeted animation.

``VideoPipeline`` borrows the models of a ``Reconstructor`` (one set per worker process) and adds
the video stages: tracking (``backend.video.track``), the animation in ``animation.json`` and as a
glTF animation in ``head.glb``, a texture baked from the identity frames, each texel taken from
the frames that face it best.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy.spatial.transform import Rotation

from backend import __version__
from backend.bundle.gltf_animation import NodeAnimation
from backend.bundle.gltf_writer import build_head_glb
from backend.bundle.overlay import contact_sheet, draw_overlay
from backend.bundle.texture_bake import bake_texture
from backend.errors import InputError
from backend.fitting.geometry import continuous_quaternions
from backend.avatar.train import PRESETS
from backend.reconstruct import SHADED_TEXTURE, iris_colour, png_bytes
from backend.video.decode import decode_frames
from backend.video.frame_select import gap_iod
from backend.video.track import VideoOptions, VideoTrack, track_video
from shared.animation import ANIMATION_FILE, AnimationClip, animation_bytes
from shared.bundle import InputRecord, write_bundle
from shared.folders import replace_refusal, staged_folder

# OpenCV camera axes (y down, z forward) -> glTF axes (y up, z towards the viewer).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])
_OVERLAY_FRAMES = 8


@dataclass
class VideoResult:
    bundle_dir: Path
    track: VideoTrack
    clip: AnimationClip
    timings: dict[str, float] = field(default_factory=dict)


def clip_from_track(track: VideoTrack, names: list[str]) -> AnimationClip:
    """The animation of a tracked clip (see ``shared.animation`` for axes and units)."""
    rot_cv = track.rotation_matrices()
    rot_gl = _CV_TO_GL @ rot_cv  # a face looking into the camera -> identity
    quat = continuous_quaternions(Rotation.from_matrix(rot_gl).as_quat()[:, [3, 0, 1, 2]])  # scipy x, y, z, w -> w, x, y, z
    origin = np.median(track.translations, axis=0) / 100.0
    trans_gl = (track.translations / 100.0 - origin) @ _CV_TO_GL.T
    info = track.info
    times = np.asarray(track.times, dtype=np.float64)
    return AnimationClip(
        fps=float(info.fps),
        times=times.tolist(),
        shape_keys=list(names),
        weights={n: np.clip(track.expressions[:, k], 0.0, 1.0).round(5).tolist() for k, n in enumerate(names)},
        head_rotation=quat.round(7).tolist(),
        head_translation=trans_gl.round(6).tolist(),
        head_origin=origin.tolist(),
        eye_left=track.gaze[:, 0].round(3).tolist(),
        eye_right=track.gaze[:, 1].round(3).tolist(),
        landmark_rmse_px=track.landmark_rmse_px.round(3).tolist(),
        missing=list(track.missing),
        gaps=[list(g) for g in track.gaps],
        source={"file": Path(info.path).name, "sha256": info.sha256, "width": info.width, "height": info.height,
                "duration": round(float(times[-1] + 1.0 / info.fps), 4), "rotation": info.rotation,
                "codec": info.codec, "decoded_frames": track.report.decoded, "damaged": track.report.damaged},
        camera={"width": info.width, "height": info.height, "fx": track.focal, "fy": track.focal,
                "cx": info.width / 2, "cy": info.height / 2},
        notes=list(track.notes),
        generator=f"headrig {__version__}",
    )


def node_animation(clip: AnimationClip, name: str = "performance") -> NodeAnimation:
    """The clip as glTF node animation data."""
    return NodeAnimation(name=name, times=np.asarray(clip.times), weights=np.asarray(clip.weight_rows()),
                         rotation=np.asarray(clip.head_rotation), translation=np.asarray(clip.head_translation))


class VideoPipeline:
    """Video jobs with the models of ``rec`` (a ``backend.reconstruct.Reconstructor``)."""

    def __init__(self, rec, options: VideoOptions | None = None, texture_frames: int = 8):
        self.rec = rec
        self.texture_frames = texture_frames  # baking costs about half a second per frame
        self.options = options or VideoOptions(progress=rec.options.progress)

    def track(self, path: str | Path, on_progress: Callable[[str, float], None] | None = None) -> VideoTrack:
        return track_video(self.rec, path, self.options, on_progress)

    def reconstruct(self, path: str | Path, out_dir: str | Path, force: bool = False, job_id: str | None = None,
                    on_progress: Callable[[str, float], None] | None = None, avatar: str | None = None,
                    avatar_device: str = "auto", avatar_threads: int | str | None = None,
                    avatar_photos: list[str | Path] | None = None) -> VideoResult:
        """Track ``path`` and write an animated head bundle to ``out_dir`` (atomically).

        ``avatar`` (a name of ``shared.protocol.AVATAR_PRESETS``) also trains the Gaussian
        avatar (``backend.avatar``); its photometric fit refines the identity the mesh is built
        with; it runs on ``avatar_device``
        ("auto" | "cpu" | "cuda") with ``avatar_threads`` CPU threads (None: the free cores), and
        ``avatar_photos`` of the same person join its training frames."""
        progress = on_progress or (lambda stage, fraction: None)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        track = self.track(path, progress)
        timings["track"] = time.perf_counter() - t

        t = time.perf_counter()
        progress("texture", 0.0)
        rec = self.rec
        names = list(rec.asset.expression_names)
        chosen = pick_texture_frames(track, self.texture_frames)
        shown = track.identity_frames[:_OVERLAY_FRAMES]
        frames = decode_frames(track.info, set(chosen) | set(shown))
        views = []
        for index in chosen:
            mask = rec.segmenter.mask(frames[index], f"{track.info.path} (frame {index})")
            views.append(rec.view(frames[index], mask, track.identity, _frame_pose(track, index), track.lighting))
        overlays = []
        for index, fit in zip(shown, track.identity_fit.photos):
            view = rec.view(frames[index], np.ones(frames[index].shape[:2], np.float32), track.identity, fit)
            overlays.append(draw_overlay(view, rec._edges, track.landmarks[index][:, :2], fit.projected))
        baked = bake_texture(rec.texels, views, *rec.skin_masks, best_view_power=8.0)
        coverage = baked.coverage
        texture_png, shaded_png = png_bytes(baked.albedo), png_bytes(baked.shaded)
        timings["texture"] = time.perf_counter() - t

        avatar_files: dict[str, bytes] = {}
        avatar_means: dict = {}
        if avatar:
            from backend.avatar.pipeline import build_avatar

            t = time.perf_counter()
            # Identity was refined photometrically before tracking; holding it here keeps one head
            # in the bundle (mesh, texture, animation and Gaussians all on the same identity).
            config = dataclasses.replace(PRESETS[avatar], lr_identity=0.0)
            result = build_avatar(rec, track, baked.shaded, avatar, lambda wanted: decode_frames(track.info, wanted), progress,
                                  config, device=avatar_device, threads=avatar_threads, photos=avatar_photos)
            avatar_files = result.files
            avatar_means = result.report["heldout"]["mean"]
            timings["avatar"] = time.perf_counter() - t

        t = time.perf_counter()
        progress("gltf", 0.0)
        clip = clip_from_track(track, names)
        first = chosen[0]
        colours = {name: iris_colour(frames[first], track.landmarks[first]) for name in ("M_IrisLeft", "M_IrisRight")}
        glb = build_head_glb(rec.asset, rec.asset.vertices(track.identity), texture_png, colours, animation=node_animation(clip))
        timings["gltf"] = time.perf_counter() - t

        t = time.perf_counter()
        info = track.info
        inputs = [InputRecord(Path(info.path).name, info.sha256, info.width, info.height)]
        fit = track.identity_fit
        manifest = rec._manifest(inputs, fit, [0] * len(fit.photos), coverage, list(track.notes), job_id,
                                 frames=list(track.identity_frames))
        manifest.quality.update({
            "frames": track.n_frames, "frames_without_face": len(track.missing), "gaps": len(track.gaps),
            "tracking_rmse_px": float(np.median(track.landmark_rmse_px[track.landmark_rmse_px > 0])),
            "video_damaged": track.report.damaged,
        })
        manifest.files = {"head.glb": {"role": "mesh"}, "texture.png": {"role": "texture"},
                          SHADED_TEXTURE: {"role": "texture_shaded"},
                          "fit_overlay.png": {"role": "preview"}, ANIMATION_FILE: {"role": "animation"}}
        files = {"head.glb": glb, "texture.png": texture_png, SHADED_TEXTURE: shaded_png, "fit_overlay.png": png_bytes(np.asarray(contact_sheet(overlays))),
                 ANIMATION_FILE: animation_bytes(clip), **avatar_files}
        manifest.files.update({"gaussians.ply": {"role": "gaussians"}, "avatar.json": {"role": "report"},
                               "avatar_sheet.png": {"role": "preview"}} if avatar_files else {})
        if avatar_files:
            manifest.quality.update({f"avatar_heldout_{k}": float(v) for k, v in avatar_means.items()})
        write_bundle(out_dir, manifest, files, force=force)
        timings["write"] = time.perf_counter() - t
        progress("finished", 1.0)
        return VideoResult(Path(out_dir), track, clip, timings)

    def retarget(self, path: str | Path, out_dir: str | Path, config, head_dir: str | Path | None = None,
                 force: bool = False, on_progress: Callable[[str, float], None] | None = None) -> VideoResult:
        """Track the driving clip with its own identity and write the calibrated, smoothed animation
        for the head in ``head_dir`` (or for any head with the model's shape keys when None).

        ``config`` is a ``backend.retarget.RetargetConfig``. Writes ``animation.json`` and
        ``livelink.csv`` into ``out_dir`` atomically."""
        from backend.retarget import retarget_clip
        from shared.bundle import read_bundle
        from shared.livelink import write_livelink_csv

        target_keys, target = None, {}
        if head_dir is not None:
            try:
                head = read_bundle(head_dir, verify_hashes=False)
            except Exception as exc:  # BundleError: name the folder and why
                raise InputError(str(head_dir), f"not a usable head bundle ({exc})",
                                 "pass the folder written by 'headrig reconstruct'", code="bad_head") from None
            target_keys = list(head.shape_keys)
            target = {"head_model": head.head_model, "job_id": head.job_id, "name": Path(head_dir).name,
                      "inputs": [i.file for i in head.inputs]}
        track = self.track(path, on_progress)
        driver = clip_from_track(track, list(self.rec.asset.expression_names))
        clip = retarget_clip(driver, config, target_shape_keys=target_keys, target=target)
        _write_result_folder(Path(out_dir), clip, force, write_livelink_csv)
        return VideoResult(Path(out_dir), track, clip)

    def calibrate(self, config, neutral_take: str | Path | None = None, rom_take: str | Path | None = None,
                  on_progress: Callable[[str, float], None] | None = None):
        """``config`` with the actor's calibration from separate takes tracked like the driving clip:
        rest levels from a neutral take (``neutral_weights``) and per-key gains from a range-of-motion
        take (multiplied into the config's own gains)."""
        import dataclasses

        from backend.retarget import neutral_levels, rom_gains

        names = list(self.rec.asset.expression_names)
        neutral = dict(config.neutral_weights)
        if neutral_take is not None:
            neutral = neutral_levels(clip_from_track(self.track(neutral_take, on_progress), names))
        gain = dict(config.gain)
        if rom_take is not None:
            for key, g in rom_gains(clip_from_track(self.track(rom_take, on_progress), names), neutral or None).items():
                gain[key] = gain.get(key, 1.0) * g
        return dataclasses.replace(config, neutral_weights=neutral, gain=gain)



def pick_texture_frames(track: VideoTrack, count: int) -> list[int]:
    """Up to ``count`` frame numbers to bake the texture from, the most frontal first.

    The atlas is the neutral face, so frames with open mouths or closed eyes would paint teeth
    and lids into it: only the calmest third of the tracked frames qualify, judged on the
    landmarks themselves (lip gap, eye opening; the fitted weights underrate a slightly open
    mouth) plus the expression weights, and among them frames are spread evenly over the head's
    turn, so every side of the head has a frame facing it."""
    tracked = np.setdiff1d(np.arange(track.n_frames), track.missing)
    energy = np.array([_calmness(track.landmarks[i]) for i in tracked]) + 0.2 * track.expressions[tracked].sum(1)
    calm = tracked[energy <= np.quantile(energy, 1 / 3)]
    forward = track.rotation_matrices()[calm][:, :, 2]  # the face's +z in camera axes
    yaw = np.degrees(np.arctan2(forward[:, 0], -forward[:, 2]))
    order = np.argsort(yaw)
    picks = order if len(order) <= count else order[np.round(np.linspace(0, len(order) - 1, count)).astype(int)]
    return [int(calm[i]) for i in sorted(set(picks.tolist()), key=lambda i: abs(yaw[i]))]


def _calmness(points: np.ndarray) -> float:
    """0 for a closed mouth and open eyes, growing with the lip gap and with closing eyes."""
    lips = gap_iod(points, (13, 14))
    eyes = (gap_iod(points, (159, 145)) + gap_iod(points, (386, 374))) / 2
    return float(lips / 0.03 + max(0.0, 0.14 - eyes) / 0.03)


def _frame_pose(track: VideoTrack, index: int) -> SimpleNamespace:
    """The tracked pose and expression of one frame, shaped like a PhotoFit for ``Reconstructor.view``."""
    info = track.info
    return SimpleNamespace(rotation=track.rotations[index], translation=track.translations[index],
                           expression=track.expressions[index], focal=track.focal,
                           principal=(info.width / 2, info.height / 2))


def _write_result_folder(out_dir: Path, clip: AnimationClip, force: bool, write_csv) -> None:
    """animation.json, livelink.csv and retarget.json into ``out_dir``, atomically."""
    if out_dir.exists():
        if not force:
            raise InputError(str(out_dir), "already exists", "choose another folder or pass --force", code="exists")
        refusal = replace_refusal(out_dir)
        if refusal:
            raise InputError(str(out_dir), refusal, "choose another folder", code="exists")
    with staged_folder(out_dir) as tmp:
        (tmp / ANIMATION_FILE).write_bytes(animation_bytes(clip))
        write_csv(clip, tmp / "livelink.csv")
        (tmp / "retarget.json").write_text(json.dumps({"calibration": clip.calibration, "target": clip.target,
                                                        "notes": clip.notes}, indent=1) + "\n")
