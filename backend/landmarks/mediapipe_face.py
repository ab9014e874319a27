"""MediaPipe face mesh (478 points, irises included) on photos and video frames of any size.

Uses the legacy `mediapipe.solutions` graphs of mediapipe 0.10.21, whose .tflite weights ship inside
the wheel, so nothing is downloaded at run time (the Tasks API would need separate .task files).

Why not just `FaceMesh.process(image)`: the face mesh finds faces with MediaPipe's short-range
detector, which only sees faces filling roughly a tenth of the frame or more; a head in a wide
shot or a 4000x3000 photo is missed. So faces are found first with MediaPipe's two face detectors
on the whole image and, when they find nothing, with the full-range one over a pyramid of
overlapping tiles (see `_find_faces`). The largest face is cropped from the full-resolution image
into a square where it fills about half the side, and the mesh runs on that crop. Only when no
detector finds a face does the mesh run on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import mediapipe as mp
import numpy as np

from backend.errors import InputError

N_POINTS = 478
RIGHT_IRIS_CENTRE = 468  # the subject's right eye: on the image's left in an unmirrored photo
LEFT_IRIS_CENTRE = 473

# Detection boxes of MediaPipe's detectors measure about 2.3 inter-ocular distances across
# (measured on the sample portraits); used to judge "too small" when the mesh finds nothing.
BOX_WIDTH_PER_INTEROCULAR = 2.3

_NO_FACE_HINT = ("use a photo where one human face is clearly visible, lit, and not covered "
                 "(roughly frontal, eyes visible)")


@dataclass
class FaceLandmarks:
    """The 478 MediaPipe face-mesh points of one face, in pixels of the full image.

    Attributes:
        points: [478, 3] float32. x, y in pixels of the full image (MediaPipe's normalised coordinates
            times the image size: 0 is the left/top edge); z is MediaPipe's relative depth (0 near the
            head's centre) in the same pixel scale as x, negative towards the camera.
        n_faces: faces found in the image.
        face_index: which face was used, counting faces by decreasing size (0 = the largest).
        bbox: (x0, y0, x1, y1) of the points in pixels.
        image_size: (width, height) of the full image.
        notes: remarks for the user, e.g. "3 faces found; used the largest".
    """

    points: np.ndarray
    n_faces: int
    face_index: int
    bbox: tuple[float, float, float, float]
    image_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def interocular_px(self) -> float:
        """Distance between the two iris centres, in pixels."""
        return float(np.linalg.norm(self.points[RIGHT_IRIS_CENTRE, :2] - self.points[LEFT_IRIS_CENTRE, :2]))

    @property
    def face_size_px(self) -> float:
        """Diagonal of the landmark bbox, in pixels."""
        x0, y0, x1, y1 = self.bbox
        return float(np.hypot(x1 - x0, y1 - y0))


@dataclass
class _FaceBox:
    """One detected face in full-image pixels: box (x0, y0, x1, y1) and detector score in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


