"""Build the MediaPipe face mesh (478 points) -> ICT-FaceKit surface correspondence.

MediaPipe's canonical face model is not shipped in its wheel, so the correspondence is derived
from MediaPipe's own 3D output on real faces (reproducible: fixed inputs, deterministic steps):

1. MediaPipe face mesh (refined, 478 points) on the frontal photos and near-frontal video frames
   in ../shared/media; points in pixels, converted to the model's axes (y up, z towards viewer).
2. Per face: similarity alignment to ICT through the 51 inner iBUG-68 points (the contour is left
   out: it slides with pose), then non-rigid ICP: ICT identity and expression weights plus a
   similarity are fitted so every MediaPipe point lands on the ICT face surface.
3. Each point's closest surface position on the fitted mesh is carried to the neutral mesh by its
   barycentric coordinates; the per-face positions are averaged (median) and projected onto the
   neutral face surface: a triangle and barycentric weights per MediaPipe point.
4. Irises: centre = the most anterior iris vertex of the ICT eyeball on that side; ring points =
   the iris-boundary vertex in the ring point's direction (MediaPipe's iris depth is unreliable).

5. Refinement with ground truth (``--renders DIR``): ICT heads with known identity, expression,
   pose and camera rendered by Cycles (``python -m bench.synthetic``, a different seed from the
   accuracy benchmark). MediaPipe runs on each render; the visible surface point under each
   landmark is looked up on the true mesh and carried to the neutral mesh; the median over renders
   replaces the estimate of step 3 (irises keep step 4). This removes the bias between MediaPipe's
   notion of a landmark and ICT's surface, which real faces cannot measure.

Run: .venv/bin/python tools/build_mediapipe_correspondence.py [--renders DIR]
     (writes backend/assets/mediapipe_ict.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.fitting.geometry import umeyama  # noqa: E402
from backend.fitting.surface import closest_points_on_mesh  # noqa: E402
from backend.headmodel.ict_source import load_ict  # noqa: E402
from backend.headmodel.torch_model import MorphableModel  # noqa: E402
from backend.landmarks.correspondence import MEDIAPIPE_TO_IBUG68, OUTPUT_PATH  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
PHOTOS = ["d8.jpg", "d9.jpg", "d19.jpg"]
VIDEOS = ["d0.mp4", "d3.mp4", "d6.mp4", "d9.mp4", "d10.mp4", "d19.mp4"]
FRAMES_PER_VIDEO = 5
MAX_YAW_DEG = 15.0
IRIS_RADIUS_CM = 0.59  # half the mean human horizontal visible iris diameter (11.8 mm)


def mediapipe_faces(frames: list[np.ndarray]) -> list[np.ndarray]:
    """[478, 3] points per frame in model axes (x right, y up, z towards the viewer), pixel units."""
    import mediapipe as mp

    faces = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        for rgb in frames:
            res = mesh.process(rgb)
            if not res.multi_face_landmarks:
                continue
            h, w = rgb.shape[:2]
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in res.multi_face_landmarks[0].landmark])
            faces.append(pts * np.array([1.0, -1.0, -1.0]))
    return faces


def load_frames() -> list[np.ndarray]:
    from PIL import Image
    import av

    frames = [np.asarray(Image.open(MEDIA / "images" / name).convert("RGB")) for name in PHOTOS]
    for name in VIDEOS:
        with av.open(str(MEDIA / "video" / name)) as container:
            count = container.streams.video[0].frames
            picks = set(np.linspace(0, count - 1, FRAMES_PER_VIDEO).round().astype(int).tolist())
            frames += [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in picks]
    return frames


def fit_ict_to_points(asset, model_all, face_tris, points: np.ndarray, anchors_ict: np.ndarray, anchors_mp: np.ndarray):
    """Non-rigid ICP of the ICT model to MediaPipe points. Returns the fitted vertices [V, 3] (cm)
    and the MediaPipe points mapped into model space [478, 3]."""
    s, rot, t = umeyama(points[anchors_mp], asset.neutral[anchors_ict])
    if abs(np.degrees(np.arctan2(rot[0, 2], rot[2, 2]))) > MAX_YAW_DEG:
        return None, None
    target = torch.tensor((s * points @ rot.T + t)[:468], dtype=torch.float32)
    identity = torch.zeros(1, asset.n_identity, requires_grad=True)
    expression = torch.zeros(1, asset.n_expressions, requires_grad=True)
    rotation = torch.zeros(1, 3, requires_grad=True)
    translation = torch.zeros(1, 3, requires_grad=True)
    log_scale = torch.zeros(1, requires_grad=True)
    verts = asset.neutral
    for _ in range(4):  # ICP rounds: re-find the closest surface points, then refit
        tri, bary, _ = closest_points_on_mesh(target.numpy().astype(np.float64), verts, face_tris)
        model = MorphableModel.at_surface_points(asset, face_tris[tri], bary)
        opt = torch.optim.Adam([identity, expression, rotation, translation, log_scale], lr=0.03)
        for _ in range(50):
            opt.zero_grad()
            pred = model(identity, expression, rotation, translation, log_scale.exp())[0]
            loss = (pred - target).square().sum(1).mean() + 0.01 * identity.square().sum() + 0.05 * expression.abs().sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                expression.clamp_(0, 1)
        with torch.no_grad():
            posed = model_all(identity, expression, rotation, translation, log_scale.exp())[0].numpy()
        verts = posed
    return verts, (s * points @ rot.T + t)


def iris_correspondence(asset, side_points: np.ndarray, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Corners [5, 3] and bary [5, 3] for one iris: centre then the 4 ring points."""
    first, last = asset.parts[part]
    mat = asset.triangle_material()
    iris_mat = [i for i, n in enumerate(asset.material_names) if n.startswith("M_Iris")]
    tris = asset.triangles[np.isin(mat, iris_mat) & (asset.triangles[:, 0] >= first) & (asset.triangles[:, 0] <= last)]
    iris_verts = np.unique(tris)
    # ICT's iris material is a 1.47 cm disc (larger than the visible iris): the centre is the
    # vertex nearest the disc's centroid, ring points sit at the human iris radius in the ring
    # point's direction (MediaPipe's ring is a circle of the visible iris).
    pos = asset.neutral[iris_verts]
    centroid = pos[:, :2].mean(0)
    centre = iris_verts[np.argmin(np.linalg.norm(pos[:, :2] - centroid, axis=1))]
    corners = [[centre] * 3]
    centre_xy = side_points[0, :2]
    for ring in side_points[1:]:
        direction = (ring[:2] - centre_xy) / (np.linalg.norm(ring[:2] - centre_xy) + 1e-9)
        goal = asset.neutral[centre, :2] + IRIS_RADIUS_CM * direction
        corners.append([iris_verts[np.argmin(np.linalg.norm(pos[:, :2] - goal, axis=1))]] * 3)
    bary = np.tile([1.0, 0.0, 0.0], (5, 1))
    return np.array(corners), bary


