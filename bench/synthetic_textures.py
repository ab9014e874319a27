"""Skin textures for the synthetic benchmark: procedural atlases and user-given ones.

``procedural_texture`` paints a skin atlas in the bundle's layout (``backend.texture_layout``)
through the mesh's rest positions (``rasterize_uv_positions``) with value noise; ``collect_textures``
gathers atlas PNGs given on the command line of ``python -m bench.synthetic``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from backend.bundle.texture_bake import cached_texel_map
from backend.headmodel.asset import HeadModelAsset
from backend.headmodel.ict_source import cache_dir
from backend.texture_layout import ATLAS_SIZE, ATLAS_TILES, SKIN_MATERIALS

SKIN_TONES = np.array([  # sRGB albedo-ish base colours, light to dark
    [232, 196, 172], [224, 180, 150], [214, 168, 134], [198, 150, 114], [186, 134, 100],
    [166, 114, 82], [140, 94, 66], [116, 76, 52], [92, 60, 42], [236, 200, 182],
], float) / 255.0
HAIR_COLOURS = np.array([
    [30, 22, 18], [52, 36, 26], [80, 56, 38], [112, 80, 52], [150, 112, 70], [182, 150, 104],
    [120, 60, 34], [140, 136, 130], [20, 18, 18],
], float) / 255.0


# ----------------------------------------------------------------------------- textures


def rasterize_uv_positions(asset: HeadModelAsset, material: str, size: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Rest position (neutral mean mesh, cm) under every texel of one skin UDIM tile, from the texel
    map the texture baker uses (so the benchmark's textures and the baked ones agree texel for texel).

    Returns:
        positions [size, size, 3] float32 (image rows top = v 1) and covered [size, size] bool.
    """
    if SKIN_MATERIALS.index(material) != tile:
        raise ValueError(f"{material} is not on UDIM tile {tile} of the skin atlas")
    texels = cached_texel_map(asset, cache_dir(), (ATLAS_TILES * size, size))
    x, y = texels.pixel % (ATLAS_TILES * size), texels.pixel // (ATLAS_TILES * size)
    mine = x // size == tile
    positions = np.zeros((size, size, 3), np.float32)
    covered = np.zeros((size, size), bool)
    rest = (asset.neutral[texels.corners[mine]] * texels.bary[mine][..., None]).sum(1)
    positions[y[mine], x[mine] - tile * size] = rest
    covered[y[mine], x[mine] - tile * size] = True
    return positions, covered


