"""A diffusers folder as a :class:`diffjax.Run`: ``generate``, ``restore`` (RePaint), ``translate`` (SDEdit).

``load_diffusers_run(path)`` reads a pipeline folder (``model_index.json`` with
``unet/`` and ``scheduler/``) or a bare model folder (``config.json`` +
``diffusion_pytorch_model.safetensors``; DDPM's scheduler defaults are then
assumed) without PyTorch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.interop.diffusers_schedulers import Schedule, schedule_from_diffusers
from diffjax.interop.diffusers_weights import read_safetensors, unet_from_diffusers, unet_state_dict, write_safetensors
from diffjax.parametrization import model_score_fn
from diffjax.run_base import Run
from diffjax.samplers import sample
from diffjax.tiling import default_overlap, tiled_score_fn

__all__ = ["DiffusersRun", "load_diffusers_run", "is_diffusers_folder", "read_diffusers_folder", "save_diffusers_folder",
           "diffusers_run_config", "write_diffusers_folder"]

_WEIGHTS = "diffusion_pytorch_model.safetensors"


def is_diffusers_folder(path) -> bool:
    """True for a diffusers pipeline folder or a UNet model folder."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, "model_index.json")) or (
        os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, _WEIGHTS)))


def _read_json(path):
    if not os.path.isfile(path):
        raise ValueError(f"expected {path}")
    with open(path) as f:
        return json.load(f)


def read_diffusers_folder(path: str) -> tuple[dict, dict, dict, str | None]:
    """``(unet_config, unet_state, scheduler_config, pipeline_class)`` of a diffusers folder.

    Raises:
      ValueError: no model_index.json / config.json, a pipeline other than DDPM / DDIM /
        score-SDE VE, a ``.bin`` (pickled) checkpoint only, or missing files.
    """
    path = os.fspath(path)
    pipeline = None
    if os.path.isfile(os.path.join(path, "model_index.json")):
        index = _read_json(os.path.join(path, "model_index.json"))
        pipeline = index.get("_class_name")
        if pipeline not in ("DDPMPipeline", "DDIMPipeline", "ScoreSdeVePipeline"):
            parts = sorted(k for k in index if not k.startswith("_"))
            raise ValueError(f"{path}: pipeline {pipeline!r} (components {parts}) is not supported; "
                             "supported: DDPMPipeline, DDIMPipeline, ScoreSdeVePipeline")
        unet_dir, sched_path = os.path.join(path, "unet"), os.path.join(path, "scheduler", "scheduler_config.json")
        scheduler = _read_json(sched_path)
    else:
        unet_dir, scheduler = path, {"_class_name": "DDPMScheduler"}
    weights = os.path.join(unet_dir, _WEIGHTS)
    if not os.path.isfile(weights):
        pickled = os.path.isfile(os.path.join(unet_dir, "diffusion_pytorch_model.bin"))
        raise ValueError(f"{unet_dir}: no {_WEIGHTS}" + (
            " (only a pickled .bin, which diffjax never unpickles: convert it once with diffusers' "
            "save_pretrained(..., safe_serialization=True))" if pickled else ""))
    return _read_json(os.path.join(unet_dir, "config.json")), read_safetensors(weights), scheduler, pipeline