class FaceLandmarker:
    """Finds the largest face in an image and its 478 landmarks. Build once, reuse for many images.

    Not thread-safe: the MediaPipe graphs it holds process one image at a time. Deterministic: the
    same image gives the same points (static-image mode, no tracking between calls).

    Args:
        min_interocular_px: faces whose iris centres are closer than this (pixels of the full image)
            are refused with code "face_too_small": too few pixels to fit a head to.
        detection_long_side: the whole-image detection pass runs on a copy downscaled to this long side.
        crop_size: side in pixels of the square crop the mesh runs on.
        crop_scale: crop side / detection box side; 2 leaves room for the whole head outline and
            was the most accurate of 1.5 to 3 against the mesh on the whole image for the samples.
        min_tile: smallest tile side (full-image pixels) of the detection pyramid; smaller faces than
            about a tenth of it are not searched for.
        max_faces: most faces the face mesh reports when it is the fallback on the whole image.
        min_detection_confidence: score threshold of the face detectors and the mesh's own detector.
    """

    def __init__(self, min_interocular_px: float = 20.0, detection_long_side: int = 1280,
                 crop_size: int = 640, crop_scale: float = 2.0, min_tile: int = 640,
                 max_faces: int = 4, min_detection_confidence: float = 0.5):
        self.min_interocular_px = float(min_interocular_px)
        self.detection_long_side = int(detection_long_side)
        self.crop_size = int(crop_size)
        self.crop_scale = float(crop_scale)
        self.min_tile = int(min_tile)
        solutions = mp.solutions
        # Full range (model 1) sees small and mid-size faces but misses some close-ups (d8.jpg);
        # short range (model 0) sees faces over about a tenth of the frame. Both run, results merged.
        self._full_range = solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_detection_confidence)
        self._short_range = solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=min_detection_confidence)
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces,
            min_detection_confidence=min_detection_confidence)

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Frees the MediaPipe graphs; the object cannot be used afterwards."""
        for graph in (self._full_range, self._short_range, self._mesh):
            graph.close()

    def detect(self, rgb: np.ndarray, source: str = "") -> FaceLandmarks:
        """The landmarks of the largest face.

        Args:
            rgb: [H, W, 3] uint8 image.
            source: the file or frame the image came from, named in errors.

        Raises:
            InputError: code "no_face" when no face is found, "face_too_small" when the face is
                smaller than `min_interocular_px`, "bad_input" when rgb is not [H, W, 3] uint8.
        """
        rgb = _check_rgb(rgb, source)
        height, width = rgb.shape[:2]
        faces = self._find_faces(rgb)
        notes: list[str] = []
        found = None
        # The mesh confirms a detection; if the largest box is not a face it gets to try the next ones.
        for face_index, face in enumerate(faces[:3]):
            points = self._mesh_on_crop(rgb, face)
            if points is not None:
                found = (points, face_index)
                break
        n_faces = len(faces)
        if found is None:
            points_per_face = self._mesh_on_whole_image(rgb)
            if points_per_face:
                n_faces = len(points_per_face)
                sizes = [np.ptp(points[:, 0]) * np.ptp(points[:, 1]) for points in points_per_face]
                order = np.argsort(sizes, kind="stable")[::-1]
                found = (points_per_face[order[0]], 0)
                notes.append("the face detectors missed this face; "
                             "its landmarks come from the face mesh on the whole image")
        if found is None:
            # A small detection without landmarks is most likely a real face with too few pixels.
            if faces and faces[0].width < BOX_WIDTH_PER_INTEROCULAR * self.min_interocular_px * 1.5:
                raise _too_small_error(source, faces[0].width / BOX_WIDTH_PER_INTEROCULAR,
                                       self.min_interocular_px * 1.5, found_landmarks=False)
            raise InputError(source, "no face found", _NO_FACE_HINT, code="no_face")

        points, face_index = found
        if n_faces > 1:
            used = ("the largest" if face_index == 0
                    else f"face {face_index + 1} by size (larger ones had no landmarks)")
            notes.append(f"{n_faces} faces found; used {used}")
        x0, y0 = points[:, :2].min(axis=0)
        x1, y1 = points[:, :2].max(axis=0)
        result = FaceLandmarks(points=points.astype(np.float32), n_faces=n_faces, face_index=face_index,
                               bbox=(float(x0), float(y0), float(x1), float(y1)),
                               image_size=(width, height), notes=notes)
        if result.interocular_px < self.min_interocular_px:
            raise _too_small_error(source, result.interocular_px, self.min_interocular_px, found_landmarks=True)
        return result

    def _find_faces(self, rgb: np.ndarray) -> list[_FaceBox]:
        """Faces by decreasing area, from the first pyramid level that finds any.

        Level 0 is the whole image at `detection_long_side`; each next level cuts the full-resolution
        image into tiles a quarter the side of the previous level (down to `min_tile`), overlapping
        by half so every face up to half a tile lies whole in some tile. The full-range detector
        finds faces from about 1/16 to 1/3 of its input, so consecutive levels overlap in face size.
        """
        height, width = rgb.shape[:2]
        long_side = max(height, width)
        faces = self._detect_in_region(rgb, (0, 0, width, height), self.detection_long_side, both_models=True)
        tile = long_side
        while not faces and tile > self.min_tile:
            tile = max(self.min_tile, tile // 4)
            stride = tile // 2
            for y0 in _tile_starts(height, tile, stride):
                for x0 in _tile_starts(width, tile, stride):
                    region = (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
                    faces += self._detect_in_region(rgb, region, self.min_tile, both_models=False)
        return _merge_overlapping(faces)

    def _detect_in_region(self, rgb: np.ndarray, region: tuple[int, int, int, int], long_side: int,
                          both_models: bool) -> list[_FaceBox]:
        """Detector boxes in a region (x0, y0, x1, y1) of rgb, downscaled to long_side for speed."""
        x0, y0, x1, y1 = region
        view, scale = _downscaled(rgb[y0:y1, x0:x1], long_side)
        view_h, view_w = view.shape[:2]
        detectors = (self._full_range, self._short_range) if both_models else (self._full_range,)
        boxes = []
        for detector in detectors:
            for detection in detector.process(view).detections or []:
                rel = detection.location_data.relative_bounding_box
                bx0, by0 = x0 + rel.xmin * view_w / scale, y0 + rel.ymin * view_h / scale
                bw, bh = rel.width * view_w / scale, rel.height * view_h / scale
                if bw > 0 and bh > 0:
                    boxes.append(_FaceBox((bx0, by0, bx0 + bw, by0 + bh), float(detection.score[0])))
        return boxes

    def _mesh_on_crop(self, rgb: np.ndarray, face: _FaceBox) -> np.ndarray | None:
        """[478, 3] full-image points of the face in a square crop around the box, or None."""
        bx0, by0, bx1, by1 = face.box
        side = max(8, int(round(max(bx1 - bx0, by1 - by0) * self.crop_scale)))
        cx0 = int(round((bx0 + bx1) / 2 - side / 2))
        cy0 = int(round((by0 + by1) / 2 - side / 2))
        crop = _crop_with_padding(rgb, cx0, cy0, side)
        interpolation = cv2.INTER_AREA if side > self.crop_size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (self.crop_size, self.crop_size), interpolation=interpolation)
        faces_in_crop = self._mesh_points(crop)
        if not faces_in_crop:
            return None
        # Another face may reach into the crop: keep the one nearest the crop's centre.
        centre = self.crop_size / 2
        offsets = [np.hypot(*(points[:, :2].mean(axis=0) - centre)) for points in faces_in_crop]
        points = faces_in_crop[int(np.argmin(offsets))]
        to_full = side / self.crop_size
        return np.column_stack([cx0 + points[:, 0] * to_full, cy0 + points[:, 1] * to_full, points[:, 2] * to_full])

    def _mesh_on_whole_image(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Each face's [478, 3] full-image points, from the mesh on the downscaled whole image."""
        view, scale = _downscaled(rgb, self.detection_long_side)
        return [points / scale for points in self._mesh_points(view)]

    def _mesh_points(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Each face's [478, 3] points in pixels of rgb (z scaled by the width, as MediaPipe defines it)."""
        result = self._mesh.process(rgb)
        height, width = rgb.shape[:2]
        faces = []
        for face in result.multi_face_landmarks or []:
            normalised = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            if len(normalised) == N_POINTS:
                faces.append(normalised * np.array([width, height, width]))
        return faces


def _check_rgb(rgb: np.ndarray, source: str) -> np.ndarray:
    """A C-contiguous [H, W, 3] uint8 array (MediaPipe reads the raw buffer), or InputError."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 8:
        raise InputError(source, f"image must be [H, W, 3] uint8 RGB of at least 8x8, got {rgb.shape} {rgb.dtype}",
                         "load photos with backend.image_input.load_photo", code="bad_input")
    return np.ascontiguousarray(rgb)


def _too_small_error(source: str, interocular_px: float, needed_px: float, found_landmarks: bool) -> InputError:
    what = "the face is too small" if found_landmarks else "a face was found but is too small to place landmarks on"
    return InputError(source, f"{what} (eyes {interocular_px:.1f} px apart; {needed_px:.0f} px or more needed)",
                      "use a closer or higher-resolution photo where the face is larger", code="face_too_small")


def _downscaled(rgb: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """(image, scale): rgb shrunk so its long side is at most long_side; scale = new size / old size."""
    height, width = rgb.shape[:2]
    scale = min(1.0, long_side / max(height, width))
    if scale == 1.0:
        return np.ascontiguousarray(rgb), 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Exact per-axis scale would differ by rounding; use the mean, good to a fraction of a pixel.
    actual = (size[0] / width + size[1] / height) / 2
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), actual


def _crop_with_padding(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """[side, side, 3] square at (x0, y0) of rgb, black where it leaves the image."""
    height, width = rgb.shape[:2]
    crop = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return crop


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis covering [0, length), the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _merge_overlapping(faces: list[_FaceBox], min_overlap: float = 0.3) -> list[_FaceBox]:
    """One box per face (the higher-scoring of boxes overlapping by IoU or containment), by decreasing area."""
    kept: list[_FaceBox] = []
    for face in sorted(faces, key=lambda f: (-f.score, f.box)):
        if all(_overlap(face.box, other.box) < min_overlap for other in kept):
            kept.append(face)
    return sorted(kept, key=lambda f: (-f.area, f.box))


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area: a box inside another counts as the same face."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0
