"""The scripted performance of one synthetic driving clip (``python -m bench.synthetic_video``).

``clip_spec`` draws everything random about a clip -- identity, skin texture and look, a fixed
camera, and per frame the 53 expression weights and the head pose -- and ``clip_record`` turns it
into the JSON ground truth. Timeline of a clip of F frames at ``fps``:

* frames [0, static): the static segment -- neutral face (all weights 0), head still, used to
  measure jitter;
* frames [static, F): expression events (1-4 keys of the photo bench's ``ACTIVE_POOL`` at a time,
  peaks 0.3-1.0, eased in and out, a new one every 0.4-1.2 s, overlapping ones never sharing a key or
  an exclusive pair, the first one opens the jaw),
  blinks every 1.5-3.5 s, and head motion through random key poses (yaw up to +-30 deg, pitch
  +-15, roll +-8, translation +-1.5 cm sideways, +-3 cm in depth) eased with a quintic
  smootherstep (zero velocity and acceleration at every key pose);
* gaze: both eyes turn together (yaw +-25 deg, pitch -20..+15) every 0.6-1.5 s in 0.1-0.25 s.
  ICT's ``eyeLook*`` shapes move only the lids, so the renderer also turns the eyeballs
  (``posed_vertices``); the ``eyeLook*`` weights are the gaze angles through ``GAZE_RANGE_DEG``
  (the mapping of ``backend.video.gaze.gaze_weights`` with its default ``GazeRange``).

Conventions are the photo bench's (``bench.synthetic``): model cm, Y up, face along +Z;
``x_cam = R @ x_model + t`` in OpenCV camera axes; ``R = FACING @ euler_to_matrix(yaw, pitch, roll)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.headmodel.asset import HeadModelAsset
from bench import synthetic_sampling as photo
from bench.synthetic_sampling import (
    EXCLUSIVE,
    FACING,
    euler_to_matrix,
    intrinsics,
    project_points,
)

STREAM_TAG = 0x51DE0  # in every clip's seed: video streams never coincide with photo samples'
PIVOT = np.array([0.0, -4.0, 0.0])  # model cm: the head turns about the top of the neck, not the nose
POSE_LIMITS = np.array([30.0, 15.0, 8.0])  # yaw, pitch, roll (degrees)
SHIFT_LIMITS = np.array([1.5, 1.5, 3.0])  # x, y, z translation offsets (cm)
# Gaze angle (degrees) of eyeLook* weight 1: horizontal (in/out), up, down.
GAZE_RANGE_DEG = {"horizontal": 30.0, "up": 25.0, "down": 25.0}
LOOK_KEYS = [f"eyeLook{d}_{s}" for s in "LR" for d in ("In", "Out", "Up", "Down")]


@dataclass
class ClipSpec:
    """Everything random about one clip. F frames; E expressions."""

    index: int
    identity: np.ndarray  # [I]
    lens_mm: float
    texture: str
    look: dict
    fps: float
    static: tuple[int, int]  # half-open frame range of the static segment
    expressions: np.ndarray  # [F, E] weights in [0, 1]
    poses_deg: np.ndarray  # [F, 3] yaw, pitch, roll
    rotations: np.ndarray  # [F, 3, 3] model -> OpenCV camera
    translations: np.ndarray  # [F, 3] cm
    gaze: np.ndarray  # [F, 2, 2] (yaw, pitch) degrees per eye, eye 0 = the subject's left
    events: list[dict]  # the expression script, for the record
    kind: str = "mixed"

    @property
    def n_frames(self) -> int:
        return len(self.expressions)

    @property
    def times(self) -> np.ndarray:
        """[F] seconds: frame i is shown at i / fps."""
        return np.arange(self.n_frames) / self.fps

    def sample_spec(self, frame: int) -> photo.SampleSpec:
        """Frame ``frame`` as a photo-bench sample (what ``BlenderRenderer.set_sample`` takes)."""
        yaw, pitch, roll = (float(a) for a in self.poses_deg[frame])
        return photo.SampleSpec(self.index, self.identity, self.expressions[frame], yaw, pitch, roll, self.lens_mm,
                          self.rotations[frame], self.translations[frame], self.texture, self.look)


def smootherstep(x: np.ndarray) -> np.ndarray:
    """Quintic ease 0 -> 1 on [0, 1] with zero first and second derivatives at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def envelope(t: np.ndarray, start: float, attack: float, hold: float, release: float) -> np.ndarray:
    """[T] in [0, 1]: eased rise over ``attack`` s from ``start``, ``hold`` s at 1, eased fall."""
    rise = smootherstep((t - start) / attack)
    fall = 1.0 - smootherstep((t - start - attack - hold) / release)
    return np.minimum(rise, fall)