class DiffusersRun(Run):
    """A diffusers UNet2DModel and its scheduler as a run (build with :func:`load_diffusers_run`).

    Attributes:
      workdir: the folder it was read from.
      model: the :class:`~diffjax.nn.diffusers_unet.DiffusersUNet2D`.
      sde, sampler: the scheduler's process and the pipeline's own loop.
      prediction, time_input: how the network is read (see :mod:`diffjax.parametrization`).
      image_shape: ``(H, W, C)`` from the UNet's ``sample_size`` and ``in_channels``.
    """

    # Run.__init__ restores a trained diffjax run; this one is built from a folder instead.
    def __init__(self, workdir: str, unet_config: dict, model, schedule: Schedule, scheduler_config: dict | None = None):
        self.workdir, self.task, self.step, self.config = workdir, "generate", 0, None
        self.unet_config, self.scheduler_config = unet_config, scheduler_config or {}
        self.model, self.schedule = model, schedule
        self.sde = schedule.sde
        self.prediction, self.time_input = schedule.prediction, schedule.time_input
        self._graphdef, self.params = nnx.split(model, nnx.Param)
        size = unet_config.get("sample_size") or 32
        size = size[0] if isinstance(size, (list, tuple)) else size
        self.image_shape = (int(size), int(size), int(model.config_dict["in_channels"]))
        self._compiled = {}

    # A diffusers run has no ConfigDict: its capabilities and sampler come from the folder.
    @property
    def capabilities(self) -> tuple[str, ...]:
        """What this run can do: generate, restore (RePaint), translate (SDEdit), score_fn, sde, sampler."""
        return ("generate", "restore", "translate", "score_fn", "sde", "sampler")

    @property
    def sampler(self):
        """The pipeline's own loop (its scheduler mapped onto a diffjax sampler)."""
        return self.schedule.sampler

    def __repr__(self) -> str:
        return f"DiffusersRun(workdir={self.workdir!r}, image_shape={self.image_shape}, sampler={self.sampler})"

    def _net(self, params, labels=None):
        model = nnx.merge(self._graphdef, params)
        channels = self.image_shape[-1]

        def apply(x, c):
            out = model(x, c, labels=labels)
            return out[..., :channels] if self.schedule.learned_variance else out

        return model_score_fn(apply, self.sde, prediction=self.prediction, time_input=self.time_input)

    def _whole_image_net(self, params, shape):
        """The score on ``shape``-sized images: the network itself, or blended tiles where larger (as Run.restore)."""
        net = self._net(params)
        tile = self.image_shape[0]
        if tuple(shape[1:3]) == tuple(self.image_shape[:2]):
            return net
        return tiled_score_fn(lambda x, t, _: net(x, t), None, tile=tile, overlap=default_overlap(tile))

    @property
    def score_fn(self):
        """``score_fn(x, t, *, labels=None)``: ``x`` ``(B, H, W, C)`` in ``[-1, 1]``, ``t`` ``(B,)``."""
        return lambda x, t, *, labels=None: self._net(self.params, labels)(x, t)

    def _jit(self, name, fn):
        if name not in self._compiled:
            self._compiled[name] = jax.jit(fn)
        return self._compiled[name]

    @staticmethod
    def _key(key):
        if key is None:
            return jax.random.key(0)
        return jax.random.key(key) if isinstance(key, (int, np.integer)) else key

    def generate(self, n: int, *, key=None, sampler=None, labels=None, batch_size: int = 16) -> np.ndarray:
        """``n`` images from ``x_T ~ N(0, I)`` with the pipeline's loop (or ``sampler``).

        Batch ``b`` draws ``x_T`` from ``fold_in(key, b)`` and samples with ``fold_in(key, b + 2^20)``.

        Returns:
          ``(n, H, W, C)`` float32 numpy in ``[0, 1]`` (``x / 2 + 0.5`` clipped, as the pipelines do).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        sampler = sampler or self.sampler
        key = self._key(key)

        def run(params, x, k, labels):
            return sample(self._net(params, labels), self.sde, x, key=k, sampler=sampler)[0]

        fn = self._jit(("generate", sampler, labels is None), run)
        out = []
        for b, start in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - start)
            x = self.sde.prior_sample(jax.random.fold_in(key, b), (m, *self.image_shape))
            lab = None if labels is None else jnp.asarray(np.asarray(labels)[start:start + m])
            out.append(np.asarray(fn(self.params, x, jax.random.fold_in(key, b + (1 << 20)), lab)))
        return self._unit(np.concatenate(out))

    def _unit(self, x) -> np.ndarray:
        """The model's data range -> images in [0, 1], as the pipeline clamps them."""
        x = np.asarray(x)
        return np.clip(x / 2 + 0.5 if self.schedule.centered else x, 0.0, 1.0).astype(np.float32)

    def _pixels(self, images, shape, *, tiles: bool = False):
        """Images -> the model's data range; with ``tiles``, any ``H, W >= shape``'s (blended tiles)."""
        x = np.asarray(images)
        single = x.ndim == 3
        x = x[None] if single else x
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        fits = x.ndim == 4 and (tuple(x.shape[1:]) == tuple(shape) or (
            tiles and x.shape[3] == shape[2] and x.shape[1] >= shape[0] and x.shape[2] >= shape[1]))
        if not fits:
            larger = " (or larger: tiled)" if tiles else ""
            raise ValueError(f"images must be (N, {shape[0]}, {shape[1]}, {shape[2]}){larger} or one (H, W, C) image "
                             f"in [0, 1] or uint8, got shape {np.asarray(images).shape}")
        x = x.astype(np.float32)
        return (x * 2 - 1 if self.schedule.centered else x), single  # the model's data range

    def restore(self, images, masks=None, *, key=None, steps: int = 250, jump_length: int = 10,
                jump_n_sample: int = 10) -> np.ndarray:
        """RePaint inpainting: keep pixels where ``masks == 1``, fill the rest (:func:`diffjax.tasks.repaint`).

        Args:
          images: ``(N, H, W, C)`` or ``(H, W, C)``, uint8 or float in ``[0, 1]``; images larger than the
            network are restored with blended overlapping tiles (as :meth:`diffjax.Run.restore`).
          masks: ``(H, W)`` or ``(N, H, W)`` (optionally ``[..., 1]``), 1 = known pixel.
          key: a ``jax.random`` key or an int seed.
          steps, jump_length, jump_n_sample: RePaint's schedule (250 / 10 / 10 in the paper).

        Returns:
          float32 numpy in ``[0, 1]`` shaped like ``images``.
        """
        from diffjax.tasks.repaint import repaint

        if masks is None:
            raise ValueError("a diffusers run restores by RePaint inpainting: pass masks (1 = known pixel)")
        x, single = self._pixels(images, self.image_shape, tiles=True)
        m = np.asarray(masks, np.float32)
        hw = tuple(x.shape[1:3])
        if m.shape[-3:] == (*hw, 1):
            m = m[..., 0]
        if m.shape[-2:] != hw or m.ndim not in (2, 3) or (m.ndim == 3 and len(m) != len(x)):
            raise ValueError(f"masks must be (H, W) or (N, H, W) = {hw} / ({len(x)}, {hw[0]}, {hw[1]}), optionally "
                             f"with a trailing 1; got {np.asarray(masks).shape}")
        m = np.broadcast_to(m, (len(x), *hw))[..., None]

        def run(params, x, m, k):
            return repaint(self._whole_image_net(params, x.shape), self.sde, x, m, key=k, steps=steps, jump_length=jump_length,
                           jump_n_sample=jump_n_sample)

        fn = self._jit(("restore", steps, jump_length, jump_n_sample), run)
        out = np.asarray(fn(self.params, jnp.asarray(x), jnp.asarray(m), self._key(key)))
        out = self._unit(out)
        return out[0] if single else out

    def translate(self, images, *, t0: float = 0.5, key=None, sampler=None, method: str = "sdedit") -> np.ndarray:
        """SDEdit (:func:`diffjax.tasks.sdedit`): noise ``images`` to ``t0`` and sample back with the pipeline's loop.

        Images larger than the network are translated with blended overlapping tiles.

        Returns:
          float32 numpy in ``[0, 1]`` shaped like ``images``.
        """
        from diffjax.tasks.sdedit import sdedit

        if method != "sdedit":
            raise ValueError(f"a diffusers run translates with method='sdedit' only, got {method!r}")
        if not self.sde.eps < float(t0) <= self.sde.T:
            raise ValueError(f"t0 must lie in (sde.eps, sde.T] = ({self.sde.eps}, {self.sde.T}], got {t0}")
        x, single = self._pixels(images, self.image_shape, tiles=True)
        sampler = sampler or self.sampler

        def run(params, x, k, t0):
            return sdedit(self._whole_image_net(params, x.shape), self.sde, x, key=k, t0=t0, sampler=sampler)

        fn = self._jit(("translate", sampler), run)
        out = self._unit(fn(self.params, jnp.asarray(x), self._key(key), jnp.float32(t0)))
        return out[0] if single else out


