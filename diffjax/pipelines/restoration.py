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
from PIL import Image

from diffjax.logging_utils import to_uint8

__all__ = ["RestorationInput", "read_inputs", "restore_inputs", "write_outputs", "MASK_SUFFIX"]

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
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P", "I", "I;16", "F", "1", "CMYK", "YCbCr"):
                img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
            return np.asarray(img)
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


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


def _check_size(array: np.ndarray, hw: tuple[int, int], path: str) -> None:
    if array.shape[:2] != hw:
        raise ValueError(f"{path} is {array.shape[1]}x{array.shape[0]} (WxH); the model takes {hw[1]}x{hw[0]} images")


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
    fill = raw == 255
    if not fill.any():
        raise ValueError(f"mask {path} is empty (all black): there is nothing to fill")
    if fill.all():
        raise ValueError(f"mask {path} covers the whole image (all white): there is no known pixel to keep")
    return (~fill).astype(np.float32)


def read_inputs(input_dir: str, image_shape: tuple[int, int, int], kinds: tuple[str, ...]) -> list[RestorationInput]:
    """Read and check every input of ``input_dir``.

    Args:
      input_dir: the folder (``--input``).
      image_shape: the model's ``(H, W, C)``; inputs must have its height and width.
      kinds: the kinds of input the run's task takes.

    Returns:
      The inputs in file-name order.

    Raises:
      ValueError: a missing folder, no inputs, a file the task does not take,
        a missing, mis-sized, non-binary, empty or full mask, an orphan mask,
        a colour image given to colorization, or a mis-sized image.
    """
    if not os.path.isdir(input_dir):
        raise ValueError(f"--input {input_dir} is not a folder")
    names = sorted(n for n in os.listdir(input_dir) if not n.startswith("."))
    masks = {n for n in names if n.lower().endswith(MASK_SUFFIX)}
    images = [n for n in names if n not in masks and n.lower().endswith((".png",) + JPEG_EXTENSIONS)]
    if not images:
        raise ValueError(f"no input images (.png or .jpg) in {input_dir}; this task takes {_describe(kinds)}")
    hw, channels = tuple(image_shape[:2]), image_shape[2]
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
        _check_size(raw, hw, path)
        if kind == "colorization":
            if not _is_gray(raw):
                raise ValueError(f"{path} is a colour image; colorization takes grayscale images")
            out.append(RestorationInput(out_name, kind, _to_channels(raw, 1, path)))
        elif kind == "jpeg":
            out.append(RestorationInput(out_name, kind, _to_channels(raw, channels, path)))
        else:
            mask = _read_mask(os.path.join(input_dir, mask_name), hw, path)
            out.append(RestorationInput(out_name, kind, _to_channels(raw, channels, path), mask))
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
) -> list[np.ndarray]:
    """Restore every input; one compiled program per input kind.

    Args:
      pipeline: the run's pipeline (``condition`` on the host, ``restore`` in JAX).
      inputs: from :func:`read_inputs`.
      make_score_fn: ``make_score_fn(params, cond) -> score_fn(x, t)`` (``cond``
        is ``None`` for an unconditional model).
      params: the network parameters, passed to the compiled program as an argument.
      sde, sampler: the run's process and sampler.
      image_shape: the model's output ``(H, W, C)``.
      key: base key; batch ``i`` of kind ``k`` uses ``fold_in(fold_in(key, k), i)``.
      batch_size: images per call; the last batch is padded (same shapes, one compile).
      denoise: finish with Tweedie's step.
      seed: seeds the host-side noise of inpainting conditions.

    Returns:
      ``(H, W, C)`` float32 images in [-1, 1], in the order of ``inputs``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[np.ndarray | None] = [None] * len(inputs)
    for k, kind in enumerate(("inpainting", "colorization", "jpeg")):
        indices = [i for i, item in enumerate(inputs) if item.kind == kind]
        if not indices:
            continue
        batch = min(batch_size, len(indices))
        shape = (batch, *image_shape)

        def run(params, cond, known, mask, key, kind=kind, shape=shape):
            score_fn = make_score_fn(params, cond)
            return pipeline.restore(score_fn, sde, sampler, kind, shape, known, mask, key, denoise)

        run = jax.jit(run)
        for b, start in enumerate(range(0, len(indices), batch)):
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
    return results


def write_outputs(output: str, inputs: list[RestorationInput], images: list[np.ndarray]) -> list[str]:
    """Write each restored image as ``output/<name>`` (PNG), atomically; returns the paths."""
    os.makedirs(output, exist_ok=True)
    paths = []
    for item, image in zip(inputs, images):
        path = os.path.join(output, item.name)
        tmp = os.path.join(output, f".{item.name}.tmp.png")
        img = to_uint8(image)
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths

