"""Degradations for restoration tasks: inpainting masks, grayscale, JPEG.

Every mask is a float32 array of shape ``(H, W)`` with **1 for a known pixel and
0 for a pixel to fill** (the convention of :func:`diffjax.tasks.repaint`).
Random masks are plain numpy, drawn from ``rng``: an int seed or a
``np.random.Generator``; the same seed gives the same mask.

=========================  ===================================================  ==============
mask                       what is filled                                       hole fraction
=========================  ===================================================  ==============
``free_form_mask``         brush strokes (Palette / DeepFill v2 style)          random
``box_mask``               one random axis-aligned box                          ``area_range``
``center_box_mask``        the central box, half the side (Palette's centre)    0.25
``irregular_mask``         union of strokes and ellipses                        ``hole_range`` (0.15-0.5)
``thin_mask``              narrow strokes (RePaint "narrow")                    ``hole_range`` (0.1-0.4)
``thick_mask``             wide strokes (RePaint "wide")                        ``hole_range`` (0.2-0.5)
``half_mask``              one half: left, right, top or bottom                 0.5
``uncrop_mask``            a half (one direction) or a border (four directions) 0.5 / ``1 - (1-2b)^2``
``expand_mask``            all but a centred box (RePaint "expand")             ``1 - known_fraction``
``alternating_lines_mask`` every second row (RePaint "altern. lines")           0.5
``super_resolution_mask``  all but one pixel per ``factor x factor`` cell       ``1 - 1/factor^2``
=========================  ===================================================  ==============

``to_grayscale`` is JAX (usable inside compiled programs); ``jpeg_compress`` runs
the real codec through Pillow on the host. ``stroke_painting`` simulates
SDEdit's stroke inputs (a few flat colour regions) with numpy on the host.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Literal

import jax.numpy as jnp
import numpy as np
from PIL import Image

from diffjax.typing import Array

__all__ = [
    "free_form_mask",
    "box_mask",
    "center_box_mask",
    "irregular_mask",
    "thin_mask",
    "thick_mask",
    "half_mask",
    "uncrop_mask",
    "expand_mask",
    "alternating_lines_mask",
    "super_resolution_mask",
    "hole_fraction",
    "to_grayscale",
    "jpeg_compress",
    "stroke_painting",
    "LUMA_WEIGHTS",
]

Side = Literal["left", "right", "top", "bottom"]
SIDES = ("left", "right", "top", "bottom")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B."""

MIN_MASK_SIDE = 4


# -- helpers -------------------------------------------------------------------
def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be an int seed or a np.random.Generator, got {type(rng).__name__}")


def _check_shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"mask shape must be a pair (H, W), got {shape!r}") from None
    if h < MIN_MASK_SIDE or w < MIN_MASK_SIDE:
        raise ValueError(f"mask sides must be >= {MIN_MASK_SIDE}, got shape ({h}, {w})")
    return h, w