def load_diffusers_run(path: str, *, steps: int | None = None, eta: float = 0.0,
                       pipeline: str | None = None) -> DiffusersRun:
    """Read a diffusers pipeline / model folder as a :class:`DiffusersRun` (no PyTorch needed).

    Args:
      path: folder with ``model_index.json`` (+ ``unet/``, ``scheduler/``), or a UNet folder
        (``config.json`` + ``diffusion_pytorch_model.safetensors``; DDPM scheduler defaults).
      steps: sampling steps of ``run.sampler`` (default: the pipeline's, 50 for DDIM, 1000 for DDPM).
      eta: DDIM's ``eta``.
      pipeline: ``"DDIMPipeline"`` or ``"DDPMPipeline"`` to sample as that pipeline does
        (default: the folder's ``model_index.json``).

    Raises:
      ValueError: unsupported pipelines, schedulers or UNet options, or weights that do not fit.
    """
    unet_config, state, scheduler, folder_pipeline = read_diffusers_folder(path)
    schedule = schedule_from_diffusers(scheduler, pipeline or folder_pipeline, steps=steps, eta=eta)
    return DiffusersRun(os.fspath(path), unet_config, unet_from_diffusers(unet_config, state), schedule, scheduler)


def save_diffusers_folder(run: DiffusersRun, folder: str, *, pipeline: str = "DDPMPipeline") -> None:
    """Write ``run`` as a diffusers pipeline folder that ``DDPMPipeline.from_pretrained`` loads.

    ``model_index.json``, ``unet/config.json`` + ``unet/diffusion_pytorch_model.safetensors``
    (float32, the run's current parameters) and ``scheduler/scheduler_config.json``
    (the scheduler config the run was read with). :func:`load_diffusers_run` reads it back.

    Args:
      run: a :class:`DiffusersRun` (its network is a diffusers UNet2DModel by construction).
      folder: the output folder (created; existing files are overwritten).
      pipeline: ``"DDPMPipeline"`` or ``"DDIMPipeline"`` for ``model_index.json``.
    """
    if not isinstance(run, DiffusersRun):
        raise ValueError(f"save_diffusers_folder takes a DiffusersRun, got {type(run).__name__}: export a run's "
                         "workdir with diffjax.export.export_run(workdir, folder) (python -m diffjax.export)")
    if getattr(run, "first_stage", None) is not None:
        raise ValueError("a latent diffusion run (LDMPipeline folder) is already a diffusers folder: copy it")
    if pipeline not in ("DDPMPipeline", "DDIMPipeline"):
        raise ValueError(f"pipeline must be DDPMPipeline or DDIMPipeline, got {pipeline!r}")
    scheduler = dict(run.scheduler_config) or {"_class_name": "DDPMScheduler"}
    if scheduler.get("_class_name") not in ("DDPMScheduler", "DDIMScheduler"):
        raise ValueError(f"only DDPM / DDIM schedulers export, this run has {scheduler.get('_class_name')!r}")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.model.config_dict.items()}
    config["_class_name"] = "UNet2DModel"
    model = nnx.merge(run._graphdef, run.params)
    write_diffusers_folder(folder, config, unet_state_dict(model), scheduler, pipeline)


