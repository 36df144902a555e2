"""Palette pipelines: training batches and restoration of input files for each task.

``prepare_batch`` degrades each clean row on the host with the row's own
generator (``row_rng``), so a batch does not depend on the host count:

* inpainting: a mask drawn from ``mask_kinds`` (free-form strokes, boxes, ...);
* uncropping: a half (``left`` / ``right`` / ``top`` / ``bottom``) or the
  four-sided border (``all``), drawn from ``directions``;
* colorization: the luma of the image;
* JPEG: Pillow's codec at a quality uniform in ``quality_range`` (5-30);
* multi-task: one of ``tasks`` per row.

``restore`` is the sampling side used by ``sample.py --input``.
"""

from __future__ import annotations

import numpy as np

from diffjax import degradations
from diffjax.pipelines.base import Pipeline, row_rng
from diffjax.tasks import palette as palette_lib

__all__ = [
    "PaletteInpainting",
    "PaletteUncropping",
    "PaletteColorization",
    "PaletteJPEG",
    "PaletteMultitask",
    "INPAINTING_MASKS",
    "UNCROP_DIRECTIONS",
    "MULTITASK_TASKS",
]

# Inpainting mask families by config name; each takes ((H, W), rng).
INPAINTING_MASKS = {
    "free_form": degradations.free_form_mask,
    "box": degradations.box_mask,
    "center_box": lambda shape, rng: degradations.center_box_mask(shape),
    "irregular": degradations.irregular_mask,
}
UNCROP_DIRECTIONS = ("left", "right", "top", "bottom", "all")
MULTITASK_TASKS = ("inpainting", "uncropping", "colorization", "jpeg")

# Streams of row_rng, so that the draws of one row do not overlap.
_MASK_STREAM, _NOISE_STREAM, _TASK_STREAM = 1, 2, 3


def _choices(name: str, given, valid) -> tuple[str, ...]:
    given = (given,) if isinstance(given, str) else tuple(given)
    bad = [g for g in given if g not in valid]
    if not given or bad:
        raise ValueError(f"{name} must be a non-empty list drawn from {sorted(valid)}, got {list(given)}")
    return given


def _check_quality_range(quality_range) -> tuple[int, int]:
    try:
        lo, hi = (int(q) for q in quality_range)
    except (TypeError, ValueError):
        raise ValueError(f"quality_range must be a pair (low, high), got {quality_range!r}") from None
    if not 1 <= lo <= hi <= 95:
        raise ValueError(f"quality_range must satisfy 1 <= low <= high <= 95, got ({lo}, {hi})")
    return lo, hi


