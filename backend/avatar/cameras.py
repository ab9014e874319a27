"""Turntable cameras around a head, and conversions between camera conventions.

World: the glTF frame of head.glb (metres, Y up, the face looking down +Z, the subject's left
toward +X). Cameras are returned as OpenCV world->camera matrices ("viewmats", as gsplat takes
them): camera axes x right, y down, z forward (into the scene), x_cam = R x_world + t. The
OpenGL / glTF / Blender camera instead looks down its -Z with +Y up; the two differ by a flip of
the camera's y and z axes, diag(1, -1, -1). Intrinsics are OpenCV K in the project's continuous
pixel coordinates (pixel i spans [i, i + 1], so the image centre is (W / 2, H / 2)).
"""

from __future__ import annotations

import numpy as np

_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # its own inverse


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """[..., 4, 4] OpenCV world->camera for cameras at eye [..., 3] looking at target [..., 3]; ``up`` is
    the world direction that appears up in the image (it must not be parallel to the view)."""
    eye, target = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    forward = _unit(target - eye)
    right = np.cross(forward, np.broadcast_to(np.asarray(up, np.float64), forward.shape))
    if (np.linalg.norm(right, axis=-1) < 1e-9).any():
        raise ValueError("look_at: the view direction is parallel to up")
    right = _unit(right)
    down = np.cross(forward, right)  # right x down = forward: a proper rotation
    rot = np.stack([right, down, forward], axis=-2)  # rows: camera axes in world coordinates
    view = np.zeros((*eye.shape[:-1], 4, 4))
    view[..., :3, :3] = rot
    view[..., :3, 3] = -(rot @ eye[..., None])[..., 0]
    view[..., 3, 3] = 1.0
    return view


def orbit_cameras(n_frames: int, radius_m: float, elevation_deg: float = 0.0, target=(0.0, 0.0, 0.0),
                  fov_deg: float | None = 30.0, focal: float | None = None, size: int | tuple[int, int] = 512
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A closed turntable of ``n_frames`` cameras ``radius_m`` from ``target`` [3], all looking at it.

    Frame i sits at azimuth 360 i / n degrees: frame 0 in front of the face (on +Z), then toward +X
    (the subject's left), so frame n would be frame 0 again and the clip loops seamlessly.
    ``elevation_deg`` > 0 looks down from above. The focal length is ``focal`` pixels if given,
    else set by ``fov_deg``, the horizontal field of view across the width W of ``size`` = (W, H)
    (an int for a square image).

    Returns: viewmats [n, 4, 4] float64 world->camera (OpenCV), K [3, 3] float64.
    """
    if n_frames < 1 or radius_m <= 0:
        raise ValueError(f"need n_frames >= 1 and radius_m > 0, got {n_frames}, {radius_m}")
    if abs(elevation_deg) >= 89.0:
        raise ValueError(f"elevation_deg must lie within (-89, 89), got {elevation_deg}: up is undefined at the pole")
    width, height = (size, size) if np.isscalar(size) else size
    if focal is None:
        if fov_deg is None or not 0 < fov_deg < 180:
            raise ValueError(f"give focal, or fov_deg in (0, 180); got {fov_deg}")
        focal = focal_from_fov(fov_deg, width)
    azimuth = 2 * np.pi * np.arange(n_frames) / n_frames
    elevation = np.radians(elevation_deg)
    direction = np.stack([np.cos(elevation) * np.sin(azimuth), np.full(n_frames, np.sin(elevation)),
                          np.cos(elevation) * np.cos(azimuth)], axis=-1)
    centres = np.asarray(target, np.float64) + radius_m * direction
    viewmats = look_at(centres, np.broadcast_to(np.asarray(target, np.float64), centres.shape))
    K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return viewmats, K


def camera_centres(viewmats: np.ndarray) -> np.ndarray:
    """[..., 4, 4] world->camera -> [..., 3] camera positions in the world (-R^T t)."""
    m = np.asarray(viewmats, np.float64)
    return -(np.swapaxes(m[..., :3, :3], -1, -2) @ m[..., :3, 3:])[..., 0]


def focal_from_fov(fov_deg: float, extent_px: float) -> float:
    """Focal length in pixels for a field of view of ``fov_deg`` across ``extent_px`` pixels."""
    return extent_px / 2 / np.tan(np.radians(fov_deg) / 2)


def fov_from_focal(focal: float, extent_px: float) -> float:
    """Field of view in degrees across ``extent_px`` pixels (glTF's yfov wants the height, in radians)."""
    return float(np.degrees(2 * np.arctan(extent_px / 2 / focal)))


def opencv_to_gl_pose(viewmats: np.ndarray) -> np.ndarray:
    """[..., 4, 4] OpenCV world->camera -> [..., 4, 4] OpenGL/glTF camera->world (a glTF camera node's
    matrix, a Blender camera's matrix_world)."""
    return np.linalg.inv(np.asarray(viewmats, np.float64)) @ _CV_TO_GL


def gl_pose_to_opencv(cam_to_world: np.ndarray) -> np.ndarray:
    """[..., 4, 4] OpenGL/glTF camera->world -> [..., 4, 4] OpenCV world->camera (inverse of opencv_to_gl_pose)."""
    return np.linalg.inv(np.asarray(cam_to_world, np.float64) @ _CV_TO_GL)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a [4, 4] rigid transform to points [..., 3] (e.g. a viewmat to world vertices)."""
    m = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ m[:3, :3].T + m[:3, 3]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
