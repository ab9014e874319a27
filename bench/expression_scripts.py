"""Harder scripted performances for the expression benchmark (``bench.expressions``).

Each function returns ``[T, E]`` weights (and, where useful, the events that made them) for the
frame times ``times`` from ``start`` seconds on; ``bench.synthetic_video_script.clip_spec`` picks
one by the clip's ``kind``:

* ``speech_script``: speech-like mouth motion -- a viseme every 0.10-0.25 s (jaw, lips rounded,
  closed, stretched, rolled, pressed), eased, with pauses, brow accents and blinks;
* ``rom_script``: a range-of-motion take -- every key that is not a gaze key alone at full weight
  (eased up and down), then common pairs (both brows, both smiles, jaw with funnel ...);
* ``random_frames``: every frame independent (training stills for the learned predictor).
"""

from __future__ import annotations

import numpy as np

from bench import synthetic_sampling as photo

# Visemes as ICT key weights (peaks; each drawn at 60-100 % of these).
VISEMES: list[dict[str, float]] = [
    {"jawOpen": 0.45, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3},          # a
    {"jawOpen": 0.25, "mouthStretch_L": 0.35, "mouthStretch_R": 0.35},            # e / i
    {"jawOpen": 0.3, "mouthFunnel": 0.6},                                         # o
    {"jawOpen": 0.1, "mouthPucker": 0.8},                                         # u / w
    {"jawOpen": 0.05, "mouthClose": 0.05, "mouthPress_L": 0.4, "mouthPress_R": 0.4},  # m b p
    {"mouthRollLower": 0.6, "mouthUpperUp_L": 0.2, "mouthUpperUp_R": 0.2},        # f v
    {"jawOpen": 0.15, "mouthSmile_L": 0.25, "mouthSmile_R": 0.25},                # s
    {"jawOpen": 0.2, "mouthShrugUpper": 0.3, "mouthRollUpper": 0.3},              # sh
    {"jawOpen": 0.35, "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3},              # t d l
    {},                                                                           # rest
]
ROM_PAIRS: list[tuple[str, ...]] = [
    ("browInnerUp_L", "browInnerUp_R"), ("browDown_L", "browDown_R"), ("eyeBlink_L", "eyeBlink_R"),
    ("eyeSquint_L", "eyeSquint_R"), ("mouthSmile_L", "mouthSmile_R"), ("jawOpen", "mouthFunnel"),
    ("mouthFrown_L", "mouthFrown_R"), ("cheekSquint_L", "cheekSquint_R", "mouthSmile_L", "mouthSmile_R"),
]


def _eased_keys(names: list[str], times: np.ndarray, keys_t: list[float], keys_w: list[dict[str, float]]) -> np.ndarray:
    from bench.synthetic_video_script import ease_keys

    vals = np.zeros((len(keys_t), len(names)))
    for k, pose in enumerate(keys_w):
        for key, w in pose.items():
            if key in names:
                vals[k, names.index(key)] = w
    return ease_keys(times, np.array(keys_t), vals)


def speech_script(names: list[str], rng: np.random.Generator, times: np.ndarray, start: float) -> tuple[np.ndarray, list[dict]]:
    """[T, E] weights of talking: visemes eased one into the next, phrases of 1-2.5 s with pauses."""
    keys_t, keys_w, events = [0.0, start], [{}, {}], []
    t, phrase_end = start, start + rng.uniform(1.0, 2.5)
    end = float(times[-1]) + 0.5
    while t < end:
        if t > phrase_end:  # a pause: lips rest
            t += rng.uniform(0.2, 0.5)
            keys_t.append(t)
            keys_w.append({})
            phrase_end = t + rng.uniform(1.0, 2.5)
            continue
        v = VISEMES[int(rng.integers(len(VISEMES) - 1))]
        scale = rng.uniform(0.6, 1.0)
        pose = {k: float(np.clip(w * scale + rng.normal(0, 0.03), 0.0, 1.0)) for k, w in v.items()}
        t += rng.uniform(0.10, 0.25)
        keys_t.append(t)
        keys_w.append(pose)
        events.append({"start": t, "keys": pose, "viseme": True})
    weights = _eased_keys(names, times, keys_t, keys_w)
    accents = accent_events(names, rng, times, start)
    for e in accents:  # brow raises and blinks on top
        env = _envelope(times, e)
        for key, peak in e["keys"].items():
            weights[:, names.index(key)] = np.maximum(weights[:, names.index(key)], peak * env)
    return np.clip(weights, 0.0, 1.0), events + accents


def _envelope(times: np.ndarray, e: dict) -> np.ndarray:
    from bench.synthetic_video_script import envelope

    return envelope(times, e["start"], e["attack"], e["hold"], e["release"])


def accent_events(names: list[str], rng: np.random.Generator, times: np.ndarray, start: float) -> list[dict]:
    """Blinks every 1.5-3.5 s and a brow raise or frown every 1-3 s, as events."""
    events, end = [], float(times[-1])
    t = start + rng.uniform(0.3, 1.5)
    while t < end:
        peak = rng.uniform(0.85, 1.0)
        timing = {"attack": rng.uniform(0.08, 0.12), "hold": rng.uniform(0.0, 0.06), "release": rng.uniform(0.12, 0.2)}
        events.append({"start": t, **timing, "keys": {"eyeBlink_L": peak, "eyeBlink_R": peak}, "blink": True})
        t += rng.uniform(1.5, 3.5)
    t = start + rng.uniform(0.5, 2.0)
    while t < end:
        pair = ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R") if rng.random() < 0.6 else ("browDown_L", "browDown_R")
        peak = rng.uniform(0.3, 0.8)
        timing = {"attack": rng.uniform(0.15, 0.3), "hold": rng.uniform(0.1, 0.5), "release": rng.uniform(0.2, 0.4)}
        events.append({"start": t, **timing, "keys": {k: peak for k in pair if k in names}})
        t += rng.uniform(1.0, 3.0)
    return events


def rom_keys(names: list[str]) -> list[tuple[str, ...]]:
    """The range-of-motion order: every non-gaze key alone, then ``ROM_PAIRS``."""
    single = [(k,) for k in names if not k.startswith("eyeLook")]
    return single + [p for p in ROM_PAIRS if all(k in names for k in p)]


def rom_frames(names: list[str], frames_per_key: int) -> int:
    """Frames of the expression part of a range-of-motion take (the gaze sweep adds ``4 * frames_per_key``)."""
    return (len(rom_keys(names)) + 4) * frames_per_key


def rom_script(names: list[str], times: np.ndarray, start: float, seconds_per_key: float) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """([T, E] weights, [T, 2, 2] gaze, events): each key (or pair) eased 0 -> 1 -> 0 in
    ``seconds_per_key``; mouthClose rides on an open jaw (alone it pushes the lips into the teeth);
    then a gaze sweep left, right, up, down."""
    weights, events = np.zeros((len(times), len(names))), []
    t = start
    for keys in rom_keys(names):
        pose = {k: 1.0 for k in keys}
        if "mouthClose" in pose:
            pose = {"mouthClose": 0.5, "jawOpen": 0.6}
        e = {"start": t, "attack": 0.4 * seconds_per_key, "hold": 0.15 * seconds_per_key, "release": 0.4 * seconds_per_key,
             "keys": pose}
        env = _envelope(times, e)
        for key, peak in pose.items():
            weights[:, names.index(key)] = np.maximum(weights[:, names.index(key)], peak * env)
        events.append(e)
        t += seconds_per_key
    gaze = np.zeros((len(times), 2, 2))
    for target in ((25.0, 0.0), (-25.0, 0.0), (0.0, 15.0), (0.0, -20.0)):
        e = {"start": t, "attack": 0.4 * seconds_per_key, "hold": 0.15 * seconds_per_key, "release": 0.4 * seconds_per_key}
        gaze += _envelope(times, e)[:, None, None] * np.array(target)[None, None, :]
        t += seconds_per_key
    return np.clip(weights, 0.0, 1.0), gaze, events


def random_frames(names: list[str], rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent frames: ([n, E] weights, [n, 2, 2] gaze, [n, 6] yaw/pitch/roll deg + shift cm).

    Expressions: half the photo bench's sparse mixes, a quarter visemes with accents, a quarter one
    key alone at a random weight (so every key is seen on its own)."""
    weights = np.zeros((n, len(names)))
    single = [k for k in names if not k.startswith("eyeLook")]
    for i in range(n):
        u = rng.random()
        if u < 0.5:
            w = photo.sample_expression(names, rng, neutral_probability=0.1)
            w[[names.index(k) for k in names if k.startswith("eyeLook")]] = 0.0
        elif u < 0.75:
            v = VISEMES[int(rng.integers(len(VISEMES)))]
            w = np.zeros(len(names))
            for k, x in v.items():
                w[names.index(k)] = x * rng.uniform(0.5, 1.6)
            if rng.random() < 0.3:
                w[names.index("eyeBlink_L")] = w[names.index("eyeBlink_R")] = rng.uniform(0.2, 1.0)
            if rng.random() < 0.3:
                for k in ("browInnerUp_L", "browInnerUp_R"):
                    w[names.index(k)] = rng.uniform(0.2, 0.9)
        else:
            w = np.zeros(len(names))
            key = single[int(rng.integers(len(single)))]
            w[names.index(key)] = rng.uniform(0.2, 1.0)
            if key == "mouthClose":
                w[names.index("jawOpen")] = min(1.0, w[names.index(key)] + rng.uniform(0.1, 0.4))
        weights[i] = np.clip(w, 0.0, 1.0)
    looking = rng.random(n) < 0.6
    eye = np.where(looking[:, None], np.c_[rng.uniform(-25, 25, n), rng.uniform(-20, 15, n)], 0.0)
    gaze = np.stack([eye, eye], axis=1)
    pose = np.c_[rng.uniform(-45, 45, n), rng.uniform(-20, 20, n), rng.uniform(-10, 10, n),
                 rng.uniform(-1.5, 1.5, (n, 2)), rng.uniform(-3, 3, n)]
    return weights, gaze, pose
