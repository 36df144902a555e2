"""Conditional diffusers folders as :class:`diffjax.Run` s: ``LDMPipeline``, ``LDMSuperResolutionPipeline``, ADM SR.

A pipeline folder (``model_index.json`` with ``unet/``, ``scheduler/`` and a first
stage in ``vqvae/`` or ``vae/``) is read without PyTorch: the UNet by
:func:`~diffjax.interop.diffusers_weights.unet_from_diffusers`, the first stage by
:func:`~diffjax.nn.diffusers_vae.vae_from_pretrained`, the scheduler by
:func:`~diffjax.interop.diffusers_schedulers.schedule_from_diffusers`. The run
then computes what the pipeline's ``__call__`` computes:

* ``LDMPipeline`` (e.g. ``CompVis/ldm-celebahq-256``): ``x_T ~ N(0, I)`` in the
  latent space, the scheduler's loop (DDIM, 50 steps, ``eta`` 0 by default), then
  ``first_stage.decode(latents / scaling_factor)`` (VQ: quantised first) and
  ``(image / 2 + 0.5).clamp(0, 1)``;
* ``LDMSuperResolutionPipeline`` (``CompVis/ldm-super-resolution-4x-openimages``):
  latents as large as the low-resolution image, which (in ``[-1, 1]``) is
  concatenated after them along the channels at every step (the UNet has
  ``in_channels = 2 x 3``); the loop (DDIM, 100 steps, ``eta`` 0); then
  ``first_stage.decode(latents)`` without scaling, clamped to ``[-1, 1]``.

A guided-diffusion super-resolution model written by
:func:`~diffjax.interop.guided_diffusion.convert_adm_checkpoint` (its
``adm_flags.json`` has ``large_size``) loads as an :class:`AdmSuperResRun`:
the low-resolution image upsampled bilinearly and concatenated after ``x_t``.
:func:`load_folder_run` picks the kind; ``dj.load_run`` calls it.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.interop.diffusers_run import DiffusersRun, load_diffusers_run, read_diffusers_folder
from diffjax.interop.diffusers_schedulers import schedule_from_diffusers
from diffjax.interop.diffusers_weights import read_safetensors, unet_from_diffusers
from diffjax.nn.diffusers_vae import VQModel, vae_from_pretrained
from diffjax.parametrization import model_score_fn
from diffjax.samplers import sample
from diffjax.typing import Array

__all__ = ["LATENT_PIPELINES", "LatentDiffusersRun", "AdmSuperResRun", "is_latent_pipeline", "load_latent_run",
           "load_folder_run", "adm_super_res_flags", "super_resolve_folder"]

#: pipeline class -> default number of inference steps (its ``__call__`` default)
LATENT_PIPELINES = {"LDMPipeline": 50, "LDMSuperResolutionPipeline": 100}
_SR = "LDMSuperResolutionPipeline"


def _index(path) -> dict | None:
    index = os.path.join(os.fspath(path), "model_index.json")
    if not os.path.isfile(index):
        return None
    with open(index) as f:
        return json.load(f)


def is_latent_pipeline(path) -> bool:
    """True for a folder whose ``model_index.json`` names ``LDMPipeline`` or ``LDMSuperResolutionPipeline``."""
    index = _index(path)
    return index is not None and index.get("_class_name") in LATENT_PIPELINES


class LatentDiffusersRun(DiffusersRun):
    """A diffusers latent diffusion pipeline as a run (build with :func:`load_latent_run`).

    Attributes:
      pipeline: ``"LDMPipeline"`` (generates) or ``"LDMSuperResolutionPipeline"`` (restores, 4x for the published model).
      first_stage: the :class:`~diffjax.nn.diffusers_vae.VQModel` / ``AutoencoderKL``.
      latent_shape: ``(h, w, c)`` of the latents ``LDMPipeline`` samples (``h, w`` follow the input for SR).
      image_shape: ``(H, W, 3)`` of the images ``generate`` returns.
      sde, sampler, score_fn: the latent process, the pipeline's loop, and the latent score
        (``score_fn(z, t, cond=low_res)`` for super-resolution, ``low_res`` in ``[-1, 1]``).
    """

    def __init__(self, workdir: str, unet_config: dict, model, schedule, scheduler_config: dict, first_stage,
                 pipeline: str):
        super().__init__(workdir, unet_config, model, schedule, scheduler_config)
        self.pipeline, self.first_stage = pipeline, first_stage
        self.task = "super_resolution" if pipeline == _SR else "generate"
        self._stage_graphdef, self._stage_state = nnx.split(first_stage)
        cin = int(model.config_dict["in_channels"])
        # LDMSuperResolutionPipeline samples in_channels // 2 latent channels and appends the image.
        self.latent_channels = cin // 2 if pipeline == _SR else cin
        stage_latents = int(first_stage.config["latent_channels"])
        if self.latent_channels != stage_latents or (pipeline == _SR and cin - self.latent_channels != 3):
            raise ValueError(f"{workdir}: the UNet's in_channels {cin} do not fit {pipeline} with a first stage of "
                             f"{stage_latents} latent channels (expected {stage_latents}"
                             f"{' + 3 image channels' if pipeline == _SR else ''})")
        size = self.image_shape[0]
        self.latent_shape = (size, size, self.latent_channels)
        self.image_shape = (size * first_stage.factor, size * first_stage.factor, 3)
        self.scale = first_stage.factor  # super-resolution: output / input size

    @property
    def capabilities(self) -> tuple[str, ...]:
        """``generate`` (LDMPipeline) or ``restore`` (super-resolution), ``encode``, ``decode``, score_fn, sde, sampler."""
        task = "restore" if self.pipeline == _SR else "generate"
        return (task, "encode", "decode", "score_fn", "sde", "sampler")

    def __repr__(self) -> str:
        return (f"LatentDiffusersRun(workdir={self.workdir!r}, pipeline={self.pipeline}, "
                f"latent_shape={self.latent_shape}, sampler={self.sampler})")

    def _net(self, params, labels=None, cond=None):
        return _concat_net(self, params, labels, cond, self.latent_channels)

    @property
    def score_fn(self):
        """``score_fn(z, t, *, cond=None)``: latents ``(B, h, w, c)``; ``cond`` the ``[-1, 1]`` low-res image (SR)."""
        def score_fn(z, t, *, cond=None, labels=None):
            if (cond is None) == (self.pipeline == _SR):
                raise ValueError(f"{self.pipeline}: cond= is " + (
                    "required (the low-resolution image in [-1, 1], shaped like the latents' height and width)"
                    if self.pipeline == _SR else "not taken (unconditional)"))
            return self._net(self.params, labels, cond)(z, t)

        return score_fn

    def _stage(self, state):
        return nnx.merge(self._stage_graphdef, state)

    def _decode_fn(self, state, z):
        """The pipeline's last lines: LDMPipeline unscales before decoding, the SR pipeline does not."""
        stage = self._stage(state)
        image = stage.decode_latents(z) if self.pipeline != _SR else stage.decode(z)
        return jnp.clip(image, -1.0, 1.0) / 2 + 0.5

    def generate(self, n: int, *, key=None, sampler=None, labels=None, batch_size: int = 16) -> np.ndarray:
        """``n`` images of ``LDMPipeline``: latents from ``N(0, I)``, the pipeline's loop, then the decoder.

        Batch ``b`` draws its latents from ``fold_in(key, b)`` and samples with ``fold_in(key, b + 2^20)``.

        Returns:
          ``(n, H, W, 3)`` float32 numpy in ``[0, 1]``.
        """
        self._require("generate")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        sampler, key = sampler or self.sampler, self._key(key)

        def run(params, state, z, k):
            return self._decode_fn(state, sample(self._net(params), self.sde, z, key=k, sampler=sampler)[0])

        fn = self._jit(("generate", sampler), run)
        out = []
        for b, start in enumerate(range(0, n, batch_size)):
            z = self.sde.prior_sample(jax.random.fold_in(key, b), (min(batch_size, n - start), *self.latent_shape))
            out.append(np.asarray(fn(self.params, self._stage_state, z, jax.random.fold_in(key, b + (1 << 20)))))
        return np.concatenate(out).astype(np.float32)

    def _check_size(self, h: int, w: int, multiple: int, what: str):
        if h % multiple or w % multiple:
            raise ValueError(f"{what} height and width must be multiples of {multiple}, got {h}x{w}")

    def restore(self, images, masks=None, *, key=None, sampler=None, kind: str | None = None) -> np.ndarray:
        """``LDMSuperResolutionPipeline``: upscale low-resolution images by the first stage's factor.

        Args:
          images: ``(N, h, w, 3)`` or ``(h, w, 3)``, uint8 or floats in ``[0, 1]``; ``h, w`` multiples of
            ``2^(levels - 1)`` of the UNet (8 for the published model; its pipeline resizes PIL inputs to
            multiples of 32).
          masks: must be None (this run super-resolves).
          key: latents from ``fold_in(key, 0)``, the loop's noise (``eta > 0``) from ``fold_in(key, 1)``.
          sampler: another sampler for the latent chain (default: the pipeline's loop).
          kind: ``None`` or ``"super-resolution"``.

        Returns:
          ``(N, factor h, factor w, 3)`` (or one image) float32 numpy in ``[0, 1]``.
        """
        self._require("restore")
        if kind not in (None, "super-resolution"):
            raise ValueError(f"this run restores by super-resolution only (kind=None or 'super-resolution'), got {kind!r}")
        if masks is not None:
            raise ValueError("LDMSuperResolutionPipeline takes no masks: it super-resolves whole images")
        low, single = _images(images, "images")
        self._check_size(low.shape[1], low.shape[2], 2 ** (len(self.model.config_dict["block_out_channels"]) - 1),
                         "low-resolution images'")
        sampler, key = sampler or self.sampler, self._key(key)

        def run(params, state, low, k):
            z = self.sde.prior_sample(jax.random.fold_in(k, 0), (*low.shape[:3], self.latent_channels))
            z = sample(self._net(params, cond=low), self.sde, z, key=jax.random.fold_in(k, 1), sampler=sampler)[0]
            return self._decode_fn(state, z)

        fn = self._jit(("restore", sampler), run)
        out = np.asarray(fn(self.params, self._stage_state, jnp.asarray(low), key)).astype(np.float32)
        return out[0] if single else out

    def translate(self, images, **kwargs):
        """Not available: a latent pipeline run generates (LDMPipeline) or super-resolves."""
        self._require("translate")

    def encode(self, images) -> np.ndarray:
        """Images (``[0, 1]`` or uint8, NHWC) -> the latents the pipeline's UNet works on.

        ``LDMPipeline``: ``first_stage.encode_latents`` (times ``scaling_factor``; an ``AutoencoderKL``
        gives its posterior mean). Super-resolution: the first stage's unscaled latents, as that
        pipeline decodes them. VQ latents are returned before quantising (``decode`` quantises).
        """
        x, _ = _images(images, "images")
        self._check_size(x.shape[1], x.shape[2], self.first_stage.factor, "images'")

        def run(state, x):
            stage = self._stage(state)
            if self.pipeline != _SR:
                return stage.encode_latents(x)
            return stage.encode(x) if isinstance(stage, VQModel) else stage.encode(x)[0]

        return np.asarray(self._jit(("encode",), run)(self._stage_state, jnp.asarray(x)))

    def decode(self, latents) -> np.ndarray:
        """Latents ``(N, h, w, c)`` -> images in ``[0, 1]`` exactly as the pipeline's last lines decode them."""
        z = np.asarray(latents, np.float32)
        if z.ndim != 4 or z.shape[-1] != self.latent_channels:
            raise ValueError(f"latents must be (N, h, w, {self.latent_channels}), got shape {z.shape}")
        return np.asarray(self._jit(("decode",), self._decode_fn)(self._stage_state, jnp.asarray(z)))


