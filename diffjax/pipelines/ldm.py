"""Latent diffusion tasks: the diffusion model trains on a frozen autoencoder's latents (docs/ldm.md).

A latent pipeline holds the run's :class:`FirstStage` (the autoencoder named
by ``config.autoencoder.workdir``, restored and frozen: its parameters are
never part of the training state) and the latent scale. Each training batch
is encoded on the host side, before the train step: ``batch["image"]`` becomes
``scale_factor * z`` with ``z`` a draw from the encoder's posterior (per-row
noise from ``(seed, step, row)``), and the condition is built on the latent
grid:

* ``ldm`` (generation, class-conditional with ``data.use_labels``): no condition;
* ``ldm_sr``: the low-resolution image (antialiased bicubic, 8-bit, as SR3's),
  bicubically resized to the latent grid and concatenated to the latent;
* ``ldm_inpainting``: the encoded masked image (scaled like the latents) and
  the known-pixel mask average-pooled to the latent grid.

``scale_factor`` is the paper's ``scale_by_std``: ``1 / std`` of the latents of
the first training batch, measured once and stored in the run's
``latent.json`` (with the autoencoder it belongs to); a resumed run and
``sample.py`` read it back.
"""

from __future__ import annotations

import json
import os

import numpy as np

from diffjax import fingerprint, workdir_io

from diffjax.pipelines.base import Pipeline, row_rng

__all__ = ["FirstStage", "LatentPipeline", "LatentGenerate", "LatentSR", "LatentInpainting", "LATENT_FILE"]

#: The file of a latent run that records its scale factor and autoencoder.
LATENT_FILE = "latent.json"

_POSTERIOR_STREAM, _MASK_STREAM = 21, 22


