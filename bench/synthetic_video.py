"""Synthetic driving clips with per-frame ground truth, rendered by Blender's Cycles.

Every clip is an ICT-FaceKit head with a random identity and skin texture (as in
``bench.synthetic``), seen by a fixed camera with a random focal length, performing a scripted
take (``bench.synthetic_video_script``): a still, neutral start (the static segment, for jitter),
then eased expression events, blinks and head motion (yaw up to +-30 deg, pitch +-15, roll +-8).

    python -m bench.synthetic_video --out bench/results/synthetic_video --clips 4 --frames 100 --seed 500
    python -m bench.synthetic_video --out bench/results/synthetic_video --verify-only   # MediaPipe check

Per clip ``KK`` the folder holds ``clip_KK.mp4`` (H.264 yuv420p, crf 16, frame i at exactly i/fps s)
and ``clip_KK.json`` (``bench.synthetic_video_script.clip_record``): ``identity`` [100],
``intrinsics`` {fx, fy, cx, cy, width, height}, ``static_segment`` {start, stop} (half-open frame
range) and ``frames`` [F] of {frame, time, expression {all 53}, rotation [3] (axis-angle, model ->
OpenCV camera), rotation_matrix, translation [3] (cm), head_pose_deg, gaze_deg [2, 2],
landmarks68_2d, nose_tip_2d}. Camera and pixel conventions are the photo bench's (``bench.synthetic``).

Rendering keeps one Blender scene per clip: lights, texture and exposure are set from frame 0
(the lights stay put while the head moves) and each frame only moves the mesh's vertices. Every
frame gets its own Cycles seed and a little Gaussian sensor noise (``NOISE_SIGMA`` levels), so the
static segment is not a repeat of one image. Frames are kept as PNGs in ``clip_KK.frames/`` until
the clip is encoded, so an interrupted run resumes mid-clip; finished clips are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from backend.headmodel.asset import HeadModelAsset
from bench.synthetic import _renderer_name
from bench.synthetic_scene import BlenderRenderer, composite
from bench.offmodel import BUMP_TAG, draw_bumps, off_model_displacement
from bench.synthetic_textures import collect_textures, ensure_procedural_textures
from bench.synthetic_verify import MEDIAPIPE_CHECK, _overlay, mediapipe_landmarks
from bench.synthetic_video_script import (
    KINDS,
    ClipSpec,
    clip_record,
    clip_spec,
    posed_vertices,
)

NOISE_SIGMA = 1.5  # 8-bit levels of per-frame Gaussian noise (a clean webcam's grain)
CRF = 16


# ----------------------------------------------------------------------------- video files


def write_video(path: Path, frames, fps: float, crf: int = CRF) -> None:
    """Encode [H, W, 3] uint8 frames (an iterable) as H.264 yuv420p; frame i has pts i at 1/fps."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    tmp = path.with_name(path.stem + ".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = None
        for i, rgb in enumerate(frames):
            if stream is None:
                stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.time_base = 1 / rate
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    os.replace(tmp, path)  # a clip exists only once it is complete