def _images(images, what: str):
    """``(N, H, W, 3)`` or one ``(H, W, 3)`` image, uint8 or ``[0, 1]`` floats -> ``[-1, 1]`` float32, single."""
    x = np.asarray(images)
    single = x.ndim == 3
    x = x[None] if single else x
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim != 4 or x.shape[-1] != 3 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be (N, H, W, 3) or one (H, W, 3) image, uint8 or floats in [0, 1]; "
                         f"got shape {np.asarray(images).shape}, dtype {np.asarray(images).dtype}")
    return x.astype(np.float32) * 2 - 1, single


def _concat_net(run: DiffusersRun, params, labels, cond, channels: int):
    """The run's score network with ``cond`` appended to its input along the channels (if given)."""
    model = nnx.merge(run._graphdef, params)

    def apply(x, c):
        inp = x if cond is None else jnp.concatenate([x, jnp.asarray(cond, x.dtype)], axis=-1)
        return model(inp, c, labels=labels)[..., :channels]  # the first half of a learned-variance output

    return model_score_fn(apply, run.sde, prediction=run.prediction, time_input=run.time_input)


class AdmSuperResRun(DiffusersRun):
    """A guided-diffusion super-resolution model (a ``convert_adm_checkpoint`` folder whose flags have ``large_size``).

    As ADM's ``SuperResModel``: the low-resolution image is upsampled bilinearly (half-pixel centres,
    PyTorch's ``align_corners=False``) to the output size and concatenated after ``x_t``. The loop is
    the folder's DDPM chain (:attr:`sampler`, fixed posterior variance: ADM's learned variance is
    ``guided_diffusion.adm_ancestral_step``, not used here) or any ``sampler=``.
    """

    def __init__(self, workdir, unet_config, model, schedule, scheduler_config, flags: dict):
        super().__init__(workdir, unet_config, model, schedule, scheduler_config)
        self.task, self.flags = "super_resolution", flags
        self.scale = int(flags["large_size"]) // int(flags["small_size"])
        self.image_shape = (int(flags["large_size"]), int(flags["large_size"]), 3)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """``restore`` (super-resolution by ``scale``), score_fn, sde, sampler."""
        return ("restore", "score_fn", "sde", "sampler")

    def _net(self, params, labels=None, cond=None):
        return _concat_net(self, params, labels, cond, 3)

    def upsample(self, low: Array) -> Array:
        """``(N, h, w, 3)`` in ``[-1, 1]`` -> ``(N, scale h, scale w, 3)``, bilinear as ``F.interpolate``."""
        n, h, w, c = low.shape
        return jax.image.resize(low, (n, h * self.scale, w * self.scale, c), "bilinear", antialias=False)

    @property
    def score_fn(self):
        """``score_fn(x, t, *, cond, labels=None)``: ``cond`` the low-resolution image, ``[-1, 1]``, upsampled here."""
        return lambda x, t, *, cond, labels=None: self._net(self.params, labels, self.upsample(cond))(x, t)

    def generate(self, *args, **kwargs):
        """Not available: this model super-resolves (``restore``)."""
        self._require("generate")

    def translate(self, *args, **kwargs):
        """Not available: this model super-resolves (``restore``)."""
        self._require("translate")

    def restore(self, images, masks=None, *, key=None, sampler=None, kind: str | None = None,
                labels=None) -> np.ndarray:
        """Upscale ``(N, h, w, 3)`` (or one ``(h, w, 3)``) images in ``[0, 1]`` / uint8 by ``scale``.

        Args:
          images: low-resolution images; ``scale h, scale w`` must suit the UNet (multiples of ``2^(levels-1)``).
          masks: must be None.
          key: ``x_T`` from ``fold_in(key, 0)``, the loop's noise from ``fold_in(key, 1)``.
          sampler: default the folder's chain.
          kind: None or ``"super-resolution"``.
          labels: ``(N,)`` ImageNet classes for class-conditional models (the released 64 -> 256 one).

        Returns:
          float32 numpy in ``[0, 1]``, ``scale`` times larger.
        """
        if kind not in (None, "super-resolution") or masks is not None:
            raise ValueError("this run restores by super-resolution only: kind=None or 'super-resolution', no masks")
        x = np.asarray(images)
        single = x.ndim == 3
        low, _ = _images(x[None] if single else x, "images")
        multiple = 2 ** (len(self.model.config_dict["block_out_channels"]) - 1)
        n, h, w, _ = low.shape
        if (h * self.scale) % multiple or (w * self.scale) % multiple:
            raise ValueError(f"{self.scale} x the low-resolution size {h}x{w} must be a multiple of {multiple}")
        if (labels is None) != (self.class_embedding_free()):
            raise ValueError("this model is class-conditional: pass labels=" if labels is None
                             else "this model is not class-conditional: labels= must be None")
        sampler, key = sampler or self.sampler, self._key(key)

        def run(params, low, k, labels):
            x = self.sde.prior_sample(jax.random.fold_in(k, 0), (n, h * self.scale, w * self.scale, 3))
            net = self._net(params, labels, self.upsample(low))
            return sample(net, self.sde, x, key=jax.random.fold_in(k, 1), sampler=sampler)[0]

        fn = self._jit(("restore", sampler, labels is None), run)
        lab = None if labels is None else jnp.asarray(np.asarray(labels, np.int32))
        out = self._unit(fn(self.params, jnp.asarray(low), key, lab))
        return out[0] if single else out

    def class_embedding_free(self) -> bool:
        """True when the network takes no class labels."""
        return self.model.class_embedding is None


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"expected {path}")
    with open(path) as f:
        return json.load(f)