class FirstStage:
    """A frozen autoencoder: its :class:`~diffjax.nn.AutoencoderConfig` and, once loaded, its parameters.

    Args:
      config: the autoencoder's config.
      workdir: its training run (absolute path); ``""`` for an autoencoder only
        declared by a config (its shapes build a network, nothing can be encoded).
      step: the checkpoint step restored.
      loader: ``() -> (graphdef, params, model_state)``, called on first use.
    """

    def __init__(self, config, workdir: str = "", step: int | None = None, loader=None):
        self.config, self.workdir, self.step, self._loader = config, workdir, step, loader
        self._loaded = None
        self._encode = None

    @property
    def trained(self) -> bool:
        """Whether this names a trained autoencoder run (else it is only declared)."""
        return bool(self.workdir) and self._loader is not None

    def load(self):
        """``(graphdef, params, model_state)`` of the autoencoder (restored once).

        Raises:
          ValueError: a declared autoencoder without a run.
        """
        if not self.trained:
            raise ValueError("no autoencoder run: set --config.autoencoder.workdir to a trained "
                             "autoencoder's workdir (python train.py --config configs/autoencoder_photos.py ...)")
        if self._loaded is None:
            self._loaded = self._loader()
        return self._loaded

    def describe(self) -> dict:
        """What identifies this autoencoder (stored in ``latent.json``)."""
        import dataclasses

        return {"workdir": self.workdir, "step": self.step, "config": dataclasses.asdict(self.config)}

    def encode(self, images: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Images ``(B, H, W, C)`` in ``[-1, 1]`` -> latents ``mean + exp(logvar / 2) * noise`` (numpy).

        Args:
          images: a batch at any size divisible by ``f``.
          noise: standard normal noise of the latent shape; ``None`` = the posterior mean.
        """
        import jax
        import jax.numpy as jnp

        from diffjax.training import model_from_state

        graphdef, params, state = self.load()
        if self._encode is None:
            def encode(params, x, noise):
                mean, logvar = model_from_state(graphdef, params, state).encode(x)
                return mean + jnp.exp(0.5 * logvar) * noise

            self._encode = jax.jit(encode)
        images = np.asarray(images, np.float32)
        shape = (len(images), *self.config.latent_shape(*images.shape[1:3]))
        noise = np.zeros(shape, np.float32) if noise is None else np.asarray(noise, np.float32)
        return np.asarray(self._encode(params, images, noise))

    def decoder(self, params):
        """The decoder with ``params`` (the autoencoder's parameters), for use inside a jitted program."""
        from diffjax.training import model_from_state

        graphdef, _, state = self.load()
        return model_from_state(graphdef, params, state).decode


class LatentPipeline(Pipeline):
    """What every latent task shares: the frozen first stage, the latent scale, encoded batches.

    ``builders.build_pipeline`` attaches the first stage (:meth:`attach`); the
    training run calls :meth:`prepare_run` before it writes anything and
    :meth:`write_run_files` with the run's other files.
    """

    name = "ldm"
    #: builders attaches the autoencoder of ``config.autoencoder`` to pipelines with this flag.
    needs_autoencoder = True

    def __init__(self):
        self.first_stage: FirstStage | None = None
        self.scale_factor: float | None = None

    def attach(self, first_stage: FirstStage) -> None:
        """Give the pipeline its (frozen) autoencoder."""
        self.first_stage = first_stage

    def _ae(self):
        if self.first_stage is None:
            raise ValueError(f"task {self.name!r} has no autoencoder attached (build it with builders.build_pipeline)")
        return self.first_stage.config

    def network_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int]:
        """The diffusion network's ``(image_size, in_channels)``: the latent grid of the data's images.

        Raises:
          ValueError: images the autoencoder cannot take (channels, a size not divisible by ``f``).
        """
        ae = self._ae()
        height, width, channels = image_shape
        if self.first_stage.trained and channels != ae.in_channels:  # a declared one takes the data's
            raise ValueError(f"the autoencoder takes {ae.in_channels}-channel images, the data has {channels}: "
                             "train the autoencoder on the same data")
        size, _, z = ae.latent_shape(height, width)
        return size, z

    # -- the latents -------------------------------------------------------------
    def latents(self, images: np.ndarray, *, step: int, seed: int, rows) -> np.ndarray:
        """Posterior draws of ``images`` (unscaled), the noise of row ``r`` from ``(seed, step, r)``."""
        shape = self._ae().latent_shape(*images.shape[1:3])
        noise = np.stack([row_rng(seed, step, row, _POSTERIOR_STREAM).standard_normal(shape) for row in rows])
        return self.first_stage.encode(images, noise.astype(np.float32))

    def measure_scale(self, images: np.ndarray, seed: int) -> float:
        """``scale_by_std``: ``1 / std`` of the latents of ``images`` (the first training batch).

        Raises:
          ValueError: latents with zero spread (an untrained or collapsed autoencoder).
        """
        from diffjax.tasks.latent import scale_by_std

        return scale_by_std(self.latents(images, step=0, seed=seed, rows=np.arange(len(images))))

    def prepare_run(self, workdir: str, dataset, training) -> None:
        """Before a run writes anything: check the autoencoder, read or measure the scale factor.

        A resumed run reads ``latent.json`` and refuses an autoencoder other than
        the one it started with; a new run measures the scale on its first batch.

        Raises:
          ValueError: no trained autoencoder, or another one than the run's.
        """
        if self.first_stage is None or not self.first_stage.trained:
            raise ValueError(f"task {self.name!r} trains on an autoencoder's latents: set "
                             "--config.autoencoder.workdir to a trained autoencoder run "
                             "(python train.py --config configs/autoencoder_photos.py --workdir AE)")
        self.network_shape(dataset.image_shape)
        stored = self._read(workdir)
        if stored is not None:
            fingerprint.check(workdir, "autoencoder", self.first_stage.workdir)  # same step, other weights too
            ours = self.first_stage.describe()
            if stored["autoencoder"] != json.loads(json.dumps(ours)):
                raise ValueError(f"{workdir} was trained on the autoencoder {stored['autoencoder']['workdir']} "
                                 f"(step {stored['autoencoder']['step']}); --config.autoencoder.workdir names "
                                 f"{ours['workdir']} (step {ours['step']}) with "
                                 f"{'the same' if stored['autoencoder']['config'] == ours['config'] else 'another'}"
                                 " architecture: use the run's own autoencoder or a new --workdir")
            self.scale_factor = float(stored["scale_factor"])
            return
        first = dataset.batch(0, training.batch_size, seed=training.seed)
        self.scale_factor = self.measure_scale(first["image"], training.seed)

    @staticmethod
    def _read(workdir: str) -> dict | None:
        path = os.path.join(workdir, LATENT_FILE)
        if not workdir_io.exists(path):
            return None
        return json.loads(workdir_io.read_text(path))

    def write_run_files(self, workdir: str) -> None:
        """Write ``latent.json``: the scale factor and the autoencoder it belongs to."""
        workdir_io.write_text(os.path.join(workdir, LATENT_FILE),
                              json.dumps({"scale_factor": self.scale_factor, "autoencoder": self.first_stage.describe()},
                                         indent=2))
        fingerprint.record(workdir, "autoencoder", self.first_stage.workdir)

    def load_run_files(self, workdir: str) -> None:
        """Read the scale factor of a trained latent run (``latent.json``).

        Raises:
          ValueError: a workdir without ``latent.json`` (not a latent run, or never trained).
        """
        stored = self._read(workdir)
        if stored is None:
            raise ValueError(f"{workdir} holds no {LATENT_FILE}: expected a trained latent-diffusion run")
        if self.first_stage is not None and self.first_stage.trained:  # refuse an autoencoder changed since
            fingerprint.check(workdir, "autoencoder", self.first_stage.workdir)
        self.scale_factor = float(stored["scale_factor"])

    # -- training batches -----------------------------------------------------------
    def condition(self, images: np.ndarray, *, step: int, seed: int, rows) -> np.ndarray | None:
        """The latent-grid condition of clean ``images`` (``None``: unconditional)."""
        return None

    def prepare_batch(self, batch: dict, *, step: int, seed: int, rows: np.ndarray) -> dict:
        if self.scale_factor is None:
            raise ValueError("the latent scale factor is not set: prepare_run (training) or load_run_files first")
        out = dict(batch)
        out["image"] = self.scale_factor * self.latents(batch["image"], step=step, seed=seed, rows=rows)
        cond = self.condition(batch["image"], step=step, seed=seed, rows=rows)
        if cond is not None:
            out["cond"] = cond.astype(np.float32)
        return out


class LatentGenerate(LatentPipeline):
    """Latent generation; class-conditional with ``config.data.use_labels`` (``sample.py --num`` per class)."""

    name = "ldm"


class LatentSR(LatentPipeline):
    """Latent super-resolution by ``scale``, conditioned by concatenating the low-resolution image.

    Args:
      scale: integer upsampling factor (the training size must be a multiple).
      tile_overlap: latent pixels shared by neighbouring tiles when an output's
        latent is larger than the network.
    """

    name = "ldm_sr"

    def __init__(self, scale: int = 4, tile_overlap: int = 4):
        super().__init__()
        from diffjax.pipelines.sr3 import SR3Pipeline

        self._sr3 = SR3Pipeline(scale=scale, tile_overlap=tile_overlap)  # its checks and low-res images
        self.scale, self.tile_overlap = scale, tile_overlap

    def cond_channels(self, image_shape) -> int:
        self._sr3.cond_channels(image_shape)
        return image_shape[-1]

    def low_res(self, images: np.ndarray) -> np.ndarray:
        """Clean targets -> the 8-bit antialiased-bicubic low-resolution images (SR3's)."""
        return self._sr3.low_res(images)

    def latent_condition(self, low: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray:
        """Low-resolution images -> the condition: bicubically resized to the latent grid."""
        from diffjax.tasks.sr3 import resize

        low = np.asarray(low, np.float32)
        if tuple(low.shape[1:3]) == tuple(latent_hw):
            return low
        return np.asarray(resize(low, *latent_hw), np.float32)

    def condition(self, images, *, step, seed, rows):
        hw = self._ae().latent_shape(*images.shape[1:3])[:2]
        return self.latent_condition(self.low_res(images), hw)


class LatentInpainting(LatentPipeline):
    """Latent inpainting, conditioned by the encoded masked image and the downsampled mask.

    Args:
      mask_kinds: mask families drawn per training row (Palette's, :data:`diffjax.pipelines.palette.INPAINTING_MASKS`).
    """

    name = "ldm_inpainting"
    input_kinds = ("inpainting",)

    def __init__(self, mask_kinds=("free_form", "box")):
        super().__init__()
        from diffjax.pipelines.palette import PaletteInpainting

        self._masks = PaletteInpainting(mask_kinds=mask_kinds)
        self.mask_kinds = self._masks.mask_kinds

    def cond_channels(self, image_shape) -> int:
        return self._ae().z_channels + 1

    def latent_condition(self, images: np.ndarray, known: np.ndarray) -> np.ndarray:
        """``(B, H, W, C)`` images and ``(B, H, W)`` known masks (1 = keep) -> ``(B, h, w, z + 1)``.

        The masked image (hole set to 0) is encoded (posterior mean, times the
        scale factor) and the mask average-pooled by ``f``.
        """
        f = self._ae().factor
        known = np.asarray(known, np.float32)
        masked = np.asarray(images, np.float32) * known[..., None]
        z = self.scale_factor * self.first_stage.encode(masked)
        b, h, w = known.shape
        pooled = known.reshape(b, h // f, f, w // f, f).mean(axis=(2, 4))
        return np.concatenate([z, pooled[..., None]], axis=-1)

    def condition(self, images, *, step, seed, rows):
        known = np.stack([self._masks._draw_mask(images.shape[1:3], row_rng(seed, step, row, _MASK_STREAM))
                          for row in rows]).astype(np.float32)
        return self.latent_condition(images, known)
