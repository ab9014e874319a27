"""Training crops: area-filtered (no aliasing), with intrinsics that still map the frame's points to
the crop; and the device switch and thread sizing of ``backend.avatar.device``."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from backend.avatar.device import ThreadGovernor, free_threads, requested_threads, resolve_device
from backend.avatar.frames import crop_window, make_frame, resize_crop


def stripes(height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 one-pixel black / white columns: all detail above any shrunk image's Nyquist."""
    row = (np.arange(width) % 2 * 255).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)


def test_shrinking_averages_and_does_not_alias():
    image = stripes(512, 512)
    small = resize_crop(image, 128 - 5)  # a non-integer ratio, as crops have
    assert abs(small.mean() - 127.5) < 1.0
    assert small.std() < 6.0, small.std()  # a box of 4.2 pixels: 2 or 2.2 white columns, no beat
    # what the old crop did (warpAffine ignores INTER_AREA and samples bilinearly): moiré
    scale = 123 / 512
    warp = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5]], np.float32)
    old = cv2.warpAffine(image, warp, (123, 123), flags=cv2.INTER_AREA)
    assert old.std() > 10 * small.std()


def test_crop_window_pads_outside_the_frame():
    image = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    win = crop_window(image, -2, 3, 4)
    assert win.shape == (4, 4) and (win[:, :2] == 0).all() and (win[2:] == 0).all()
    assert (win[:2, 2:] == image[3:5, 0:2]).all()


def fake_track(width: int, height: int, box: tuple[float, float, float, float]):
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 0], [x1, y0, 0], [x0, y1, 0], [x1, y1, 0]], np.float32)
    landmarks = np.concatenate([corners, np.repeat(corners[:1], 474, 0)])[None]
    return SimpleNamespace(landmarks=landmarks, info=SimpleNamespace(width=width, height=height), focal=500.0,
                           rotations=np.zeros((1, 3)), translations=np.array([[0.0, 0.0, 50.0]]),
                           expressions=np.zeros((1, 53)))


def test_intrinsics_follow_the_crop():
    """A bright square at a known camera-space point lands where the crop's K projects it."""
    w, h, size = 640, 480, 96
    track = fake_track(w, h, (250, 150, 420, 330))
    point = np.array([3.0, -2.0, 50.0])  # cm, camera frame
    u, v = 500.0 * point[:2] / point[2] + np.array([w / 2, h / 2])  # continuous pixel coordinates
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[int(v) - 4:int(v) + 4, int(u) - 4:int(u) + 4] = 255  # centred on (int(u), int(v)) edges
    frame = make_frame(0, rgb, np.ones((h, w), np.float32), track, size)
    proj = (frame.K.numpy() @ point)[:2] / point[2]
    weight = frame.rgb.numpy()[..., 0]
    ys, xs = np.mgrid[:size, :size] + 0.5
    centre = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    expected = proj + (np.array([int(u), int(v)]) - np.array([u, v])) * frame.K[0, 0].item() / 500.0
    assert np.allclose(centre, expected, atol=0.05), (centre, expected)
    assert frame.mask.shape == (size, size, 1) and float(frame.mask.min()) > 0.99


def test_frame_moves_to_a_device():
    frame = make_frame(0, np.zeros((100, 120, 3), np.uint8), np.ones((100, 120), np.float32),
                       fake_track(120, 100, (30, 20, 80, 70)), 32)
    moved = frame.to("meta")
    assert all(getattr(moved, k).device.type == "meta" for k in ("rgb", "mask", "K", "rotation", "landmarks"))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_threads_follow_free_cores(monkeypatch):
    assert free_threads(0.0, cores=8) == 8
    assert free_threads(2.0, cores=2) == 1  # a neighbour on every core: one thread, never zero
    assert free_threads(0.3, cores=2) == 2  # a light background load keeps both
    assert free_threads(1.6, cores=4) == 2
    assert free_threads(None, cores=3) == 3  # no /proc: all usable cores
    monkeypatch.setenv("HEADRIG_THREADS", "3")
    assert requested_threads(None) == 3 and requested_threads(1) == 1
    monkeypatch.setenv("HEADRIG_THREADS", "auto")
    assert requested_threads(None) is None
    with pytest.raises(ValueError):
        requested_threads(0)


def test_governor_keeps_a_fixed_count():
    before = torch.get_num_threads()
    try:
        gov = ThreadGovernor(fixed=1)
        assert gov.start() == 1 and torch.get_num_threads() == 1
        gov.tick()
        assert gov.history == [1]
    finally:
        torch.set_num_threads(before)


def test_prepared_clip_round_trip(tmp_path):
    from backend.avatar.prepared import PreparedClip, load_prepared, save_prepared
    from backend.headmodel.torch_model import MorphableModel

    rng = np.random.default_rng(0)
    frames = []
    for i in range(3):
        rgb = np.clip(rng.normal(0.5, 0.1, (200, 240, 3)) * 255, 0, 255).astype(np.uint8)
        mask = (rng.random((200, 240)) > 0.5).astype(np.float32)
        frames.append(replace(make_frame(0, rgb, mask, fake_track(240, 200, (60, 40, 180, 160)), 48), index=i))
    lm = MorphableModel(rng.normal(size=(478, 3)), rng.normal(size=(4, 478, 3)), rng.normal(size=(53, 478, 3)))
    clip = PreparedClip("x.mp4", 48, frames[:2], frames[2:], rng.normal(size=4), rng.integers(0, 255, (16, 32, 3), np.uint8),
                        rng.random((10, 3)).astype(np.float32), lm, np.arange(5))
    back = load_prepared(save_prepared(tmp_path / "c.npz", clip))
    assert [f.index for f in back.train] == [0, 1] and [f.index for f in back.heldout] == [2]
    for a, b in zip(clip.train + clip.heldout, back.train + back.heldout):
        assert (a.rgb - b.rgb).abs().mean() < 0.02  # JPEG, quality 95
        assert torch.allclose(a.mask, b.mask, atol=1 / 255)
        for k in ("K", "rotation", "translation", "expression", "landmarks"):
            assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert np.array_equal(back.texture, clip.texture) and np.array_equal(back.identity, clip.identity)
    assert torch.equal(back.landmark_model.expression_basis, lm.expression_basis)


def test_crop_past_the_frame_is_marked_invalid():
    track = fake_track(120, 100, (30, 40, 90, 99))  # the face at the bottom edge: the crop runs past it
    frame = make_frame(0, np.full((100, 120, 3), 200, np.uint8), np.ones((100, 120), np.float32), track, 32)
    assert frame.valid is not None and frame.valid.shape == (32, 32, 1)
    assert float(frame.valid[-1].max()) == 0.0 and float(frame.valid[0].min()) == pytest.approx(1.0)
    assert torch.allclose(frame.mask, frame.valid, atol=1e-6)  # the mask is all-person inside the frame
    inside = make_frame(0, np.zeros((400, 400, 3), np.uint8), np.ones((400, 400), np.float32),
                        fake_track(400, 400, (150, 150, 250, 250)), 32)
    assert inside.valid is None