def adm_super_res_flags(path) -> dict | None:
    """The ADM flags of a ``convert_adm_checkpoint`` folder of a super-resolution model, else None."""
    flags = os.path.join(os.fspath(path), "adm_flags.json")
    if not os.path.isfile(flags):
        return None
    with open(flags) as f:
        parsed = json.load(f)
    return parsed if int(parsed.get("large_size") or 0) > 0 else None


def load_folder_run(path: str):
    """``dj.load_run`` on a diffusers folder: latent pipelines, ADM super-resolution folders, else a DiffusersRun."""
    if is_latent_pipeline(path):
        return load_latent_run(path)
    flags = adm_super_res_flags(path)
    if flags is None:
        return load_diffusers_run(path)
    unet_config, state, scheduler, pipeline = read_diffusers_folder(path)
    return AdmSuperResRun(os.fspath(path), unet_config, unet_from_diffusers(unet_config, state),
                          schedule_from_diffusers(scheduler, pipeline), scheduler, flags)


def load_latent_run(path: str, *, steps: int | None = None, eta: float = 0.0) -> LatentDiffusersRun:
    """Read an ``LDMPipeline`` / ``LDMSuperResolutionPipeline`` folder as a :class:`LatentDiffusersRun`.

    Args:
      path: the folder (``model_index.json``, ``unet/``, ``scheduler/``, and ``vqvae/`` or ``vae/``).
      steps: sampling steps (default: the pipeline's, 50 for LDMPipeline and 100 for super-resolution).
      eta: DDIM's ``eta`` (the pipelines' default 0; the SR model card uses 1).

    Raises:
      ValueError: another pipeline, a missing component, a scheduler other than DDIM / DDPM, an
        unsupported UNet or first-stage option, or weights that do not fit.
    """
    path = os.fspath(path)
    index = _index(path) or {}
    pipeline = index.get("_class_name")
    if pipeline not in LATENT_PIPELINES:
        raise ValueError(f"{path}: expected a model_index.json naming one of {sorted(LATENT_PIPELINES)}, "
                         f"got {pipeline!r}")
    stage = next((name for name in ("vqvae", "vae") if name in index), None)
    if stage is None:
        raise ValueError(f"{path}: {pipeline} needs a first stage (a 'vqvae' or 'vae' entry in model_index.json)")
    scheduler = _read_json(os.path.join(path, "scheduler", "scheduler_config.json"))
    # Both pipelines call scheduler.step(..., eta=eta): a DDIMScheduler runs DDIM, a DDPMScheduler its chain.
    kind = {"DDIMScheduler": "DDIMPipeline", "DDPMScheduler": "DDPMPipeline"}.get(scheduler.get("_class_name"))
    if kind is None:
        raise ValueError(f"{path}: scheduler {scheduler.get('_class_name')!r} is not supported for {pipeline}; "
                         "expected DDIMScheduler (the published LDM folders) or DDPMScheduler")
    schedule = schedule_from_diffusers(scheduler, kind, steps=steps or LATENT_PIPELINES[pipeline], eta=eta)
    unet_dir = os.path.join(path, "unet")
    weights = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError(f"{unet_dir}: no diffusion_pytorch_model.safetensors (diffjax never unpickles .bin files: "
                         "convert them once with diffusers' save_pretrained(..., safe_serialization=True))")
    unet_config = _read_json(os.path.join(unet_dir, "config.json"))
    model = unet_from_diffusers(unet_config, read_safetensors(weights))
    return LatentDiffusersRun(path, unet_config, model, schedule, scheduler,
                              vae_from_pretrained(os.path.join(path, stage)), pipeline)


