"""SR3's training pairs: target = the clean crop, condition = its bicubic round trip.

For each row the pipeline downsamples the target by ``scale`` (antialiased
bicubic), rounds it to 8 bits as a PNG would be, optionally corrupts it (blur,
Gaussian noise at a level the network is told: the conditioning augmentation
of cascaded models) and upsamples it back: ``batch["cond"]``, concatenated to
the network's noisy input.
"""

from __future__ import annotations

import numpy as np

from diffjax.pipelines.base import Pipeline, row_rng
from diffjax.tasks.cascade import gaussian_blur, noise_augment
from diffjax.tasks.sr3 import PROJECTIONS, downsample, quantize_uint8, upsample

__all__ = ["SR3Pipeline", "make_sr_fn", "read_low_res_folder", "low_res_size_problem"]

# Separate random streams per row, so turning one augmentation on does not
# change the draws of another.
_BLUR_STREAM, _NOISE_STREAM = 11, 12


class SR3Pipeline(Pipeline):
    """Super-resolution by ``scale`` with optional conditioning augmentation.

    Args:
      scale: integer upsampling factor; the training image size must be a multiple.
      noise_aug_max: > 0 draws a noise level ``s ~ U[0, noise_aug_max]`` per row,
        noises the low-resolution image with it and feeds ``s`` to the network
        (``batch["aug_level"]``); 0 = no noise augmentation (plain SR3).
      blur_prob: probability of blurring a row's low-resolution image.
      blur_sigma_min, blur_sigma_max: range of the blur's sigma (low-res pixels).
      tile_overlap: output pixels shared by neighbouring tiles when ``sample.py``
        super-resolves images larger than the network's input.
      clip_denoised: at sampling, clip the implied ``x0`` to ``[-1, 1]`` at every step.
      projection: low-frequency consistency with the input at sampling
        (:func:`diffjax.tasks.sr3.super_resolve`): ``"none"``, ``"end"`` or ``"each"``.
    """

    name = "sr3"

    def __init__(self, scale: int = 4, noise_aug_max: float = 0.0, blur_prob: float = 0.0,
                 blur_sigma_min: float = 0.4, blur_sigma_max: float = 0.6, tile_overlap: int = 8,
                 clip_denoised: bool = True, projection: str = "none"):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
            raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
        if not 0.0 <= noise_aug_max < 1.0:
            raise ValueError(f"noise_aug_max must lie in [0, 1), got {noise_aug_max}")
        if not 0.0 <= blur_prob <= 1.0:
            raise ValueError(f"blur_prob must lie in [0, 1], got {blur_prob}")
        if not 0.0 < blur_sigma_min <= blur_sigma_max:
            raise ValueError(f"need 0 < blur_sigma_min <= blur_sigma_max, got {blur_sigma_min}, {blur_sigma_max}")
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be an integer >= 0, got {tile_overlap!r}")
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.scale = scale
        self.projection = projection
        self.tile_overlap = tile_overlap
        self.clip_denoised = bool(clip_denoised)
        self.noise_aug_max = float(noise_aug_max)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = (float(blur_sigma_min), float(blur_sigma_max))

    @property
    def uses_aug_level(self) -> bool:
        """Whether the network takes the augmentation level as an input."""
        return self.noise_aug_max > 0

    def cond_channels(self, image_shape: tuple[int, int, int]) -> int:
        height, width, channels = image_shape
        if height % self.scale or width % self.scale:
            raise ValueError(f"SR by scale={self.scale} needs an image size divisible by it, got {height}x{width}")
        return channels

    def model_fields(self) -> dict:
        return {"aug_level_embedding": True} if self.uses_aug_level else {}

    def low_res(self, images: np.ndarray) -> np.ndarray:
        """Clean targets -> the 8-bit low-resolution images a user would hand in."""
        return quantize_uint8(np.clip(downsample(np.asarray(images, np.float32), self.scale), -1.0, 1.0))

    def prepare_batch(self, batch: dict, *, step: int, seed: int, rows: np.ndarray) -> dict:
        low = self.low_res(batch["image"])
        if self.blur_prob > 0:
            for i, row in enumerate(rows):
                rng = row_rng(seed, step, row, _BLUR_STREAM)
                blur, sigma = rng.random() < self.blur_prob, rng.uniform(*self.blur_sigma)
                if blur:
                    low[i : i + 1] = gaussian_blur(low[i : i + 1], sigma)
        out = dict(batch)
        if self.uses_aug_level:
            levels = np.empty(len(rows), np.float32)
            noise = np.empty_like(low)
            for i, row in enumerate(rows):
                rng = row_rng(seed, step, row, _NOISE_STREAM)
                levels[i] = rng.uniform(0.0, self.noise_aug_max)
                noise[i] = rng.standard_normal(low.shape[1:])
            low = noise_augment(low, levels, noise)
            out["aug_level"] = levels
        out["cond"] = upsample(low, self.scale).astype(np.float32)
        return out


# -- inference: sample.py --input IN --output OUT ------------------------------


