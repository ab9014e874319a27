"""MediaPipe face landmarks and person segmentation on the sample photos and composites of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.errors import HeadRigError, InputError
from backend.image_input import load_photo
from backend.landmarks import FaceLandmarker, FaceLandmarks, PersonSegmenter
from backend.landmarks.face_alignment_detector import FaceAlignment68, FaceAlignmentUnavailable

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
IMAGES = MEDIA / "images"

pytestmark = pytest.mark.skipif(not (IMAGES / "d8.jpg").is_file(), reason=f"sample media not found at {MEDIA}")

# MediaPipe face-mesh indices: outer/inner corners of each eye, nose tip, inner lips.
RIGHT_EYE_CORNERS = (33, 133)  # the subject's right eye: the image's left side
LEFT_EYE_CORNERS = (263, 362)
NOSE_TIP = 1
MOUTH = (13, 14)


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as built:
        yield built


def _rgb(name: str) -> np.ndarray:
    return load_photo(IMAGES / f"{name}.jpg").rgb


def _paste(canvas_size: tuple[int, int], *placed: tuple[np.ndarray, int, tuple[int, int]]) -> np.ndarray:
    """A grey canvas (width, height) with each (rgb, side, (x, y)) resized to side x side and pasted at x, y."""
    canvas = Image.new("RGB", canvas_size, (128, 128, 128))
    for rgb, side, corner in placed:
        canvas.paste(Image.fromarray(rgb).resize((side, side), Image.LANCZOS), corner)
    return np.asarray(canvas)


@pytest.mark.parametrize("name", ["d8", "d9", "d19"])
def test_frontal_portraits(landmarker, name):
    rgb = _rgb(name)
    found = landmarker.detect(rgb, source=name)
    assert isinstance(found, FaceLandmarks)
    points = found.points
    assert points.shape == (478, 3) and points.dtype == np.float32
    assert np.isfinite(points).all()
    assert (points[:, 0] >= 0).all() and (points[:, 0] < 720).all()
    assert (points[:, 1] >= 0).all() and (points[:, 1] < 720).all()
    assert found.image_size == (720, 720)
    assert (found.n_faces, found.face_index, found.notes) == (1, 0, [])
    assert found.bbox == pytest.approx((*points[:, :2].min(axis=0), *points[:, :2].max(axis=0)))
    assert 40 < found.interocular_px < 300
    assert found.interocular_px < found.face_size_px

    right_eye_x = points[list(RIGHT_EYE_CORNERS), 0].max()
    left_eye_x = points[list(LEFT_EYE_CORNERS), 0].min()
    assert right_eye_x < left_eye_x, "the subject's right eye is on the image's left"
    assert points[468, 0] < points[NOSE_TIP, 0] < points[473, 0], "nose tip between the iris centres"
    eyes_y = points[[468, 473], 1].mean()
    assert eyes_y < points[NOSE_TIP, 1] < points[list(MOUTH), 1].mean(), "eyes above nose above mouth"
    assert points[NOSE_TIP, 2] < points[:, 2].mean(), "the nose tip is nearer the camera (negative z)"


def test_same_image_gives_same_points(landmarker):
    rgb = _rgb("d9")
    np.testing.assert_array_equal(landmarker.detect(rgb).points, landmarker.detect(rgb).points)


@pytest.mark.parametrize("name", ["s40", "s41"])
def test_cats_have_no_face(landmarker, name):
    with pytest.raises(InputError) as caught:
        landmarker.detect(_rgb(name), source=f"{name}.jpg")
    assert caught.value.code == "no_face"
    assert f"{name}.jpg" in str(caught.value) and caught.value.hint


def test_small_face_in_a_large_image_is_found_and_mapped_back(landmarker):
    portrait = _rgb("d8")
    reference = landmarker.detect(portrait).points
    side = round(720 * 120 / np.ptp(reference[:, 0]))  # the face about 120 px wide
    corner = (2500, 1200)
    canvas = _paste((4000, 3000), (portrait, side, corner))

    found = landmarker.detect(canvas, source="canvas")
    scale = side / 720
    expected_xy = reference[:, :2] * scale + np.array(corner)
    assert found.image_size == (4000, 3000)
    assert np.linalg.norm(found.points[:, :2] - expected_xy, axis=1).mean() < 3.0
    assert np.abs(found.points[:, 2] - reference[:, 2] * scale).mean() < 3.0, "z scaled like x"


def test_two_faces_uses_the_larger(landmarker):
    canvas = _paste((1200, 720), (_rgb("d8"), 360, (40, 180)), (_rgb("d19"), 720, (480, 0)))
    found = landmarker.detect(canvas)
    assert found.n_faces == 2
    assert found.face_index == 0
    assert found.bbox[0] > 480, "the landmarks are on the larger face, on the right"
    assert any("2 faces" in note for note in found.notes)


def test_face_too_small(landmarker):
    canvas = _paste((1280, 960), (_rgb("d8"), 64, (600, 400)))  # eyes about 10 px apart
    with pytest.raises(InputError) as caught:
        landmarker.detect(canvas, source="tiny.jpg")
    assert caught.value.code == "face_too_small"
    assert "tiny.jpg" in str(caught.value)


def test_min_interocular_is_a_parameter():
    with FaceLandmarker(min_interocular_px=150) as strict:
        with pytest.raises(InputError) as caught:
            strict.detect(_rgb("d8"), source="d8.jpg")
    assert caught.value.code == "face_too_small"


def test_not_an_rgb_image_is_refused(landmarker):
    with pytest.raises(InputError) as caught:
        landmarker.detect(np.zeros((100, 100), np.float32), source="array")
    assert caught.value.code == "bad_input"


def _first_video_frame(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of the first frame, with PyAV if installed, else OpenCV."""
    if importlib.util.find_spec("av") is not None:
        import av

        with av.open(str(path)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24")
    import cv2

    capture = cv2.VideoCapture(str(path))
    ok, bgr = capture.read()
    capture.release()
    assert ok, f"could not decode {path}"
    return np.ascontiguousarray(bgr[:, :, ::-1])


def test_wide_video_frame(landmarker):
    video = MEDIA / "video" / "s32.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found")
    frame = _first_video_frame(video)
    found = landmarker.detect(frame, source="s32.mp4#0")
    height, width = frame.shape[:2]
    assert found.image_size == (width, height)
    assert (found.points[:, 0] >= 0).all() and (found.points[:, 0] < width).all()
    assert (found.points[:, 1] >= 0).all() and (found.points[:, 1] < height).all()
    assert found.interocular_px > 20


def test_person_mask_of_a_portrait(landmarker):
    rgb = _rgb("d8")
    with PersonSegmenter() as segmenter:
        mask = segmenter.mask(rgb)
    assert mask.shape == (720, 720) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    x0, y0, x1, y1 = (int(v) for v in landmarker.detect(rgb).bbox)
    centre_x, centre_y = (x0 + x1) // 2, (y0 + y1) // 2
    assert mask[centre_y - 40:centre_y + 40, centre_x - 40:centre_x + 40].mean() > 0.9
    assert mask[:100, :100].mean() < 0.1, "the top-left corner of d8 is studio backdrop"


def test_face_alignment_refuses_clearly_when_not_set_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weight cache, whatever is installed
    with pytest.raises(FaceAlignmentUnavailable) as caught:
        FaceAlignment68(device="cpu")
    assert isinstance(caught.value, HeadRigError)
    message = str(caught.value)
    assert "pip install face-alignment" in message
    assert "hub/checkpoints" in message