def _check_fraction_range(name: str, value, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got ({lo}, {hi})")
    return lo, hi


def _check_side(side) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def _known_from_holes(holes: np.ndarray) -> np.ndarray:
    return (~holes).astype(np.float32)


def hole_fraction(mask) -> float:
    """Fraction of pixels to fill (``mask == 0``)."""
    return float(np.mean(np.asarray(mask) < 0.5))


@functools.lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (row, column), each of shape (H, W); cached, read-only."""
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _window(shape, row_span, col_span, reach: float) -> tuple[slice, slice]:
    """The pixels whose centres lie within ``reach`` of the box ``row_span`` x ``col_span``.

    Painting only there gives the same mask as painting the whole image (every
    pixel outside is farther than ``reach`` from the shape) at a fraction of the
    cost: masks are drawn per training row on the host.
    """
    h, w = shape
    r0 = max(0, math.floor(min(row_span) - reach))
    r1 = min(h, math.floor(max(row_span) + reach) + 1)
    c0 = max(0, math.floor(min(col_span) - reach))
    c1 = min(w, math.floor(max(col_span) + reach) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _paint_segment(holes: np.ndarray, p0, p1, width: float) -> None:
    """Mark pixels within ``width / 2`` of the segment p0-p1 (a round-capped brush)."""
    (r0, c0), (r1, c1) = p0, p1
    window = _window(holes.shape, (r0, r1), (c0, c1), 0.5 * width)
    rows, cols = (g[window] for g in _grid(*holes.shape))
    dr, dc = r1 - r0, c1 - c0
    length_sq = dr * dr + dc * dc
    # Projection of every pixel onto the segment, clamped to its end points.
    s = 0.0 if length_sq == 0 else np.clip(((rows - r0) * dr + (cols - c0) * dc) / length_sq, 0.0, 1.0)
    dist_sq = (rows - (r0 + s * dr)) ** 2 + (cols - (c0 + s * dc)) ** 2
    holes[window] |= dist_sq <= (0.5 * width) ** 2


def _paint_ellipse(holes: np.ndarray, centre, radii, angle: float) -> None:
    window = _window(holes.shape, (centre[0],), (centre[1],), max(radii))
    rows, cols = (g[window] for g in _grid(*holes.shape))
    y, x = rows - centre[0], cols - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * x + sin * y, -sin * x + cos * y
    holes[window] |= (u / radii[1]) ** 2 + (v / radii[0]) ** 2 <= 1.0


def _stroke(holes, rng, *, max_vertex, max_angle, max_length, width_range) -> None:
    """One brush stroke: a polyline of random turns from a random start point.

    Directions alternate between turning by ``+angle`` and ``-angle`` so strokes
    wander instead of spiralling, as in the DeepFill v2 generator Palette uses.
    """
    h, w = holes.shape
    point = (rng.uniform(0, h), rng.uniform(0, w))
    heading = rng.uniform(0, 2 * math.pi)
    width = rng.uniform(*width_range)
    for i in range(1 + rng.integers(max_vertex)):
        turn = rng.uniform(0, max_angle)
        heading += turn if i % 2 == 0 else -turn
        length = rng.uniform(0.2, 1.0) * max_length
        nxt = (
            min(max(point[0] + length * math.sin(heading), 0.0), h - 1.0),
            min(max(point[1] + length * math.cos(heading), 0.0), w - 1.0),
        )
        _paint_segment(holes, point, nxt, width)
        point = nxt


# -- free-form and box masks (Palette) ----------------------------------------
def free_form_mask(
    shape,
    rng,
    *,
    max_vertex: int = 5,
    max_angle: float = 4.0,
    max_length: float | None = None,
    max_brush_width: float | None = None,
    loops: int = 4,
) -> np.ndarray:
    """Free-form brush strokes, the generator of Palette's inpainting masks.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      rng: int seed or ``np.random.Generator``.
      max_vertex: each stroke has ``1 .. max_vertex`` segments.
      max_angle: largest turn between segments, radians (alternating sign).
      max_length: longest segment, pixels; default ``max(H, W) / 4``.
      max_brush_width: widest brush, pixels; default ``max(H, W) / 10``; each
        stroke's width is uniform in ``[max_brush_width / 4, max_brush_width]``.
      loops: number of strokes (each with its own start, width and turns).

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    h, w = _check_shape(shape)
    rng = _as_rng(rng)
    if max_vertex < 1 or loops < 1:
        raise ValueError(f"free_form_mask needs max_vertex >= 1 and loops >= 1, got {max_vertex}, {loops}")
    max_length = max(h, w) / 4 if max_length is None else float(max_length)
    max_brush_width = max(h, w) / 10 if max_brush_width is None else float(max_brush_width)
    if max_length <= 0 or max_brush_width <= 0:
        raise ValueError(
            f"max_length and max_brush_width must be > 0, got {max_length}, {max_brush_width}"
        )
    holes = np.zeros((h, w), bool)
    for _ in range(loops):
        _stroke(
            holes,
            rng,
            max_vertex=max_vertex,
            max_angle=max_angle,
            max_length=max_length,
            width_range=(max(1.0, max_brush_width / 4), max(1.0, max_brush_width)),
        )
    return _known_from_holes(holes)


def box_mask(shape, rng, *, area_range=(0.1, 0.3)) -> np.ndarray:
    """One random box whose area is a fraction ``area_range`` of the image.

    The box's aspect ratio is drawn in [1/2, 2] (clipped to fit) and its position
    uniformly inside the image. Pixel rounding moves the hole fraction by at
    most one row and column of the box.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      rng: int seed or ``np.random.Generator``.
      area_range: ``(low, high)`` hole fraction, within (0, 1].

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    h, w = _check_shape(shape)
    rng = _as_rng(rng)
    lo, hi = _check_fraction_range("area_range", area_range)
    if lo <= 0:
        raise ValueError(f"area_range must lie in (0, 1], got {area_range}")
    area = rng.uniform(lo, hi) * h * w
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    bh = int(np.clip(round(math.sqrt(area * aspect)), 1, h))
    bw = int(np.clip(round(area / bh), 1, w))
    top = rng.integers(0, h - bh + 1)
    left = rng.integers(0, w - bw + 1)
    holes = np.zeros((h, w), bool)
    holes[top : top + bh, left : left + bw] = True
    return _known_from_holes(holes)


def center_box_mask(shape) -> np.ndarray:
    """The centred box of half the height and width (a quarter of the area) to fill."""
    h, w = _check_shape(shape)
    holes = np.zeros((h, w), bool)
    holes[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = True
    return _known_from_holes(holes)


# -- masks with a target hole fraction -----------------------------------------
def _fill_to_fraction(h, w, rng, hole_range, paint, max_tries: int = 400) -> np.ndarray:
    """Union of random shapes until the hole fraction reaches a target in ``hole_range``.

    The target is uniform in the range. A shape that would push the fraction above
    the range's top is rejected and the shapes shrink, so the loop ends inside
    the range (checked; a ValueError if the image is too small to get there).
    """
    lo, hi = hole_range
    target = rng.uniform(lo, hi)
    holes = np.zeros((h, w), bool)
    scale = 1.0
    for _ in range(max_tries):
        if holes.mean() >= target:
            break
        candidate = holes.copy()
        paint(candidate, rng, scale)
        if candidate.mean() > hi:
            scale *= 0.8  # too big a bite: try smaller shapes
            continue
        holes = candidate
    fraction = holes.mean()
    if not lo <= fraction <= hi:
        raise ValueError(
            f"could not reach a hole fraction in [{lo}, {hi}] on a {h}x{w} mask (got {fraction:.3f}); "
            "use a larger mask or a wider range"
        )
    return _known_from_holes(holes)


def irregular_mask(shape, rng, *, hole_range=(0.15, 0.5)) -> np.ndarray:
    """Irregular holes: strokes and ellipses added until the hole fraction hits a target.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      rng: int seed or ``np.random.Generator``.
      hole_range: ``(low, high)`` with ``0 < low <= high < 1``; the returned
        mask's hole fraction lies in it.

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    h, w = _check_shape(shape)
    rng = _as_rng(rng)
    hole_range = _check_fraction_range("hole_range", hole_range)
    if not (0 < hole_range[0] and hole_range[1] < 1):
        raise ValueError(f"hole_range must lie in (0, 1), got {hole_range}")
    side = max(h, w)

    def paint(holes, rng, scale):
        if rng.random() < 0.5:
            radii = rng.uniform(0.05, 0.2, size=2) * side * scale + 0.5
            centre = (rng.uniform(0, h), rng.uniform(0, w))
            _paint_ellipse(holes, centre, radii, rng.uniform(0, math.pi))
        else:
            _stroke(
                holes,
                rng,
                max_vertex=6,
                max_angle=2.0,
                max_length=side * 0.3 * scale,
                width_range=(max(1.0, side * 0.03 * scale), max(1.0, side * 0.1 * scale)),
            )

    return _fill_to_fraction(h, w, rng, hole_range, paint)


def _stroke_mask(shape, rng, hole_range, width_range_rel, length_rel):
    h, w = _check_shape(shape)
    rng = _as_rng(rng)
    hole_range = _check_fraction_range("hole_range", hole_range)
    if not (0 < hole_range[0] and hole_range[1] < 1):
        raise ValueError(f"hole_range must lie in (0, 1), got {hole_range}")
    side = max(h, w)

    def paint(holes, rng, scale):
        _stroke(
            holes,
            rng,
            max_vertex=5,
            max_angle=2.0,
            max_length=side * length_rel * max(scale, 0.2),
            width_range=tuple(max(1.0, side * r * scale) for r in width_range_rel),
        )

    return _fill_to_fraction(h, w, rng, hole_range, paint)


def thin_mask(shape, rng, *, hole_range=(0.1, 0.4)) -> np.ndarray:
    """Narrow brush strokes (RePaint's "thin" family): widths 2-5 % of the image side.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      rng: int seed or ``np.random.Generator``.
      hole_range: ``(low, high)`` with ``0 < low <= high < 1``, default (0.1, 0.4);
        strokes are added until the hole fraction reaches a target drawn in it.

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    return _stroke_mask(shape, rng, hole_range, (0.02, 0.05), 0.3)


def thick_mask(shape, rng, *, hole_range=(0.2, 0.5)) -> np.ndarray:
    """Wide brush strokes (RePaint's "thick" family): widths 8-18 % of the image side.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      rng: int seed or ``np.random.Generator``.
      hole_range: ``(low, high)`` with ``0 < low <= high < 1``, default (0.2, 0.5);
        strokes are added until the hole fraction reaches a target drawn in it.

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    return _stroke_mask(shape, rng, hole_range, (0.08, 0.18), 0.4)


# -- deterministic families (RePaint, Palette's uncropping) --------------------
def half_mask(shape, side: Side = "right") -> np.ndarray:
    """Fill one half of the image: ``side`` in left / right / top / bottom."""
    h, w = _check_shape(shape)
    side = _check_side(side)
    holes = np.zeros((h, w), bool)
    if side == "left":
        holes[:, : w // 2] = True
    elif side == "right":
        holes[:, w // 2 :] = True
    elif side == "top":
        holes[: h // 2] = True
    else:
        holes[h // 2 :] = True
    return _known_from_holes(holes)


def _border_holes(h, w, top, left, known_h, known_w) -> np.ndarray:
    holes = np.ones((h, w), bool)
    holes[top : top + known_h, left : left + known_w] = False
    return holes


def uncrop_mask(shape, direction: Literal["left", "right", "top", "bottom", "all"] = "all", *, border=0.25):
    """Uncropping (outpainting) as in Palette.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      direction: ``"left"`` / ``"right"`` / ``"top"`` / ``"bottom"``: extend the
        image that way, i.e. fill that half. ``"all"``: fill a border on all
        four sides.
      border: for ``"all"``, the border width as a fraction of each side, in
        (0, 0.5); the hole fraction is ``1 - (1 - 2 border)^2`` up to rounding.

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    if direction in SIDES:
        return half_mask(shape, direction)
    if direction != "all":
        raise ValueError(f"direction must be one of {SIDES + ('all',)}, got {direction!r}")
    h, w = _check_shape(shape)
    if not 0 < border < 0.5:
        raise ValueError(f"border must lie in (0, 0.5), got {border}")
    bh, bw = max(1, round(border * h)), max(1, round(border * w))
    return _known_from_holes(_border_holes(h, w, bh, bw, h - 2 * bh, w - 2 * bw))


def expand_mask(shape, *, known_fraction: float = 0.25) -> np.ndarray:
    """RePaint's "expand": keep a centred box holding ``known_fraction`` of the area, fill the rest.

    Args:
      shape: ``(H, W)``, both sides >= 4.
      known_fraction: area of the kept centre, in (0, 1); the box has the
        image's aspect ratio, sides rounded to whole pixels.

    Returns:
      float32 ``(H, W)`` mask, 1 = known, 0 = fill.
    """
    h, w = _check_shape(shape)
    if not 0 < known_fraction < 1:
        raise ValueError(f"known_fraction must lie in (0, 1), got {known_fraction}")
    scale = math.sqrt(known_fraction)
    kh, kw = max(1, round(scale * h)), max(1, round(scale * w))
    return _known_from_holes(_border_holes(h, w, (h - kh) // 2, (w - kw) // 2, kh, kw))


def alternating_lines_mask(shape, *, known_rows: Literal["even", "odd"] = "even") -> np.ndarray:
    """Every second row is missing (RePaint's "alternating lines").

    Args:
      shape: ``(H, W)``, both sides >= 4.
      known_rows: keep rows 0, 2, 4, ... (``"even"``) or rows 1, 3, ... (``"odd"``).
    """
    h, w = _check_shape(shape)
    if known_rows not in ("even", "odd"):
        raise ValueError(f"known_rows must be 'even' or 'odd', got {known_rows!r}")
    known = np.zeros((h, w), np.float32)
    known[(0 if known_rows == "even" else 1) :: 2] = 1.0
    return known


def super_resolution_mask(shape, *, factor: int = 2) -> np.ndarray:
    """Known pixel at the top-left of every ``factor x factor`` cell (RePaint's "x2 SR" for 2)."""
    h, w = _check_shape(shape)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 2 <= factor <= min(h, w):
        raise ValueError(f"factor must be an integer in [2, min(H, W)], got {factor!r}")
    known = np.zeros((h, w), np.float32)
    known[::factor, ::factor] = 1.0
    return known


# -- colour and compression ----------------------------------------------------
def to_grayscale(rgb: Array, *, keep_channels: bool = True) -> Array:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (Palette's colorization input).

    The weights sum to one, so the same formula holds on [-1, 1] and [0, 1]
    images; runs inside compiled programs.

    Args:
      rgb: images with 3 channels last, e.g. ``(B, H, W, 3)``, floating point.
      keep_channels: return the luma replicated over 3 channels (drop-in for a
        colour image) if True, else a single channel.

    Returns:
      ``(..., 3)`` or ``(..., 1)``, same dtype as ``rgb``.
    """
    rgb = jnp.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"to_grayscale needs 3 channels last, got shape {rgb.shape}")
    if not jnp.issubdtype(rgb.dtype, jnp.floating):
        raise ValueError(f"to_grayscale needs a floating-point image, got dtype {rgb.dtype}")
    luma = rgb @ jnp.asarray(LUMA_WEIGHTS, rgb.dtype)
    luma = luma[..., None]
    return jnp.repeat(luma, 3, axis=-1) if keep_channels else luma


def jpeg_compress(images, quality: int) -> np.ndarray:
    """JPEG-encode and decode images with Pillow's codec (host-side, numpy).

    Args:
      images: ``uint8`` in [0, 255] or floating point in [-1, 1]; shape
        ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)`` with C in {1, 3}.
      quality: JPEG quality, an integer in 1..95 (Pillow advises against above 95).

    Returns:
      The decoded images, same shape and dtype (and range) as ``images``.
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an integer in 1..95, got {quality!r}")
    images = np.asarray(images)
    is_float = np.issubdtype(images.dtype, np.floating)
    if not (is_float or images.dtype == np.uint8):
        raise ValueError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    shape = images.shape
    if images.ndim == 2:
        batch = images[None, ..., None]
    elif images.ndim == 3:
        batch = images[None]
    elif images.ndim == 4:
        batch = images
    else:
        raise ValueError(f"images must be (H, W), (H, W, C) or (B, H, W, C), got shape {shape}")
    if batch.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {shape}")
    if is_float:
        if batch.size and (batch.min() < -1.0 - 1e-3 or batch.max() > 1.0 + 1e-3):
            raise ValueError(
                f"float images must lie in [-1, 1], got range [{batch.min():.3f}, {batch.max():.3f}]"
            )
        as_uint8 = np.round((np.clip(batch, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    else:
        as_uint8 = batch
    decoded = np.empty_like(as_uint8)
    for i, img in enumerate(as_uint8):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        out = np.asarray(Image.open(buffer))
        decoded[i] = out.reshape(img.shape)
    if is_float:
        decoded = (decoded.astype(images.dtype) / np.asarray(127.5, images.dtype) - 1).astype(images.dtype)
    return decoded.reshape(shape)


# -- stroke paintings (SDEdit's simulated strokes) ------------------------------
def _median_filter(img: np.ndarray, size: int) -> np.ndarray:
    """Per-channel median over a ``size x size`` window (edge padding); ``img`` is (H, W, C)."""
    pad = size // 2
    padded = np.pad(img, ((pad, size - 1 - pad), (pad, size - 1 - pad), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))
    return np.median(windows, axis=(-2, -1))


def _box_sum(img: np.ndarray, size: int) -> np.ndarray:
    """Sum over a ``size x size`` window (edge padding) of an (H, W, K) array."""
    pad = size // 2
    padded = np.pad(img, ((pad, size - 1 - pad), (pad, size - 1 - pad), (0, 0)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1)).sum(axis=(-2, -1))


def _kmeans_palette(pixels: np.ndarray, colors: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means of (N, C) pixels: returns (palette (K, C), labels (N,))."""
    # Start from pixels at evenly spaced quantiles of their brightness: no randomness.
    order = np.argsort(pixels.mean(axis=1), kind="stable")
    picks = order[np.linspace(0, len(order) - 1, colors).round().astype(int)]
    palette = pixels[picks].astype(np.float64)
    for _ in range(iterations):
        labels = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
        for k in range(colors):
            members = pixels[labels == k]
            if len(members):
                palette[k] = members.mean(axis=0)
    labels = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    return palette, labels


def stroke_painting(images, *, colors: int = 6, smooth: int | None = None, iterations: int = 10) -> np.ndarray:
    """A stroke painting of each image: a few flat colour regions (SDEdit's simulated strokes).

    Each image is median-filtered (removing texture and fine detail), its
    colours are reduced to ``colors`` by k-means (deterministic initialisation),
    and region boundaries are smoothed by a majority vote over the same window,
    so the result looks like a few brush strokes of flat colour.

    Args:
      images: floating-point ``(H, W, C)`` or ``(B, H, W, C)`` images, any range
        (the output keeps it: every output colour is a mean of input colours).
      colors: number of flat colours per image, an integer >= 2.
      smooth: window side of the median filter and the majority vote, an odd or
        even integer >= 1; ``None`` picks ``max(3, min(H, W) // 8)``.
      iterations: k-means iterations.

    Returns:
      float32 array shaped like ``images``, at most ``colors`` distinct colours
      per image.

    Raises:
      ValueError: on a non-floating or wrongly shaped input, or bad integers.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"stroke_painting needs floating-point images, got dtype {images.dtype}")
    if images.ndim not in (3, 4):
        raise ValueError(f"stroke_painting needs (H, W, C) or (B, H, W, C) images, got shape {images.shape}")
    for name, value, low in (("colors", colors, 2), ("iterations", iterations, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    batch = images[None] if images.ndim == 3 else images
    h, w = batch.shape[1:3]
    if smooth is None:
        smooth = max(3, min(h, w) // 8)
    if isinstance(smooth, bool) or not isinstance(smooth, (int, np.integer)) or not 1 <= smooth <= min(h, w):
        raise ValueError(f"smooth must be an integer in [1, min(H, W)] = [1, {min(h, w)}], got {smooth!r}")
    out = np.empty(batch.shape, np.float32)
    for i, img in enumerate(batch.astype(np.float64)):
        blurred = _median_filter(img, smooth)
        palette, labels = _kmeans_palette(blurred.reshape(h * w, -1), colors, iterations)
        one_hot = np.eye(colors)[labels.reshape(h, w)]
        labels = np.argmax(_box_sum(one_hot, smooth), axis=-1)  # majority vote: clean region edges
        out[i] = palette[labels]
    return out[0] if images.ndim == 3 else out