def make_sr_fn(graphdef, model_state, sde, sampler, *, channels: int, tile: int, overlap: int,
               prediction: str = "eps", time_input: str = "alpha", denoise: bool = True,
               aug_level: float | None = None, clip_x0: bool = True, projection: str = "none"):
    """``sr(params, cond, key, low=None) -> images`` for a trained SR network (pure; jit it per input size).

    Args:
      graphdef, model_state: the network's structure and non-trainable variables.
      sde, sampler: the process it was trained under and the sampler to use.
      channels: output channels.
      tile: the network's input size (larger outputs are sampled as blended tiles).
      overlap: tile overlap in output pixels.
      prediction, time_input: how the network was trained.
      denoise: finish with a Tweedie step.
      aug_level: the conditioning-augmentation level fed to a network trained
        with augmentation; ``None`` for plain SR3.
      clip_x0: clip the implied ``x0`` at every step.
      projection: ``"none"``, ``"end"`` or ``"each"``: make the output agree with ``low``
        (:func:`diffjax.tasks.sr3.super_resolve`); the function then needs ``low``.

    Returns:
      The pure function; ``cond`` is the upsampled (and possibly augmented) low-res batch,
      ``low`` the low-res batch itself.
    """
    import jax.numpy as jnp

    from diffjax.tasks.sr3 import conditional_score_fn, super_resolve
    from diffjax.training import model_from_state

    def sr(params, cond, key, low=None):
        model = model_from_state(graphdef, params, model_state)

        def apply_fn(x, c, cond_tile):
            extra = {} if aug_level is None else {"aug_level": jnp.full(x.shape[:1], aug_level, jnp.float32)}
            return model(x, c, cond=cond_tile, **extra)

        score = conditional_score_fn(apply_fn, sde, prediction=prediction, time_input=time_input)
        return super_resolve(score, sde, cond, key=key, sampler=sampler, channels=channels, tile=tile,
                             overlap=overlap, denoise=denoise, clip_x0=clip_x0, low=low, projection=projection)

    return sr


def low_res_size_problem(hw: tuple[int, int], *, scale: int, tile: int) -> str | None:
    """What is wrong with a low-resolution input of size ``hw``, or ``None`` if it is large enough.

    Shared by ``sample.py --input`` (:func:`read_low_res_folder`) and
    :meth:`diffjax.Run.restore`: an input must be at least ``ceil(tile / scale)``
    pixels on each side, so that its output covers one network input.
    """
    smallest = -(-tile // scale)
    if min(hw) < smallest:
        return (f"{hw[0]}x{hw[1]} is too small; the model needs at least {smallest}x{smallest} "
                f"(output {tile}x{tile} at scale {scale})")
    return None


def read_low_res_folder(input_dir: str, *, channels: int, scale: int, tile: int) -> list[tuple[str, np.ndarray]]:
    """Read and check every PNG of a folder before any output is written.

    Args:
      input_dir: folder of low-resolution PNG files (nothing else).
      channels: channels the model takes (1 = grayscale, 3 = RGB).
      scale: the model's upsampling factor.
      tile: the model's output size; an input must be at least ``tile / scale``
        pixels on each side.

    Returns:
      ``[(file name, (h, w, channels) float32 in [-1, 1]), ...]`` sorted by name.

    Raises:
      ValueError: a missing or empty folder, a file that is not a PNG image, a
        wrong channel count or an image too small, naming every offending file.
    """
    import os

    from diffjax.image_io import normalise_mode, open_image

    if not os.path.isdir(input_dir):
        raise ValueError(f"--input {input_dir!r} is not a folder of low-resolution PNG images")
    names = sorted(n for n in os.listdir(input_dir) if not os.path.isdir(os.path.join(input_dir, n)))
    if not names:
        raise ValueError(f"--input {input_dir!r} holds no files; expected low-resolution PNG images")
    modes = {1: ("L",), 3: ("RGB",)}[channels] if channels in (1, 3) else ()
    images, problems = [], []
    for name in names:
        path = os.path.join(input_dir, name)
        try:
            img = open_image(path)
        except ValueError as err:
            problems.append(f"{name}: not an image ({str(err).split(': ', 1)[-1]})")
            continue
        fmt = img.format
        # 16-bit and float grey count as the 8-bit grey they are scaled to (diffjax.image_io).
        mode = "L" if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") else img.mode
        pixels = np.asarray(normalise_mode(img) if mode == "L" else img)
        if fmt != "PNG":
            problems.append(f"{name}: a {fmt} image; expected PNG")
        elif mode not in modes:
            problems.append(f"{name}: mode {mode} ({pixels.shape[-1] if pixels.ndim == 3 else 1} channels); "
                            f"the model takes {channels}-channel images ({' or '.join(modes) or 'none'})")
        elif pixels.dtype != np.uint8:
            problems.append(f"{name}: {pixels.dtype} pixels; expected 8-bit")
        elif (problem := low_res_size_problem(pixels.shape[:2], scale=scale, tile=tile)) is not None:
            problems.append(f"{name}: {problem}")
        else:
            pixels = pixels.reshape(*pixels.shape[:2], channels)
            images.append((name, pixels.astype(np.float32) / 127.5 - 1.0))
    if problems:
        raise ValueError(f"cannot super-resolve {input_dir!r} (nothing was written):\n  " + "\n  ".join(problems))
    return images