def read_video(path: Path, indices=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Decode frames: ([H, W, 3] uint8 per kept frame, [N] times in seconds); ``indices`` keeps those."""
    import av

    keep = None if indices is None else {int(i) for i in indices}
    images, times = [], []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if keep is None or i in keep:
                images.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time))
    return images, np.array(times)


# ----------------------------------------------------------------------------- rendering


class ClipRenderer:
    """A ``BlenderRenderer`` re-used across the frames of a clip: ``start`` sets texture, lights and
    exposure once; ``frame`` moves the vertices and renders."""

    def __init__(self, asset: HeadModelAsset, samples: int = 8, denoise: bool = True):
        self.asset = asset
        self.renderer = BlenderRenderer(asset, samples=samples, denoise=denoise)
        self.spec: ClipSpec | None = None
        self.displacement: np.ndarray | float = 0.0

    def start(self, spec: ClipSpec, displacement: np.ndarray | None = None) -> None:
        """``displacement``: [V, 3] cm added to every frame's mesh (an off-model head, ``bench.offmodel``)."""
        self.spec = spec
        self.displacement = 0.0 if displacement is None else displacement
        # Frame 0 sits in the static segment: neutral, the rest pose the lights are aimed at.
        self.renderer.set_sample(spec.sample_spec(0), self._mesh(0))

    def _mesh(self, i: int) -> np.ndarray:
        return posed_vertices(self.asset, self.spec.identity, self.spec.expressions[i]) + self.displacement

    def frame(self, i: int, size: int, path: Path, seed: int = 0) -> np.ndarray:
        """Render frame ``i`` to ``path`` (RGB PNG with sensor noise); returns [size, size, 3] uint8."""
        spec, r = self.spec, self.renderer
        cam = self._mesh(i) @ spec.rotations[i].T + spec.translations[i]
        r.mesh.vertices.foreach_set("co", (cam * np.array([0.01, -0.01, -0.01])).astype(np.float32).ravel())
        r.mesh.update()
        r.scene.cycles.seed = i  # fresh render noise per frame, as a camera's would be
        rgb = composite(r.render(size, size, path), spec.look).astype(np.float64)
        noise = np.random.default_rng([seed, spec.index, i]).normal(0.0, NOISE_SIGMA, rgb.shape)
        rgb = np.clip(rgb + noise + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(path)
        return rgb


def generate(asset: HeadModelAsset, out: Path, clips: int = 4, frames: int = 100, seed: int = 500, size: int = 512,
             fps: float = 25.0, static_frames: int = 25, samples: int = 8, textures: list[str] | None = None,
             n_procedural: int = 8, start: int = 0, force: bool = False, denoise: bool = True,
             off_model_mm: float = 0.0, command: str | None = None, log=print, kind: str = "mixed",
             framing: tuple[float, float] = (0.30, 0.42)) -> dict:
    """Render clips ``start .. start + clips - 1`` into ``out``; returns the manifest (dataset.json).

    ``off_model_mm`` > 0: every head gets smooth bumps outside the model's span with that RMS over
    the face (``bench.offmodel``), recorded under ``off_model`` in the clip's JSON."""
    out.mkdir(parents=True, exist_ok=True)
    procedural = not textures
    if procedural:
        textures = ensure_procedural_textures(asset, out / "textures", n_procedural, seed)
    renderer, seconds = None, []
    for index in range(start, start + clips):
        stem = out / f"clip_{index:02d}"
        video, truth = stem.with_suffix(".mp4"), stem.with_suffix(".json")
        if not force and video.is_file() and truth.is_file():
            continue
        spec = clip_spec(asset, seed, index, textures, frames, fps, static_frames, size, kind=kind, framing=framing)
        record = clip_record(asset, spec, size)
        if renderer is None:
            renderer = ClipRenderer(asset, samples, denoise)
        displacement = None
        if off_model_mm > 0:
            bumps = draw_bumps(asset, np.random.default_rng([seed, index, BUMP_TAG]), off_model_mm)
            displacement = off_model_displacement(asset, bumps, spec.identity)
            record["off_model"] = bumps.to_json()
        renderer.start(spec, displacement)
        folder = stem.with_suffix(".frames")
        folder.mkdir(exist_ok=True)
        paths = [folder / f"{i:04d}.png" for i in range(spec.n_frames)]
        clip_seconds = []
        for i, path in enumerate(paths):
            if path.is_file() and not force:
                continue
            t0 = time.perf_counter()
            renderer.frame(i, size, path, seed)
            clip_seconds.append(time.perf_counter() - t0)
            if i % 10 == 0:
                log(f"clip {index:02d} frame {i}/{spec.n_frames}: {clip_seconds[-1]:.1f} s")
        write_video(video, (np.asarray(Image.open(p).convert("RGB")) for p in paths), fps)
        seconds += clip_seconds
        record.update({"samples_per_pixel": samples, "denoised": denoise, "sensor_noise_sigma": NOISE_SIGMA, "crf": CRF,
                       "render_seconds_per_frame": float(np.mean(clip_seconds)) if clip_seconds else None})
        if procedural:
            record["texture"] = os.path.relpath(spec.texture, out)
        truth.write_text(json.dumps(record, indent=1))
        shutil.rmtree(folder)
        log(f"clip {index:02d}: {spec.n_frames} frames, {sum(clip_seconds):.0f} s, lens {spec.lens_mm:.0f} mm")
    manifest = {
        "command": command, "seed": seed, "size": size, "fps": fps, "frames": frames, "static_frames": static_frames,
        "samples_per_pixel": samples, "denoised": denoise, "renderer": _renderer_name(),
        "textures": "procedural" if procedural else textures,
        "clips": sorted(p.stem for p in out.glob("clip_[0-9][0-9].json")),
        "render_seconds_per_frame_this_run": float(np.mean(seconds)) if seconds else None,
        "conventions": __doc__.split("Per clip")[1].split("Rendering keeps")[0].strip() if __doc__ else "",
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------- verification


def verify_clips(out: Path, every: int = 10, overlays: int = 2, log=print) -> dict:
    """MediaPipe face mesh on every ``every``-th frame of each clip: detection rate and the distance
    of its nose tip and eye corners from the projected ground truth (% of the eye-corner distance),
    as ``bench.synthetic_verify.verify`` does for photos. Writes ``verification.json``."""
    import mediapipe as mp

    face_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
    rows = []
    (out / "debug").mkdir(exist_ok=True)
    for json_path in sorted(out.glob("clip_[0-9][0-9].json")):
        rec = json.loads(json_path.read_text())
        indices = list(range(0, rec["n_frames"], every))
        images, times = read_video(out / rec["video"], indices)
        for n, (i, rgb) in enumerate(zip(indices, images)):
            fr = rec["frames"][i]
            gt68, nose = np.array(fr["landmarks68_2d"]), np.array(fr["nose_tip_2d"])
            iod = float(np.linalg.norm(gt68[36] - gt68[45]))
            pts = mediapipe_landmarks(rgb, face_mesh)
            row = {"clip": json_path.stem, "frame": i, "yaw": fr["head_pose_deg"]["yaw"], "detected": pts is not None,
                   "time_ok": bool(abs(times[n] - fr["time"]) < 1e-3)}
            if pts is not None:
                for key, (mp_i, ibug) in MEDIAPIPE_CHECK.items():
                    row[f"{key}_pct_iod"] = 100 * float(np.linalg.norm(pts[mp_i] - (nose if ibug is None else gt68[ibug]))) / iod
            rows.append(row)
            if n % max(1, len(indices) // max(overlays, 1)) == 0 and overlays:  # a few, spread over the clip
                _overlay(rgb, gt68, nose, pts).save(out / "debug" / f"{json_path.stem}_{i:04d}_overlay.png")
    face_mesh.close()
    det = [r for r in rows if r["detected"]]
    nose = [r["nose_tip_pct_iod"] for r in det]
    eyes = [r[f"{k}_pct_iod"] for r in det for k in MEDIAPIPE_CHECK if k != "nose_tip"]
    summary = {"frames": len(rows), "detected": len(det), "detection_rate": len(det) / max(len(rows), 1),
               "timestamps_ok": all(r["time_ok"] for r in rows),
               "nose_tip_median_pct_iod": float(np.median(nose)) if nose else None,
               "eye_corners_median_pct_iod": float(np.median(eyes)) if eyes else None}
    # The photo bench's thresholds: a flipped axis puts the nose tens of % of the eye distance off.
    summary["convention_ok"] = bool(nose) and summary["nose_tip_median_pct_iod"] < 10 and summary["eye_corners_median_pct_iod"] < 6
    (out / "verification.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    log(json.dumps(summary, indent=1))
    return summary


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_video", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/synthetic_video"))
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--start", type=int, default=0, help="index of the first clip")
    parser.add_argument("--frames", type=int, default=100, help="frames per clip")
    parser.add_argument("--static-frames", type=int, default=25, help="length of the still, neutral start")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8, help="Cycles samples per pixel (denoised)")
    parser.add_argument("--textures", nargs="*", default=[], help="atlas PNGs or folders; default: procedural")
    parser.add_argument("--force", action="store_true", help="re-render clips that already exist")
    parser.add_argument("--kind", choices=KINDS, default="mixed", help="the clip's script (bench.expression_scripts)")
    parser.add_argument("--framing", type=float, nargs=2, default=(0.30, 0.42), help="face width as fractions of the image")
    parser.add_argument("--off-model-mm", type=float, default=0.0, help="RMS (mm) of off-model bumps on every head; 0: in-model")
    parser.add_argument("--verify", action="store_true", help="run the MediaPipe check after rendering")
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--verify-every", type=int, default=10, help="check every N-th frame")
    args = parser.parse_args(argv)
    if not args.verify_only:
        from backend.headmodel.ict_source import load_ict

        command = "python -m bench.synthetic_video " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        manifest = generate(load_ict(progress=False), args.out, args.clips, args.frames, args.seed, args.size, args.fps,
                            args.static_frames, args.samples, collect_textures(args.textures), start=args.start,
                            force=args.force, off_model_mm=args.off_model_mm, command=command, kind=args.kind,
                            framing=tuple(args.framing))
        print(f"{len(manifest['clips'])} clips in {args.out}; mean render seconds per frame "
              f"{manifest['render_seconds_per_frame_this_run']}")
    if (args.verify or args.verify_only) and not verify_clips(args.out, args.verify_every)["convention_ok"]:
        print("convention check FAILED: projected ground truth does not match MediaPipe", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