def look_weights(gaze: np.ndarray, names: list[str]) -> np.ndarray:
    """[..., E] ``eyeLook*`` weights (0 elsewhere) of gaze [..., 2, 2] (yaw towards the subject's
    left, pitch up; degrees); towards the subject's left is "out" for the left eye, "in" for the right."""
    gaze = np.asarray(gaze, np.float64)
    out = np.zeros(gaze.shape[:-2] + (len(names),))
    for e, side in ((0, "L"), (1, "R")):
        outward = gaze[..., e, 0] if side == "L" else -gaze[..., e, 0]
        pitch = gaze[..., e, 1]
        for key, value in ((f"eyeLookOut_{side}", outward / GAZE_RANGE_DEG["horizontal"]),
                           (f"eyeLookIn_{side}", -outward / GAZE_RANGE_DEG["horizontal"]),
                           (f"eyeLookUp_{side}", pitch / GAZE_RANGE_DEG["up"]), (f"eyeLookDown_{side}", -pitch / GAZE_RANGE_DEG["down"])):
            if key in names:
                out[..., names.index(key)] = np.clip(value, 0.0, 1.0)
    return out


def gaze_of_weights(weights: np.ndarray, names: list[str]) -> np.ndarray:
    """[2, 2] (yaw, pitch) degrees per eye (0 = subject's left) that [E] ``eyeLook*`` weights imply."""
    w = {k: float(weights[names.index(k)]) if k in names else 0.0 for k in LOOK_KEYS}
    h, up, down = GAZE_RANGE_DEG["horizontal"], GAZE_RANGE_DEG["up"], GAZE_RANGE_DEG["down"]
    return np.array([[h * (w[f"eyeLookOut_{s}"] - w[f"eyeLookIn_{s}"]) * (1 if s == "L" else -1),
                      up * w[f"eyeLookUp_{s}"] - down * w[f"eyeLookDown_{s}"]] for s in "LR"])


