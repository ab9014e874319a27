"""Evaluation output: H.264 clips (turntables, side-by-sides) and labelled image grids."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 18  # pixels of caption strip above each sheet column
GAP = 4  # pixels between tiles


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Encode frames [H, W, 3] uint8 (any iterable, consumed once) as H.264 yuv420p; returns the count.

    yuv420p needs even sides, so an odd width or height is padded by repeating the last column or
    row (nothing is cropped away). Every frame must have the first frame's size. Frame i has pts i
    at 1/fps. The file appears only when complete (temporary file + rename); nothing is written
    for an empty iterable (ValueError).
    """
    import av  # heavy; only the video commands need it

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".part.mp4")
    os.close(fd)
    count, shape = 0, None
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = None
            for rgb in frames:
                rgb = np.asarray(rgb)
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                    raise ValueError(f"frame {count}: expected [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
                if shape is None:
                    shape = rgb.shape
                    stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
                    stream.height, stream.width = rgb.shape[0] + rgb.shape[0] % 2, rgb.shape[1] + rgb.shape[1] % 2
                    stream.pix_fmt = "yuv420p"
                    stream.time_base = 1 / rate
                elif rgb.shape != shape:
                    raise ValueError(f"frame {count} is {rgb.shape}, the first frame {shape}")
                rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = count, 1 / rate
                container.mux(stream.encode(frame))
                count += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return count


def contact_sheet(rows: list[list[np.ndarray | None]], labels: list[str] | None = None,
                  background: tuple[int, int, int] = (30, 30, 30)) -> np.ndarray:
    """A grid image [H, W, 3] uint8 of tiles (e.g. one row per frame: input | render | error).

    Tiles are [h, w, 3] or [h, w] arrays, uint8 or float in [0, 1]; None leaves a cell empty. Each
    column is as wide as its widest tile and each row as tall as its tallest; tiles sit top-left
    in their cells, unscaled. ``labels`` (one per column) are drawn in a strip above the grid.
    """
    if not rows or not any(rows):
        raise ValueError("contact_sheet needs at least one tile")
    n_cols = max(len(r) for r in rows)
    if labels is not None and len(labels) != n_cols:
        raise ValueError(f"{len(labels)} labels for {n_cols} columns")
    tiles = [[_to_rgb8(t) if t is not None else None for t in r] + [None] * (n_cols - len(r)) for r in rows]
    col_w = [max((r[c].shape[1] for r in tiles if r[c] is not None), default=0) for c in range(n_cols)]
    row_h = [max((t.shape[0] for t in r if t is not None), default=0) for r in tiles]
    top = LABEL_HEIGHT if labels else 0
    xs = np.concatenate([[0], np.cumsum(np.asarray(col_w) + GAP)])
    ys = top + np.concatenate([[0], np.cumsum(np.asarray(row_h) + GAP)])
    sheet = np.empty((ys[-1] - GAP, xs[-1] - GAP, 3), np.uint8)
    sheet[:] = background
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is not None:
                sheet[ys[r]:ys[r] + tile.shape[0], xs[c]:xs[c] + tile.shape[1]] = tile
    if labels:
        image = Image.fromarray(sheet)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default()
        for c, text in enumerate(labels):
            draw.text((int(xs[c]) + 3, 3), text, fill=(235, 235, 235), font=font)
        sheet = np.asarray(image)
    return sheet


def error_image(a: np.ndarray, b: np.ndarray, max_error: float = 0.25) -> np.ndarray:
    """[H, W, 3] uint8 heat map of the per-pixel mean absolute difference of two images in [0, 1]
    (float) or uint8, black = equal, white = ``max_error`` or more."""
    diff = np.abs(_to_float(a) - _to_float(b)).mean(-1)
    level = np.clip(diff / max_error, 0, 1)
    # A simple black -> red -> yellow -> white ramp: small errors stay visible against black.
    rgb = np.stack([np.clip(3 * level, 0, 1), np.clip(3 * level - 1, 0, 1), np.clip(3 * level - 2, 0, 1)], -1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _to_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)


def _to_rgb8(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim == 2:
        tile = np.repeat(tile[..., None], 3, axis=-1)
    tile = tile[..., :3]
    if tile.dtype != np.uint8:
        tile = (np.clip(tile.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return tile