class _Palette(Pipeline):
    """Shared mechanics: row-wise degradation, the loss mask, restoration."""

    #: Kinds of input files ``sample.py`` accepts (see :mod:`diffjax.pipelines.restoration`).
    input_kinds: tuple[str, ...] = ()
    hole_loss_only: bool = False
    #: Colorization outputs keep the input's luma exactly (``palette_lib.keep_luminance``).
    keep_luminance: bool = True

    def _degrade_row(self, image: np.ndarray, *, step: int, seed: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """One clean ``(H, W, C)`` row -> (condition, loss mask ``(H, W, 1)``)."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict, *, step: int, seed: int, rows: np.ndarray) -> dict:
        images = np.asarray(batch["image"], np.float32)
        conds, loss_masks = zip(*(self._degrade_row(img, step=step, seed=seed, row=int(r))
                                  for img, r in zip(images, rows)))
        out = dict(batch, cond=np.stack(conds).astype(np.float32))
        if self.uses_loss_mask:
            out["loss_mask"] = np.stack(loss_masks).astype(np.float32)
        return out

    @property
    def uses_loss_mask(self) -> bool:
        return self.hole_loss_only

    def _loss_mask(self, known: np.ndarray) -> np.ndarray:
        return (1.0 - known)[..., None] if self.hole_loss_only else np.ones(known.shape + (1,), np.float32)

    # -- sampling side ---------------------------------------------------------
    def condition(self, kind: str, images: np.ndarray, masks: np.ndarray | None, seed: int) -> np.ndarray:
        """The network's condition for a batch of inputs of ``kind`` (host, numpy).

        Args:
          kind: ``"inpainting"``, ``"colorization"`` or ``"jpeg"``.
          images: ``(B, H, W, C)`` inputs in [-1, 1]: known pixels, grayscale
            (``C = 1``) or decoded JPEGs.
          masks: ``(B, H, W)`` 1 = known, for ``inpainting``.
          seed: seeds the noise put in the hole.
        """
        raise NotImplementedError

    def restore(self, score_fn, sde, sampler, kind: str, shape, known, mask, key, denoise: bool):
        """Pure JAX: sample outputs of ``shape``; known pixels pasted back for inpainting.

        For colorization ``known`` is the grayscale input (or ``None``); with
        ``keep_luminance`` the output's luma is then exactly the input's.
        """
        if kind == "inpainting":
            return palette_lib.palette_restore(score_fn, sde, shape, key=key, sampler=sampler, known=known,
                                               mask=mask, denoise=denoise)[0]
        out = palette_lib.palette_restore(score_fn, sde, shape, key=key, sampler=sampler, denoise=denoise)[0]
        if kind == "colorization" and known is not None and self.keep_luminance:
            out = palette_lib.keep_luminance(out, known[..., :1])
        return out


def _noise_in_hole(image, known, rng) -> np.ndarray:
    noise = rng.standard_normal(image.shape).astype(np.float32)
    return palette_lib.inpainting_condition(image[None], known[None], noise[None])[0]


class _MaskedPalette(_Palette):
    input_kinds = ("inpainting",)

    def _draw_mask(self, shape, rng) -> np.ndarray:
        raise NotImplementedError

    def cond_channels(self, image_shape) -> int:
        return image_shape[-1] + 1

    def _degrade_row(self, image, *, step, seed, row):
        known = self._draw_mask(image.shape[:2], row_rng(seed, step, row, _MASK_STREAM))
        cond = _noise_in_hole(image, known, row_rng(seed, step, row, _NOISE_STREAM))
        return cond, self._loss_mask(known)

    def condition(self, kind, images, masks, seed):
        noise = np.random.default_rng(seed).standard_normal(images.shape).astype(np.float32)
        return palette_lib.inpainting_condition(images, masks, noise)


class PaletteInpainting(_MaskedPalette):
    """Inpainting: masks drawn from ``mask_kinds`` (see :data:`INPAINTING_MASKS`).

    Args:
      mask_kinds: mask families to draw from, uniformly per row.
      hole_loss_only: count the loss only in the hole (Palette's choice for
        inpainting); otherwise over the whole image.
    """

    name = "palette_inpainting"

    def __init__(self, mask_kinds=("free_form", "box"), hole_loss_only: bool = True):
        self.mask_kinds = _choices("mask_kinds", mask_kinds, INPAINTING_MASKS)
        self.hole_loss_only = bool(hole_loss_only)

    def _draw_mask(self, shape, rng):
        kind = self.mask_kinds[rng.integers(len(self.mask_kinds))]
        return INPAINTING_MASKS[kind](shape, rng)


class PaletteUncropping(_MaskedPalette):
    """Uncropping: extend a half in one direction or a border all round.

    Args:
      directions: drawn uniformly per row from :data:`UNCROP_DIRECTIONS`.
      hole_loss_only: count the loss only in the filled region.
    """

    name = "palette_uncropping"

    def __init__(self, directions=UNCROP_DIRECTIONS, hole_loss_only: bool = True):
        self.directions = _choices("directions", directions, UNCROP_DIRECTIONS)
        self.hole_loss_only = bool(hole_loss_only)

    def _draw_mask(self, shape, rng):
        return degradations.uncrop_mask(shape, self.directions[rng.integers(len(self.directions))])


class PaletteColorization(_Palette):
    """Colorization: the condition is the luma (one channel) of the RGB target.

    Args:
      keep_luminance: give outputs exactly the input's luma (default), changing only
        their colour (:func:`diffjax.tasks.palette.keep_luminance`).
    """

    name = "palette_colorization"
    input_kinds = ("colorization",)

    def __init__(self, keep_luminance: bool = True):
        self.keep_luminance = bool(keep_luminance)

    def cond_channels(self, image_shape) -> int:
        if image_shape[-1] != 3:
            raise ValueError(f"colorization needs an RGB dataset, got images of shape {tuple(image_shape)}")
        return 1

    def _degrade_row(self, image, *, step, seed, row):
        return palette_lib.colorization_condition(image[None])[0], None

    def condition(self, kind, images, masks, seed):
        return np.asarray(images, np.float32)  # the grayscale input is the condition


class PaletteJPEG(_Palette):
    """JPEG restoration: the condition is the image decoded from JPEG at a random quality.

    Args:
      quality_range: ``(low, high)``, qualities drawn uniformly (integers, both
        included); Palette trains on 5-30.
    """

    name = "palette_jpeg"
    input_kinds = ("jpeg",)

    def __init__(self, quality_range=(5, 30)):
        self.quality_range = _check_quality_range(quality_range)

    def cond_channels(self, image_shape) -> int:
        return image_shape[-1]

    def _degrade_row(self, image, *, step, seed, row):
        quality = row_rng(seed, step, row, _NOISE_STREAM).integers(self.quality_range[0], self.quality_range[1] + 1)
        return palette_lib.jpeg_condition(image[None], quality)[0], None

    def condition(self, kind, images, masks, seed):
        return np.asarray(images, np.float32)  # the decoded JPEG input is the condition


class PaletteMultitask(_Palette):
    """One model for several tasks; each row gets one of ``tasks`` uniformly.

    The condition is the degraded image in ``C`` channels plus a mask channel
    (ones for colorization and JPEG), so every task shares one input layout.

    Args:
      tasks: drawn from :data:`MULTITASK_TASKS`.
      mask_kinds: inpainting masks (see :class:`PaletteInpainting`).
      directions: uncropping directions (see :class:`PaletteUncropping`).
      quality_range: JPEG qualities (see :class:`PaletteJPEG`).
      hole_loss_only: for inpainting and uncropping rows, count the loss only in
        the hole (other rows count everywhere).
    """

    name = "palette_multitask"
    input_kinds = ("inpainting", "colorization", "jpeg")

    def __init__(self, tasks=MULTITASK_TASKS, mask_kinds=("free_form", "box"), directions=UNCROP_DIRECTIONS,
                 quality_range=(5, 30), hole_loss_only: bool = False):
        self.tasks = _choices("tasks", tasks, MULTITASK_TASKS)
        self.inpainting = PaletteInpainting(mask_kinds, hole_loss_only)
        self.uncropping = PaletteUncropping(directions, hole_loss_only)
        self.quality_range = _check_quality_range(quality_range)
        self.hole_loss_only = bool(hole_loss_only)

    def cond_channels(self, image_shape) -> int:
        if "colorization" in self.tasks and image_shape[-1] != 3:
            raise ValueError(f"colorization needs an RGB dataset, got images of shape {tuple(image_shape)}")
        return image_shape[-1] + 1

    def _degrade_row(self, image, *, step, seed, row):
        task = self.tasks[row_rng(seed, step, row, _TASK_STREAM).integers(len(self.tasks))]
        ones = np.ones(image.shape[:2], np.float32)
        if task in ("inpainting", "uncropping"):
            pipeline = self.inpainting if task == "inpainting" else self.uncropping
            return pipeline._degrade_row(image, step=step, seed=seed, row=row)
        if task == "colorization":
            cond = palette_lib.multitask_condition("colorization", image[None])[0]
        else:
            quality = row_rng(seed, step, row, _NOISE_STREAM).integers(self.quality_range[0],
                                                                       self.quality_range[1] + 1)
            cond = palette_lib.multitask_condition("jpeg", image[None], qualities=quality)[0]
        return cond, np.ones(ones.shape + (1,), np.float32)

    @property
    def uses_loss_mask(self) -> bool:
        """Always true: a batch mixes tasks, so every row carries a loss mask (ones outside inpainting)."""
        return True  # rows of mask tasks and of the others share one batch layout

    def condition(self, kind, images, masks, seed):
        if kind == "inpainting":
            noise = np.random.default_rng(seed).standard_normal(images.shape).astype(np.float32)
            return palette_lib.multitask_condition("inpainting", images, masks=masks, noise=noise)
        if kind == "colorization":
            return palette_lib.multitask_condition("colorization", images)
        return palette_lib.multitask_condition("jpeg", images)