def posed_vertices(asset: HeadModelAsset, identity: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[V, 3] mesh (cm) of ``weights`` with each eyeball turned about its centre to the gaze its
    ``eyeLook*`` weights imply: yaw about +y, then pitch up, in the head's frame."""
    verts = asset.vertices(identity, weights).astype(np.float64)
    gaze = gaze_of_weights(weights, asset.expression_names)
    for part in ("eyeball_left", "eyeball_right"):
        ball = slice(asset.parts[part][0], asset.parts[part][1] + 1)
        centre = verts[ball].mean(0)
        yaw, pitch = gaze[0 if centre[0] > 0 else 1]  # the subject's left eye lies at +x
        verts[ball] = (verts[ball] - centre) @ euler_to_matrix(yaw, -pitch, 0.0).T + centre
    return verts


def ease_keys(times: np.ndarray, keys_t: np.ndarray, keys_v: np.ndarray) -> np.ndarray:
    """[T, D] values eased (smootherstep) between key values [K, D] at key times [K]; constant outside."""
    keys_t, keys_v = np.asarray(keys_t, np.float64), np.asarray(keys_v, np.float64)
    if len(keys_t) < 2:  # e.g. the clip ends within the static segment
        return np.tile(keys_v[0], (len(times), 1))
    seg = np.clip(np.searchsorted(keys_t, times, side="right") - 1, 0, len(keys_t) - 2)
    frac = smootherstep((times - keys_t[seg]) / (keys_t[seg + 1] - keys_t[seg]))[:, None]
    return keys_v[seg] * (1 - frac) + keys_v[seg + 1] * frac


def gaze_script(rng: np.random.Generator, times: np.ndarray, start: float) -> np.ndarray:
    """[T, 2, 2] gaze: straight ahead until ``start``, then shifts of both eyes together (no
    vergence), half of them back to straight ahead."""
    keys_t, keys_v = [start], [np.zeros(2)]
    t = start + rng.uniform(0.2, 1.0)
    while t < times[-1]:
        target = np.zeros(2) if rng.random() < 0.5 and keys_v[-1].any() else np.r_[rng.uniform(-25, 25), rng.uniform(-20, 15)]
        move = rng.uniform(0.1, 0.25)
        keys_t += [t, t + move]
        keys_v += [keys_v[-1], target]
        t += move + rng.uniform(0.6, 1.5)
    eye = ease_keys(times, np.array(keys_t), np.array(keys_v))
    return np.stack([eye, eye], axis=1)


def _conflicts(keys: set[str], busy: set[str]) -> bool:
    """True when an event with ``keys`` would overlap one using a key or its exclusive partner."""
    if keys & busy:
        return True
    return any((a in keys and b in busy) or (b in keys and a in busy) for a, b in EXCLUSIVE)


def expression_script(names: list[str], rng: np.random.Generator, times: np.ndarray, start: float) -> tuple[np.ndarray, list[dict]]:
    """[T, E] weights (max over events per key) and the list of events, from ``start`` seconds on."""
    end = float(times[-1]) if len(times) else 0.0
    events: list[dict] = []
    cursor = start + rng.uniform(0.0, 0.3)
    while cursor < end:
        event = {"start": cursor, "attack": rng.uniform(0.15, 0.5), "hold": rng.uniform(0.1, 0.8), "release": rng.uniform(0.15, 0.5)}
        stop = cursor + event["attack"] + event["hold"] + event["release"]
        busy = {k for e in events if e["start"] < stop and e["stop"] > cursor for k in e["keys"]}
        for _ in range(10):
            w = photo.sample_expression(names, rng, neutral_probability=0.0)
            w[[names.index(k) for k in LOOK_KEYS if k in names]] = 0.0  # gaze has its own script
            # The photo bench's weights span 0.05-1; an affine map to 0.3-1 keeps its pairs'
            # ordering (mouthClose < jawOpen, L/R twins close together).
            keys = {names[i]: 0.3 + 0.7 * (float(w[i]) - 0.05) / 0.95 for i in np.flatnonzero(w)}
            if not events and "jawOpen" in names:  # every clip opens the jaw at least once
                keys["jawOpen"] = max(keys.get("jawOpen", 0.0), float(rng.uniform(0.4, 1.0)))
            if keys and not _conflicts(set(keys), busy):
                events.append({**event, "stop": stop, "keys": keys})
                break
        cursor += rng.uniform(0.4, 1.2)
    # Blinks (both eyes, a little unequal): 0.08-0.12 s shut, 0-0.06 s closed, 0.12-0.2 s open.
    blink = start + rng.uniform(0.3, 1.5)
    while blink < end:
        peak = rng.uniform(0.85, 1.0)
        keys = {k: float(np.clip(peak + rng.normal(0, 0.03), 0.0, 1.0)) for k in ("eyeBlink_L", "eyeBlink_R") if k in names}
        timing = {"attack": rng.uniform(0.08, 0.12), "hold": rng.uniform(0.0, 0.06), "release": rng.uniform(0.12, 0.2)}
        events.append({"start": blink, **timing, "stop": blink + sum(timing.values()), "keys": keys, "blink": True})
        blink += rng.uniform(1.5, 3.5)
    weights = np.zeros((len(times), len(names)))
    for e in events:
        env = envelope(times, e["start"], e["attack"], e["hold"], e["release"])
        for key, peak in e["keys"].items():
            i = names.index(key)
            weights[:, i] = np.maximum(weights[:, i], peak * env)
    return np.clip(weights, 0.0, 1.0), events


def head_script(rng: np.random.Generator, times: np.ndarray, start: float, rest: np.ndarray,
                limits: np.ndarray = POSE_LIMITS) -> np.ndarray:
    """[T, 6] yaw, pitch, roll (deg) and x, y, z offsets (cm): ``rest`` until ``start``, then eased
    moves between random key poses; the yaw swings from side to side so every clip turns both ways."""
    keys_t, keys_v = [start], [np.asarray(rest, float)]
    side = rng.choice([-1.0, 1.0])
    while keys_t[-1] < times[-1]:
        pose = np.r_[side * rng.uniform(min(8.0, limits[0]), limits[0]), rng.uniform(-1, 1, 2) * limits[1:],
                     rng.uniform(-1, 1, 3) * SHIFT_LIMITS]
        side = -side
        # Slow enough to look human: at most ~70 deg/s of mean yaw speed.
        duration = max(rng.uniform(0.6, 1.3), abs(pose[0] - keys_v[-1][0]) / 70.0)
        keys_t.append(keys_t[-1] + duration)
        keys_v.append(pose)
    return ease_keys(times, np.array(keys_t), np.array(keys_v))


KINDS = ("mixed", "turns", "speech", "rom", "random")
"""Clip kinds: the original mixed take; the same with +-45 deg turns; talking; a range-of-motion
take; independent frames (training stills). See ``bench.expression_scripts``."""
TURN_LIMITS = np.array([45.0, 20.0, 10.0])


def clip_spec(asset: HeadModelAsset, seed: int, index: int, textures: list[str], n_frames: int = 100,
              fps: float = 25.0, static_frames: int = 25, size: int = 512, kind: str = "mixed",
              framing: tuple[float, float] = (0.30, 0.42), seconds_per_key: float = 0.32) -> ClipSpec:
    """The random clip ``index`` of dataset ``seed`` (randomness from ``(seed, index, STREAM_TAG)``).

    ``kind`` (``KINDS``) picks the script; a ``rom`` clip's length follows from its keys
    (``seconds_per_key`` each), not from ``n_frames``. ``framing``: the face's width as a range of
    fractions of the image width."""
    from bench import expression_scripts as scripts

    if kind not in KINDS:
        raise ValueError(f"unknown clip kind {kind!r}; one of {KINDS}")
    rng = np.random.default_rng([seed, index, STREAM_TAG])
    names = asset.expression_names
    identity = rng.standard_normal(asset.n_identity) * rng.uniform(0.8, 1.0)
    lens = float(np.exp(rng.uniform(np.log(35.0), np.log(85.0))))  # the photo bench's range
    texture = textures[int(rng.integers(len(textures)))] if textures else ""
    look = photo._sample_look(rng)
    if kind == "rom":
        n_frames = static_frames + int(round(scripts.rom_frames(names, 1) * seconds_per_key * fps))
    static = (0, min(static_frames, n_frames))
    times = np.arange(n_frames) / fps
    start = static[1] / fps
    if kind == "random":
        expressions, gaze, motion = scripts.random_frames(names, rng, n_frames)
        events: list[dict] = []
    else:
        if kind == "rom":
            expressions, gaze, events = scripts.rom_script(names, times, start, seconds_per_key)
        else:
            script = scripts.speech_script if kind == "speech" else expression_script
            expressions, events = script(names, rng, times, start)
            gaze = gaze_script(rng, times, start)
        rest = np.r_[rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(-3, 3), 0.0, 0.0, 0.0]
        limits = {"turns": TURN_LIMITS, "rom": np.array([8.0, 5.0, 3.0]), "speech": np.array([15.0, 10.0, 5.0])}
        motion = head_script(rng, times, start, rest, limits.get(kind, POSE_LIMITS))
    expressions = np.maximum(expressions, look_weights(gaze, names))  # the scripts leave eyeLook* at 0
    rotations = np.stack([FACING @ euler_to_matrix(*m[:3]) for m in motion])

    neutral = asset.vertices(identity).astype(float)
    first, last = asset.parts["narrow_face"]
    centre = 0.5 * (neutral[first : last + 1].min(0) + neutral[first : last + 1].max(0))
    face_width = float(np.ptp(neutral[first : last + 1, 0]))
    face = slice(asset.parts["face"][0], asset.parts["face"][1] + 1)
    intr = intrinsics(lens, size, size)
    fraction, offset = rng.uniform(*framing), rng.uniform(-0.05, 0.05, 2) * size
    verts = [asset.vertices(identity, e).astype(float)[face] for e in expressions]
    for _ in range(30):  # shrink the framing until the whole face stays inside every frame
        depth = intr["fx"] * face_width / (fraction * size)
        target = np.array([offset[0] / intr["fx"] * depth, offset[1] / intr["fy"] * depth, depth])
        pivot_cam = target - rotations[0] @ (centre - PIVOT)  # the face centre of frame 0 on target
        translations = pivot_cam + motion[:, 3:] - rotations @ PIVOT
        uv = np.concatenate([project_points(v, r, t, intr) for v, r, t in zip(verts, rotations, translations)])
        if uv.min() > 0.02 * size and uv.max() < 0.98 * size:
            break
        fraction, offset = fraction * 0.92, offset * 0.7
    return ClipSpec(index, identity, lens, texture, look, fps, static, expressions, motion[:, :3], rotations,
                    translations, gaze, events, kind)


def clip_record(asset: HeadModelAsset, spec: ClipSpec, size: int) -> dict:
    """The JSON ground truth of a clip (per frame: time, all weights, pose, projected landmarks)."""
    names = asset.expression_names
    intr = intrinsics(spec.lens_mm, size, size)
    lm = [int(i) for i in asset.landmarks68] + [photo.nose_tip_vertex(asset)]
    frames = []
    for i, (t, w, rot, trans, pose, gaze) in enumerate(zip(spec.times, spec.expressions, spec.rotations, spec.translations,
                                                           spec.poses_deg, spec.gaze)):
        pts = project_points(posed_vertices(asset, spec.identity, w)[lm], rot, trans, intr).round(2)
        frames.append({
            "frame": i, "time": round(float(t), 6),
            "expression": {n: round(float(v), 6) for n, v in zip(names, w)},
            "rotation": photo.rotation_to_axis_angle(rot).tolist(), "rotation_matrix": rot.tolist(),
            "translation": trans.tolist(),
            "head_pose_deg": dict(zip(("yaw", "pitch", "roll"), (round(float(a), 4) for a in pose))),
            "gaze_deg": gaze.round(4).tolist(),
            "landmarks68_2d": pts[:68].tolist(), "nose_tip_2d": pts[68].tolist(),
        })
    return {
        "index": spec.index, "kind": spec.kind, "video": f"clip_{spec.index:02d}.mp4", "fps": spec.fps, "n_frames": spec.n_frames,
        "size": [size, size],
        "model": {"name": asset.name, "units": "cm", "axes": "Y up, face towards +Z", "n_vertices": asset.n_vertices},
        "identity": spec.identity.tolist(),
        "intrinsics": intr, "focal_mm_equivalent": spec.lens_mm,
        "camera_convention": "OpenCV: x_cam = R @ x_model + t (cm); x right, y down, z forward; "
                             "u = fx*x/z + cx, v = fy*y/z + cy, image spans [0, W] x [0, H]",
        "head_pose_definition": "R = diag(1,-1,-1) @ Ry(yaw) @ Rx(pitch) @ Rz(roll) in model axes",
        "gaze_definition": "gaze_deg [2, 2]: (yaw, pitch) per eye, eye 0 = the subject's left; yaw towards the subject's "
                           "left (+x), pitch up (+y), in the head's frame; each eyeball turned about its vertex mean by "
                           "Ry(yaw) @ Rx(-pitch); eyeLook* weights = angle / range, clipped to [0, 1]",
        "gaze_range_deg": GAZE_RANGE_DEG,
        "static_segment": {"start": spec.static[0], "stop": spec.static[1],
                           "note": "half-open frame range: neutral face (all weights 0), head still"},
        "expression_names": list(names),
        "events": [{**e, "keys": {k: round(v, 4) for k, v in e["keys"].items()}} for e in spec.events],
        "texture": spec.texture, "look": spec.look,
        "frames": frames,
    }