def write_diffusers_folder(folder: str, unet_config: dict, state: dict, scheduler: dict, pipeline: str) -> None:
    """Write a diffusers pipeline folder: ``model_index.json``, ``unet/`` (config + float32 safetensors), ``scheduler/``.

    Args:
      folder: the output folder (created; existing files are overwritten).
      unet_config: the ``UNet2DModel`` ``config.json`` dict.
      state: ``{key: array}`` in diffusers' names and PyTorch layouts.
      scheduler: the scheduler's config dict (with ``_class_name``).
      pipeline: the pipeline class for ``model_index.json``.
    """
    if any(k.startswith("diffjax_") for k in unet_config):  # ADM layouts UNet2DModel cannot express
        raise ValueError("this UNet uses diffjax's config extensions (diffjax_*), which diffusers' UNet2DModel "
                         "would ignore and compute something else: it cannot be exported as a diffusers folder")
    os.makedirs(os.path.join(folder, "unet"), exist_ok=True)
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    with open(os.path.join(folder, "unet", "config.json"), "w") as f:
        json.dump(unet_config, f, indent=2)
    write_safetensors(state, os.path.join(folder, "unet", _WEIGHTS))
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f, indent=2)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": pipeline, "scheduler": ["diffusers", scheduler["_class_name"]],
                   "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)

