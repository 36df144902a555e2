"""Score functions on images larger than a network's input: overlapping tiles blended at the score level.

The UNet takes one input size (its middle self-attention spans the whole
feature map, and it checks the size), so an image larger than that size is
cut into overlapping ``tile x tile`` windows *inside* the sampler: at every
step the score of the whole image is the window-weighted average of the tiles'
scores. The sampler therefore moves one global image; tiles agree where they
overlap and no seam appears. Conditions (SR3's upsampled input, Palette's
masked image or luma) are cut at exactly the same windows as the noisy image.

Every restoration task uses this one tiler: SR3 and cascade stages
(:func:`diffjax.tasks.sr3.super_resolve`), Palette and RePaint
(:func:`diffjax.pipelines.restoration.restore_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from diffjax.typing import Array

__all__ = ["tile_offsets", "blend_window", "tiled_score_fn", "default_overlap"]

CondScoreFn = Callable[[Array, Array, "Array | None"], Array]  # (x, t, cond) -> score


def default_overlap(tile: int) -> int:
    """The overlap used where a task has no setting of its own: a quarter of the tile (8 for 32), at least 1."""
    return max(1, tile // 4)


def tile_offsets(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start positions of tiles of length ``tile`` covering ``size`` with at least ``overlap`` shared.

    The last tile ends at ``size`` exactly, so any ``size >= tile`` is covered.

    Raises:
      ValueError: ``size < tile``, ``tile < 1`` or ``overlap`` outside ``[0, tile)``.
    """
    if tile < 1 or size < tile:
        raise ValueError(f"cannot tile length {size} with tiles of {tile}; need size >= tile >= 1")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile={tile}), got {overlap}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return tuple(sorted(set(starts)))


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights: a linear ramp over the overlap, flat in the middle, > 0 everywhere."""
    i = np.arange(tile)
    ramp = np.minimum(np.minimum(i + 1, tile - i), overlap + 1).astype(np.float64)
    return ramp / (overlap + 1)


def tiled_score_fn(
    cond_score_fn: CondScoreFn, cond: Array | None, tile: int, overlap: int
) -> Callable[[Array, Array], Array]:
    """A score function on a whole (large) image from a network that takes ``tile x tile`` inputs.

    Every call crops the same overlapping tiles from ``x`` and ``cond``, evaluates
    them as one batch and blends the tile scores with linear-ramp windows
    normalised to sum to one at each pixel. An image of exactly ``tile x tile``
    is passed through untouched.

    Args:
      cond_score_fn: ``(x, t, cond) -> score`` for ``tile x tile`` images;
        ``cond`` is the tile's crop of the condition, or ``None``.
      cond: ``(B, H, W, Cc)`` conditioning image of the whole picture, or
        ``None`` for an unconditional model (the tiles then follow ``x``'s size).
      tile: the network's input size.
      overlap: pixels shared by neighbouring tiles (wider = smoother blending).

    Returns:
      ``score_fn(x, t)`` for ``x`` of shape ``(B, H, W, C)`` (``H, W >= tile``).

    Raises:
      ValueError: (when called, for ``cond=None``; at once otherwise) an image
        smaller than the tile or a bad overlap.
    """

    def geometry(height, width):
        tops, lefts = tile_offsets(height, tile, overlap), tile_offsets(width, tile, overlap)
        corners = [(r, c) for r in tops for c in lefts]
        window = np.outer(blend_window(tile, overlap), blend_window(tile, overlap))
        total = np.zeros((height, width))
        for r, c in corners:
            total[r : r + tile, c : c + tile] += window
        window = jnp.asarray(window, jnp.float32)[None, :, :, None]
        return corners, window, jnp.asarray(1.0 / total, jnp.float32)[None, :, :, None]

    def crops(image, corners):
        return jnp.concatenate([image[:, r : r + tile, c : c + tile] for r, c in corners], axis=0)

    def blend(x, scores, corners, window, norm):
        batch = x.shape[0]
        out = jnp.zeros_like(x)
        for k, (r, c) in enumerate(corners):
            out = out.at[:, r : r + tile, c : c + tile].add(window * scores[k * batch : (k + 1) * batch])
        return out * norm

    if cond is None:
        def score_fn(x: Array, t: Array) -> Array:
            corners, window, norm = geometry(*x.shape[1:3])
            if len(corners) == 1:
                return cond_score_fn(x, t, None)
            return blend(x, cond_score_fn(crops(x, corners), jnp.tile(t, len(corners)), None), corners, window, norm)

        return score_fn

    corners, window, norm = geometry(*cond.shape[1:3])
    if len(corners) == 1:
        return lambda x, t: cond_score_fn(x, t, cond)
    cond_tiles = crops(cond, corners)

    def score_fn(x: Array, t: Array) -> Array:
        scores = cond_score_fn(crops(x, corners), jnp.tile(t, len(corners)), cond_tiles)
        return blend(x, scores, corners, window, norm)

    return score_fn