def _hash01(ix, iy, iz, seed):
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B185EBCA87) ^ iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
         ^ iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9) ^ np.uint64(seed * 0x27D4EB2F165667C5 & 0xFFFFFFFFFFFFFFFF))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xD6E8FEB86659FD93)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(points: np.ndarray, frequency, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at [N, 3] points; frequency is a scalar or per axis."""
    q = np.asarray(points, np.float64) * np.asarray(frequency, np.float64)
    i0 = np.floor(q).astype(np.int64)
    f = q - i0
    f = f * f * (3 - 2 * f)
    with np.errstate(over="ignore"):
        out = np.zeros(len(q))
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                    out += w * _hash01(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz, seed)
    return out


def fbm(points: np.ndarray, frequency: float, seed: int, octaves: int = 4, anisotropy=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Fractal value noise, roughly zero-mean, amplitude about +-0.5."""
    total, amp, norm = np.zeros(len(points)), 1.0, 0.0
    for o in range(octaves):
        total += amp * (value_noise(points, np.asarray(anisotropy) * frequency * 2**o, seed + 101 * o) - 0.5)
        norm += amp
        amp *= 0.5
    return total / norm


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _polyline_distance(p2: np.ndarray, line: np.ndarray, closed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Distance of [N, 2] points to a polyline [K, 2], and the arc-length parameter in [0, 1] of the closest point."""
    pts = np.vstack([line, line[:1]]) if closed else line
    seg_a, seg_b = pts[:-1], pts[1:]
    lengths = np.linalg.norm(seg_b - seg_a, axis=1)
    cum = np.r_[0, np.cumsum(lengths)]
    best = np.full(len(p2), np.inf)
    param = np.zeros(len(p2))
    for k, (a, b) in enumerate(zip(seg_a, seg_b)):
        ab = b - a
        t = np.clip(((p2 - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.linalg.norm(p2 - (a + t[:, None] * ab), axis=1)
        better = d < best
        best[better] = d[better]
        param[better] = (cum[k] + t[better] * lengths[k]) / cum[-1]
    return best, param


def _inside_polygon(p2: np.ndarray, poly: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(p2), bool)
    x, y = p2[:, 0], p2[:, 1]
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xi)
    return inside


def _lid_margin_points(asset: HeadModelAsset) -> np.ndarray:
    """Rest positions of the eyelid margins: M_Face boundary vertices around the eye openings."""
    face_mat = asset.material_names.index("M_Face")
    sizes = asset.face_sizes
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    edges = []
    for f in np.nonzero(asset.face_material == face_mat)[0]:
        corners = asset.face_vertices[starts[f] : starts[f] + sizes[f]]
        edges += [tuple(sorted((int(a), int(b)))) for a, b in zip(corners, np.roll(corners, -1))]
    uniq, counts = np.unique(np.array(edges), axis=0, return_counts=True)
    boundary = np.unique(uniq[counts == 1].ravel())
    lm = asset.neutral[asset.landmarks68]
    eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
    pts = asset.neutral[boundary]
    near = np.zeros(len(pts), bool)
    for c in eyes:
        near |= np.linalg.norm(pts - c, axis=1) < 2.2
    return pts[near]


def procedural_texture(asset: HeadModelAsset, seed: int, size: int | None = None) -> np.ndarray:
    """A skin texture in the bundle's atlas layout: [H, 2H, 3] uint8 (face left, back head right).

    Skin tone, redness and blotches, darker brows with hair strokes, lips, lash lines and
    (often) short hair on the scalp, all placed through the mesh's rest positions.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng([seed, 7919])
    height = size or ATLAS_SIZE[1]
    atlas = np.zeros((height, height * ATLAS_TILES, 3), np.float64)
    lm = asset.neutral[asset.landmarks68].astype(np.float64)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] * rng.uniform(0.94, 1.04, 3)
    hair = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
    brow_colour = np.minimum(hair, HAIR_COLOURS[3]) * rng.uniform(0.45, 0.8) if rng.random() < 0.8 else HAIR_COLOURS[0]
    has_hair = rng.random() < 0.7
    hairline = rng.uniform(10.5, 12.3)
    brow_strength = rng.uniform(0.55, 0.95)
    lip_strength = rng.uniform(0.45, 0.85)
    lip_tint = np.array([0.92, 0.62, 0.62]) * rng.uniform(0.92, 1.05, 3)
    margin_tree = cKDTree(_lid_margin_points(asset))
    nseed = int(rng.integers(1 << 30))

    for tile, material in enumerate(SKIN_MATERIALS):
        pos, covered = rasterize_uv_positions(asset, material, height, tile)
        p = pos[covered].astype(np.float64)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        col = np.tile(skin, (len(p), 1))
        # Low-frequency tone: redder cheeks, nose and ears, darker under the eyes, blotches.
        red = np.exp(-(((np.abs(x) - 4.3) ** 2) / 6 + ((y + 0.5) ** 2) / 5)) * (z > 6)
        red += 0.8 * np.exp(-((x**2) / 2 + ((y - 0.3) ** 2) / 3)) * (z > 10)
        col *= 1 + 0.10 * rng.uniform(0.5, 1.5) * red[:, None] * np.array([0.25, -0.45, -0.45])
        under_eye = np.exp(-(((np.abs(x) - 3.1) ** 2) / 1.5 + ((y - 2.3) ** 2) / 0.4)) * (z > 7)
        col *= 1 - 0.07 * under_eye[:, None]
        col *= 1 + 0.08 * fbm(p, 0.6, nseed, 3)[:, None] + 0.05 * fbm(p, 3.0, nseed + 1, 3)[:, None]
        col *= 1 + 0.035 * (value_noise(p, 14.0, nseed + 2) - 0.5)[:, None] * np.array([1.0, 1.1, 1.2])
        if tile == 0:
            # Brows: a band just below the iBUG brow landmarks, thick at the inner end, with strokes.
            for idx in (list(range(21, 16, -1)), list(range(22, 27))):
                line = lm[idx, :2] - np.array([0.0, 0.22])
                d, s = _polyline_distance(p[:, :2], line)
                half = 0.42 * (1 - s) + 0.18 * s
                density = _smoothstep(half + 0.12, half - 0.08, d) * (z > 6.0)
                strokes = value_noise(p, np.array([2.5, 9.0, 9.0]), nseed + 3) * 0.6 + 0.4
                a = np.clip(density * strokes * brow_strength * 1.3, 0, 1)[:, None]
                col = col * (1 - a) + brow_colour * a
            # Lips inside the outer lip contour (iBUG 48-59), soft-edged.
            poly = lm[48:60, :2]
            inside = _inside_polygon(p[:, :2], poly)
            d, _ = _polyline_distance(p[:, :2], poly, closed=True)
            lips = np.where(inside, _smoothstep(0.0, 0.12, d), 0.0) * (z > 8.5)
            lips = (lips * lip_strength)[:, None]
            col = col * (1 - lips) + col * lip_tint * lips
            # Lash lines along the eyelid margins.
            dist, _ = margin_tree.query(p, k=1)
            lash = _smoothstep(0.18, 0.03, dist) * (z > 6.5)
            col *= (1 - 0.75 * lash)[:, None]
            # Nostril openings: dark where the nose surface turns underneath.
            nostril = np.exp(-(((np.abs(x) - 0.75) ** 2) / 0.08 + ((y + 0.85) ** 2) / 0.03)) * (z > 10.5)
            col *= (1 - 0.3 * np.clip(nostril, 0, 1))[:, None]
        if has_hair:
            ear_zone = np.exp(-(((np.abs(x) - 8.0) ** 2) / 4 + ((y - 1.0) ** 2) / 8 + ((z - 1.0) ** 2) / 8))
            line = np.interp(z, [-10, -4, 1, 5, 9, 14], [-6.5, -1.0, 5.5, 8.5, hairline, hairline])
            line += 0.4 * fbm(p, 0.8, nseed + 4, 2) + 3.0 * ear_zone
            cover = _smoothstep(line - 0.2, line + 0.5, y)[:, None]
            strands = 1 + 0.25 * (value_noise(p, np.array([12.0, 3.0, 12.0]), nseed + 5) - 0.5)
            col = col * (1 - cover) + (hair * strands[:, None]) * cover
        tile_img = np.zeros((height, height, 3))
        tile_img[covered] = np.clip(col, 0, 1)
        # Fill uncovered texels with the nearest covered one so bilinear filtering has no seams.
        _, nearest = ndimage.distance_transform_edt(~covered, return_indices=True)
        tile_img = tile_img[nearest[0], nearest[1]]
        atlas[:, tile * height : (tile + 1) * height] = tile_img
    return (np.clip(atlas, 0, 1) * 255 + 0.5).astype(np.uint8)


def ensure_procedural_textures(asset: HeadModelAsset, folder: Path, count: int, seed: int) -> list[str]:
    """Procedural atlas textures ``folder/procedural_KK.png`` (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"procedural_{seed}_{k:02d}.png"
        if not path.is_file():
            Image.fromarray(procedural_texture(asset, seed * 1000 + k)).save(path)
        paths.append(str(path))
    return paths


def collect_textures(items: list[str]) -> list[str]:
    """PNG paths from files and folders (folders: every ``texture.png`` below, else every PNG)."""
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.rglob("texture.png")) or sorted(path.rglob("*.png"))
            out += [str(p.resolve()) for p in found]
        elif path.is_file():
            out.append(str(path.resolve()))
        else:
            raise SystemExit(f"{item}: no such texture file or folder")
    if items and not out:
        raise SystemExit(f"no PNG textures found in {items}")
    return out
