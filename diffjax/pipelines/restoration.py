"""Restore a folder of images with a restoration pipeline (``sample.py --input``).

Input files, by the kinds a pipeline takes (its ``input_kinds``):

* ``inpainting`` (Palette inpainting / uncropping, RePaint): ``x.png`` with its
  mask ``x_mask.png`` of the same size, white (255) = fill, black (0) = keep;
* ``colorization``: a grayscale PNG (a colour PNG is refused);
* ``jpeg``: a ``.jpg`` / ``.jpeg`` file.

Every input is read and checked before any sampling starts, so bad input raises
``ValueError`` and leaves no output file behind; outputs are written only once
every image is restored, each through a temporary file and a rename.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import numpy as np

from diffjax.image_io import read_pixels
from diffjax.logging_utils import to_uint8
from diffjax.outputs import save_image
from diffjax.tiling import default_overlap, tiled_score_fn

__all__ = ["RestorationInput", "read_inputs", "make_input", "check_image_size", "check_fill_mask",
           "restore_inputs", "write_outputs", "MASK_SUFFIX"]

MASK_SUFFIX = "_mask.png"
JPEG_EXTENSIONS = (".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class RestorationInput:
    """One input file, checked and converted.

    Attributes:
      name: output file name (``stem.png``).
      kind: ``"inpainting"``, ``"colorization"`` or ``"jpeg"``.
      image: ``(H, W, C)`` float32 in [-1, 1]; ``C = 1`` for colorization.
      mask: ``(H, W)`` float32, 1 = known, 0 = fill (inpainting only).
    """

    name: str
    kind: str
    image: np.ndarray
    mask: np.ndarray | None = None


def _load(path: str) -> np.ndarray:
    # The one reader (diffjax.image_io): upright, 16-bit scaled, bombs refused.
    return read_pixels(path)


def _is_gray(array: np.ndarray) -> bool:
    return array.ndim == 2 or bool(np.all(array == array[..., :1]))


def _to_channels(array: np.ndarray, channels: int, path: str) -> np.ndarray:
    if array.ndim == 3 and _is_gray(array):
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], channels, axis=-1)
    elif channels == 1:
        raise ValueError(f"{path} is a colour image; this model takes grayscale images")
    return array.astype(np.float32) / 127.5 - 1.0


def check_image_size(hw: tuple[int, int], model_hw: tuple[int, int], name: str) -> None:
    """Refuse an image smaller than the model's input (larger ones are restored in tiles).

    Raises:
      ValueError: naming ``name``, its size and the smallest size the model takes.
    """
    if hw[0] < model_hw[0] or hw[1] < model_hw[1]:
        raise ValueError(f"{name} is {hw[1]}x{hw[0]} (WxH), smaller than the model's {model_hw[1]}x{model_hw[0]}; "
                         "it takes images at least that large (larger ones are restored in overlapping tiles)")


def check_fill_mask(fill: np.ndarray, name: str) -> np.ndarray:
    """A boolean fill mask (True = fill) -> the float mask a task takes (1 = known, 0 = fill).

    Raises:
      ValueError: an empty mask (nothing to fill) or a full one (no known pixel).
    """
    if not fill.any():
        raise ValueError(f"mask {name} is empty: there is nothing to fill")
    if fill.all():
        raise ValueError(f"mask {name} covers the whole image: there is no known pixel to keep")
    return (~fill).astype(np.float32)


def _read_mask(path: str, hw: tuple[int, int], image_path: str) -> np.ndarray:
    raw = _load(path)
    if raw.shape[:2] != hw:
        raise ValueError(
            f"mask {path} is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {image_path} is {hw[1]}x{hw[0]}"
        )
    if raw.ndim == 3:
        if not _is_gray(raw):
            raise ValueError(f"mask {path} must be black and white, got a colour image")
        raw = raw[..., 0]
    values = np.unique(raw)
    if not np.all(np.isin(values, [0, 255])):
        raise ValueError(f"mask {path} must be binary (0 = keep, 255 = fill), got values {values[:8].tolist()}")
    return check_fill_mask(raw == 255, path)


def make_input(name: str, kind: str, pixels: np.ndarray, known: np.ndarray | None,
               image_shape: tuple[int, int, int], where: str | None = None) -> RestorationInput:
    """Check one input image and convert it (shared by ``sample.py --input`` and :meth:`diffjax.Run.restore`).

    Args:
      name: output file name.
      kind: ``"inpainting"``, ``"colorization"`` or ``"jpeg"``.
      pixels: ``(H, W)`` or ``(H, W, C)`` values on the 0..255 scale (uint8
        from a file, or floats).
      known: for inpainting, the checked ``(H, W)`` mask, 1 = known (see
        :func:`check_fill_mask`); ``None`` otherwise.
      image_shape: the model's ``(H, W, C)``; the image must be at least as large.
      where: how to name the image in messages (default ``name``).

    Returns:
      The :class:`RestorationInput`.

    Raises:
      ValueError: an image smaller than the model, a colour image given to
        colorization or to a grayscale model.
    """
    where = where or name
    check_image_size(pixels.shape[:2], tuple(image_shape[:2]), where)
    if kind == "colorization":
        if not _is_gray(pixels):
            raise ValueError(f"{where} is a colour image; colorization takes grayscale images")
        return RestorationInput(name, kind, _to_channels(pixels, 1, where))
    return RestorationInput(name, kind, _to_channels(pixels, image_shape[2], where), known)


def read_inputs(input_dir: str, image_shape: tuple[int, int, int], kinds: tuple[str, ...]) -> list[RestorationInput]:
    """Read and check every input of ``input_dir``.

    Args:
      input_dir: the folder (``--input``).
      image_shape: the model's ``(H, W, C)``; inputs must be at least that
        high and wide (larger ones are restored in tiles) and each mask the
        size of its image.
      kinds: the kinds of input the run's task takes.

    Returns:
      The inputs in file-name order.

    Raises:
      ValueError: a missing folder, no inputs, a file the task does not take,
        a missing, mis-sized, non-binary, empty or full mask, an orphan mask,
        a colour image given to colorization, or an image smaller than the model.
    """
    if not os.path.isdir(input_dir):
        raise ValueError(f"--input {input_dir} is not a folder")
    names = sorted(n for n in os.listdir(input_dir) if not n.startswith("."))
    masks = {n for n in names if n.lower().endswith(MASK_SUFFIX)}
    images = [n for n in names if n not in masks and n.lower().endswith((".png",) + JPEG_EXTENSIONS)]
    if not images:
        raise ValueError(f"no input images (.png or .jpg) in {input_dir}; this task takes {_describe(kinds)}")
    hw = tuple(image_shape[:2])
    out, seen = [], {}
    for name in images:
        path = os.path.join(input_dir, name)
        stem, ext = os.path.splitext(name)
        mask_name = next((m for m in masks if m.lower() == f"{stem}{MASK_SUFFIX}".lower()), None)
        kind = _kind_of(ext.lower(), mask_name is not None, kinds, path)
        out_name = f"{stem}.png"
        if out_name in seen:
            raise ValueError(f"{seen[out_name]} and {name} would both be written to {out_name}; rename one")
        seen[out_name] = name
        raw = _load(path)
        check_image_size(raw.shape[:2], hw, path)
        known = _read_mask(os.path.join(input_dir, mask_name), raw.shape[:2], path) if kind == "inpainting" else None
        out.append(make_input(out_name, kind, raw, known, image_shape, where=path))
    used = {f"{os.path.splitext(i)[0]}{MASK_SUFFIX}".lower() for i in images}
    orphans = sorted(m for m in masks if m.lower() not in used)
    if orphans:
        raise ValueError(f"masks without an image in {input_dir}: {orphans} (expected x.png next to x_mask.png)")
    return out


def _describe(kinds) -> str:
    text = {"inpainting": "x.png with its mask x_mask.png (white = fill)",
            "colorization": "grayscale PNG images", "jpeg": ".jpg images"}
    return " or ".join(text[k] for k in kinds)


def _kind_of(ext: str, has_mask: bool, kinds, path: str) -> str:
    if ext in JPEG_EXTENSIONS:
        if "jpeg" not in kinds:
            raise ValueError(f"{path} is a JPEG file; this task takes {_describe(kinds)}")
        if has_mask:
            raise ValueError(f"{path} is a JPEG file with a mask; masks go with PNG images")
        return "jpeg"
    if has_mask:
        if "inpainting" not in kinds:
            raise ValueError(f"{path} comes with a mask; this task takes {_describe(kinds)}")
        return "inpainting"
    if "colorization" in kinds:
        return "colorization"
    if "inpainting" in kinds:
        stem = os.path.splitext(path)[0]
        raise ValueError(f"{path} has no mask {stem}{MASK_SUFFIX} (white = fill); this task needs one per image")
    raise ValueError(f"{path} is a PNG; this task takes {_describe(kinds)}")


def restore_inputs(
    pipeline,
    inputs: list[RestorationInput],
    *,
    make_score_fn: Callable,
    params,
    sde,
    sampler,
    image_shape: tuple[int, int, int],
    key,
    batch_size: int,
    denoise: bool = True,
    seed: int = 0,
    overlap: int | None = None,
    compiled: dict | None = None,
    progress: Callable | None = None,
) -> list[np.ndarray]:
    """Restore every input; one compiled program per input kind and size.

    Inputs larger than the model are restored whole, with the network's score
    evaluated on overlapping tiles and blended (:func:`diffjax.tiling.tiled_score_fn`);
    the condition is cut at the same tiles, and known pixels are pasted back
    (inpainting) on the whole image.

    Args:
      pipeline: the run's pipeline (``condition`` on the host, ``restore`` in JAX).
      inputs: from :func:`read_inputs` or :func:`make_input`.
      make_score_fn: ``make_score_fn(params, cond) -> score_fn(x, t)`` for
        model-sized inputs (``cond`` is ``None`` for an unconditional model).
      params: the network parameters, passed to the compiled program as an argument.
      sde, sampler: the run's process and sampler.
      image_shape: the model's ``(H, W, C)``; outputs have each input's height and width.
      key: base key; batch ``i`` of kind ``k`` uses ``fold_in(fold_in(key, k), i)``.
      batch_size: images per call; the last batch is padded (same shapes, one compile).
      denoise: finish with Tweedie's step.
      seed: seeds the host-side noise of inpainting conditions.
      overlap: tile overlap in pixels (default :func:`diffjax.tiling.default_overlap`).
      compiled: optional dict that keeps the compiled programs between calls
        (keyed by kind, batch shape, sampler, overlap and ``denoise``); pass the
        same dict only with the same ``pipeline``, ``make_score_fn`` and ``sde``.
      progress: optional callable, called once for each restored image.

    Returns:
      ``(H, W, C)`` float32 images in [-1, 1], in the order of ``inputs``.

    Raises:
      ValueError: ``batch_size < 1``, a bad overlap, or an input smaller than the model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tile = image_shape[0]
    overlap = default_overlap(tile) if overlap is None else overlap
    results: list[np.ndarray | None] = [None] * len(inputs)
    for k, kind in enumerate(("inpainting", "colorization", "jpeg")):
        b = 0  # batch counter of this kind (keys and condition seeds)
        sizes = sorted({inputs[i].image.shape[:2] for i, item in enumerate(inputs) if item.kind == kind})
        for hw in sizes:
            indices = [i for i, item in enumerate(inputs) if item.kind == kind and item.image.shape[:2] == hw]
            for i in indices:
                check_image_size(hw, tuple(image_shape[:2]), inputs[i].name)
            batch = min(batch_size, len(indices))
            shape = (batch, *hw, image_shape[2])

            def run(params, cond, known, mask, key, kind=kind, shape=shape):
                def cond_score_fn(x, t, c):
                    return make_score_fn(params, c)(x, t)

                score_fn, key = pipeline.bind_condition(
                    lambda c: tiled_score_fn(cond_score_fn, c, tile, overlap), cond, sde, sampler, key)
                return pipeline.restore(score_fn, sde, sampler, kind, shape, known, mask, key, denoise)

            cache_key = ("restore", kind, shape, sampler, overlap, denoise)
            cache = {} if compiled is None else compiled
            if cache_key not in cache:
                cache[cache_key] = jax.jit(run)
            run = cache[cache_key]
            for start in range(0, len(indices), batch):
                chunk = indices[start : start + batch]
                padded = chunk + [chunk[-1]] * (batch - len(chunk))
                images = np.stack([inputs[i].image for i in padded])
                masks = np.stack([inputs[i].mask for i in padded]) if kind == "inpainting" else None
                cond = pipeline.condition(kind, images, masks, seed + b)
                known = images if kind in ("inpainting", "colorization") else None  # colorization: the luma to keep
                mask = masks[..., None] if masks is not None else None
                out = np.asarray(run(params, cond, known, mask, jax.random.fold_in(jax.random.fold_in(key, k), b)))
                for i, img in zip(chunk, out):
                    results[i] = img
                    if progress is not None:
                        progress(i)
                b += 1
    return results


def write_outputs(output: str, inputs: list[RestorationInput], images: list[np.ndarray]) -> list[str]:
    """Write each restored image as ``output/<name>`` (PNG), atomically; returns the paths."""
    return [save_image(os.path.join(output, item.name), to_uint8(image)) for item, image in zip(inputs, images)]