def landmarks_on_renders(asset, render_dir: Path) -> list[np.ndarray]:
    """Per render: [468, 3] neutral-mesh positions of MediaPipe's face points (NaN where missed)."""
    import mediapipe as mp
    from PIL import Image

    from backend.bundle.texture_bake import PhotoView, cached_texel_map, project_points, visible_points
    from backend.headmodel.ict_source import cache_dir

    texels = cached_texel_map(asset, cache_dir())
    face_tile = texels.pixel % texels.size[0] < texels.size[0] // 2
    corners, bary = texels.corners[face_tile], texels.bary[face_tile]
    neutral_pts = (asset.neutral[corners] * bary[..., None]).sum(1)
    results = []
    samples = sorted(render_dir.glob("[0-9]*.json"))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        for js in tqdm(samples, desc="Locating MediaPipe points on renders", unit="render"):
            gt = json.loads(js.read_text())
            expression = np.array([gt["expression"][n] for n in asset.expression_names])
            verts = asset.vertices(np.array(gt["identity"]), expression) @ np.array(gt["rotation_matrix"]).T + np.array(gt["translation"])
            for size, intr in gt["intrinsics"].items():
                image = js.with_name(f"{js.stem}_{size}.png")
                if not image.is_file():
                    continue
                rgb = np.asarray(Image.open(image).convert("RGB"))
                res = mesh.process(rgb)
                if not res.multi_face_landmarks:
                    continue
                h, w = rgb.shape[:2]
                marks = np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])[:468]
                pts = (verts[corners] * bary[..., None]).sum(1)
                view = PhotoView(rgb, np.ones((h, w)), verts, np.zeros_like(verts), float(intr["fx"]), (float(intr["cx"]), float(intr["cy"])))
                vis = visible_points(pts, view, tolerance_cm=0.2, cell_px=1.0)
                xy = project_points(pts[vis], view.focal, view.principal)
                tree = cKDTree(xy)
                dist, idx = tree.query(marks)
                found = np.where((dist < 1.5)[:, None], neutral_pts[vis][idx], np.nan)
                results.append(found)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_PATH)
    parser.add_argument("--renders", type=Path, help="synthetic renders with ground truth (python -m bench.synthetic)")
    args = parser.parse_args()
    torch.manual_seed(0)
    asset = load_ict()
    model_all = MorphableModel.from_asset(asset)
    face_mat = asset.material_names.index("M_Face")
    face_tris = asset.triangles[asset.triangle_material() == face_mat]
    anchors_ict = asset.landmarks68[17:]
    anchors_mp = np.array(MEDIAPIPE_TO_IBUG68[17:])

    frames = load_frames()
    faces = mediapipe_faces(frames)
    neutral_positions, used, rms = [], 0, []
    for points in tqdm(faces, desc="Fitting ICT to MediaPipe faces", unit="face"):
        verts, mapped = fit_ict_to_points(asset, model_all, face_tris, points, anchors_ict, anchors_mp)
        if verts is None:
            continue
        tri, bary, dist = closest_points_on_mesh(mapped[:468], verts, face_tris)
        rms.append(float(np.sqrt(np.mean(dist**2))))
        corners = face_tris[tri]
        neutral_positions.append(np.einsum("pkc,pk->pc", asset.neutral[corners], bary))
        used += 1
    if used < 5:
        raise SystemExit(f"only {used} usable faces; the correspondence would be unreliable")
    mean_neutral = np.median(np.stack(neutral_positions), axis=0)
    refined = 0
    if args.renders:
        on_renders = np.stack(landmarks_on_renders(asset, args.renders))  # [R, 468, 3]
        counts = np.isfinite(on_renders[..., 0]).sum(0)
        refined_pos = np.nanmedian(on_renders, axis=0)
        use = counts >= max(5, len(on_renders) // 4)
        mean_neutral[use] = refined_pos[use]
        refined = int(use.sum())
    tri, bary, _ = closest_points_on_mesh(mean_neutral, asset.neutral, face_tris)
    corners = face_tris[tri]

    # Irises: MediaPipe's iris 468-472 and 473-477; the side follows from where its centre lies.
    mean_mp = np.median(np.stack([f for f in faces]), axis=0)
    iris_corners, iris_bary = [], []
    def eyeball_x(part: str) -> float:
        first, last = asset.parts[part]
        return float(asset.neutral[first : last + 1, 0].mean())

    for start in (468, 473):
        on_plus_x = mean_mp[start, 0] > mean_mp[1, 0]
        side = max(("eyeball_left", "eyeball_right"), key=lambda part: eyeball_x(part) * (1 if on_plus_x else -1))
        c, b = iris_correspondence(asset, mean_mp[start : start + 5], side)
        iris_corners.append(c)
        iris_bary.append(b)
    corners = np.concatenate([corners, *iris_corners])
    bary = np.concatenate([bary, *iris_bary])

    import mediapipe as mp

    oval = sorted({i for edge in mp.solutions.face_mesh_connections.FACEMESH_FACE_OVAL for i in edge})
    spread = np.linalg.norm(np.stack(neutral_positions) - mean_neutral, axis=2)
    result = {
        "format": "headrig.landmark_correspondence",
        "version": 1,
        "head_model": asset.name,
        "detector": "mediapipe-face-mesh-478",
        "corners": corners.astype(int).tolist(),
        "bary": np.round(bary, 6).tolist(),
        "contour": oval,
        "mediapipe_to_ibug68": list(MEDIAPIPE_TO_IBUG68),
        "procedure": {
            "script": "tools/build_mediapipe_correspondence.py",
            "faces_used": used,
            "photos": PHOTOS,
            "videos": VIDEOS,
            "frames_per_video": FRAMES_PER_VIDEO,
            "icp_residual_rms_cm_median": float(np.median(rms)),
            "per_point_spread_cm_median": float(np.median(spread)),
            "renders": str(args.renders) if args.renders else None,
            "points_refined_on_renders": refined,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, separators=(",", ":")))
    print(f"wrote {args.out}: {used} faces, ICP residual {np.median(rms):.3f} cm, spread {np.median(spread):.3f} cm, "
          f"{refined} points refined on renders")


if __name__ == "__main__":
    main()