def _section_from(obj, section, what: str) -> str:
    """Write a frozen dataclass's fields into a config section; every non-default field needs a key there."""
    for field in dataclasses.fields(obj):
        if not field.init:
            continue
        value = getattr(obj, field.name)
        if field.name in section:
            section[field.name] = type(section[field.name])(value)
        elif value != field.default:
            raise ValueError(f"{what} {type(obj).__name__}.{field.name}={value!r} has no config key")


def diffusers_run_config(path: str, *, steps: int | None = None, eta: float = 0.0, pipeline: str | None = None):
    """A diffusers folder as an ordinary run: ``(config, model_config, unet)``.

    The config is the schema's defaults with ``task.name = "repaint"`` (unconditional:
    generation, RePaint inpainting, SDEdit), ``model.architecture = "diffusers_unet2d"``,
    the scheduler's process in ``config.sde``, the network's parametrisation in
    ``model.prediction`` / ``loss.time_input`` and the pipeline's loop in ``config.sampling``.

    Args:
      path, steps, eta, pipeline: as :func:`load_diffusers_run`.

    Returns:
      ``(config, model_config, unet)``: the ``ConfigDict``, the
      :class:`~diffjax.nn.diffusers_unet.DiffusersUNetConfig` and the loaded
      :class:`~diffjax.nn.diffusers_unet.DiffusersUNet2D`.

    Raises:
      ValueError: what :func:`load_diffusers_run` refuses, or a UNet whose input channels
        differ from its (prediction) output channels (a conditioned network).
    """
    from diffjax.builders import SAMPLERS, SDES
    from diffjax.interop.diffusers_weights import load_unet_weights
    from diffjax.nn.diffusers_unet import DiffusersUNet2D, DiffusersUNetConfig, check_unet_config
    from diffjax.run_config import get_base_config

    unet_config, state, scheduler, folder_pipeline = read_diffusers_folder(path)
    schedule = schedule_from_diffusers(scheduler, pipeline or folder_pipeline, steps=steps, eta=eta)
    full = check_unet_config(unet_config)
    out = full["out_channels"] // 2 if schedule.learned_variance else full["out_channels"]
    if full["in_channels"] != out:
        raise ValueError(f"{path}: the UNet2DModel takes {full['in_channels']} channels and predicts {out}: a network "
                         "conditioned on an image does not convert to an unconditional run")
    size = full["sample_size"] or 32
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    classes = int(full["num_class_embeds"] or 0) if full["class_embed_type"] is None else 0
    model_config = DiffusersUNetConfig(json.dumps(unet_config, sort_keys=True), image_size=size, in_channels=out,
                                       out_channels=out, num_classes=classes)
    unet = load_unet_weights(nnx.eval_shape(lambda: DiffusersUNet2D(model_config, rngs=nnx.Rngs(0))), state)

    c = get_base_config()
    c.task.name = "repaint"
    c.model.architecture, c.model.diffusers_config = "diffusers_unet2d", model_config.diffusers_config
    c.model.prediction, c.loss.time_input = schedule.prediction, schedule.time_input
    c.data.name, c.data.image_size, c.data.channels = "folder", size, out
    c.data.use_labels = classes > 0
    c.sde.name = {cls: name for name, cls in SDES.items()}[type(schedule.sde)]
    _section_from(schedule.sde, c.sde, "the scheduler's process")
    c.sampling.sampler = {cls: name for name, cls in SAMPLERS.items()}[type(schedule.sampler)]
    _section_from(schedule.sampler, c.sampling, "the pipeline's sampler")
    c.sampling.denoise = False  # the pipelines' loops end without an extra Tweedie step
    c.sampling.num_samples = c.sampling.batch_size = 16
    return c, model_config, unet