def super_resolve_folder(run, input_dir: str, output: str, *, seed: int = 0) -> dict:
    """``sample.py --workdir SR_FOLDER --input IN --output OUT``: every image of ``input_dir`` upscaled into ``output``.

    Every file is read and checked before anything is sampled; image ``i`` is restored with
    ``fold_in(key(seed), i)``; outputs keep the input's file name.

    Returns:
      ``{"output": folder, "num": images written}``.

    Raises:
      ValueError: a run that does not super-resolve, or bad inputs (naming every offending file).
    """
    from diffjax.pipelines.sr3 import read_low_res_folder
    from diffjax.outputs import write_named
    from diffjax.run_base import lead_print

    run._require("restore")
    multiple = 2 ** (len(run.model.config_dict["block_out_channels"]) - 1)
    # the UNet runs on latents as large as the input (LDM) or on the upscaled image (ADM)
    tile = multiple * run.scale if isinstance(run, LatentDiffusersRun) else multiple
    inputs = read_low_res_folder(input_dir, channels=3, scale=run.scale, tile=tile)
    key = jax.random.key(seed)
    images = [run.restore((low + 1) / 2, key=jax.random.fold_in(key, i)) * 2 - 1 for i, (_, low) in enumerate(inputs)]
    write_named(output, inputs, images)
    lead_print(f"super-resolved {len(images)} images x{run.scale} into {output}")
    return {"output": output, "num": len(images)}
