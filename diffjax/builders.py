"""The only module that reads a ``ConfigDict``: it turns configs into objects.

Names map to classes through explicit dicts (no registries, no import side
effects). An unknown name raises ``ValueError`` listing the valid ones. The
library below this module takes plain arguments and frozen dataclasses only.
"""

from __future__ import annotations

import dataclasses
import inspect

import ml_collections
import optax
from flax import nnx

from diffjax import samplers, sde as sde_lib
from diffjax import workdir_io
from diffjax.losses import make_classifier_loss_fn, make_conditional_loss_fn, make_loss_fn
from diffjax.pipelines import GeneratePipeline
from diffjax.pipelines import conditional as conditional_pipelines
from diffjax.pipelines.autoencoder import AutoencoderPipeline
from diffjax.pipelines.cascade import CascadePipeline
from diffjax.pipelines import ldm as ldm_pipelines
from diffjax.pipelines import palette as palette_pipelines
from diffjax.pipelines.repaint import RepaintPipeline
from diffjax.pipelines.sr3 import SR3Pipeline
from diffjax.pipelines.translation import DomainClassifierPipeline
from diffjax.training import make_lr_schedule, make_optimizer
from diffjax.run_config import load_run_config
from diffjax.config_checks import check_override_keys, fill_missing_keys, validate_config  # noqa: F401  (re-exported)

__all__ = ["SDES", "SAMPLERS", "PIPELINES", "validate_config", "fill_missing_keys", "build_sde", "build_model_config",
           "build_model", "build_autoencoder_config", "build_loss", "build_sampler", "build_dataset", "build_optimizer",
           "build_lr_schedule", "build_pipeline", "load_model_config", "restore_ema_model", "first_stage_for"]

SDES = {"vp": sde_lib.VPSDE, "subvp": sde_lib.SubVPSDE, "ve": sde_lib.VESDE, "cosine": sde_lib.CosineVPSDE,
        "discrete": sde_lib.DiscreteVPSDE}

SAMPLERS = {"euler_maruyama": samplers.EulerMaruyama, "reverse_diffusion": samplers.ReverseDiffusion,
            "pc": samplers.PredictorCorrector, "ancestral": samplers.Ancestral, "ddim": samplers.DDIM,
            "heun": samplers.Heun, "dpm_solver_pp": samplers.DPMSolverPP, "unipc": samplers.UniPC,
            "ode": samplers.ProbabilityFlowODE}

# config.task.name -> the pipeline class; each takes the config's task section.
PIPELINES = {
    "generate": GeneratePipeline,
    "sr3": SR3Pipeline,
    "cascade": CascadePipeline,
    "repaint": RepaintPipeline,
    "palette_inpainting": palette_pipelines.PaletteInpainting,
    "palette_uncropping": palette_pipelines.PaletteUncropping,
    "palette_colorization": palette_pipelines.PaletteColorization,
    "palette_jpeg": palette_pipelines.PaletteJPEG,
    "palette_multitask": palette_pipelines.PaletteMultitask,
    "domain_classifier": DomainClassifierPipeline,
    "conditional_sr": conditional_pipelines.ConditionalSR,
    "conditional_inpainting": conditional_pipelines.ConditionalInpainting,
    "autoencoder": AutoencoderPipeline,
    "ldm": ldm_pipelines.LatentGenerate,
    "ldm_sr": ldm_pipelines.LatentSR,
    "ldm_inpainting": ldm_pipelines.LatentInpainting,
}


def _lookup(kind: str, name: str, table: dict):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(table)}")
    return table[name]


def _constructor_fields(cls) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _pick(section: ml_collections.ConfigDict, cls) -> dict:
    """The entries of ``section`` that ``cls`` takes as keyword arguments."""
    fields = _constructor_fields(cls)
    return {k: v for k, v in section.items() if k in fields}


# Keys of config.model that pick the network class rather than configure a UNetConfig.
_ARCHITECTURE_KEYS = ("architecture", "diffusers_config")
ARCHITECTURES = ("unet", "diffusers_unet2d")


def _refuse_training(config: ml_collections.ConfigDict) -> None:
    name = config.model.get("architecture", "unet")
    if name not in ARCHITECTURES:
        raise ValueError(f"model.architecture must be one of {list(ARCHITECTURES)}, got {name!r}")
    if name == "diffusers_unet2d":
        raise ValueError("model.architecture='diffusers_unet2d' (a converted diffusers UNet2DModel) samples but "
                         "does not train in diffjax: its blocks take no dropout key, label dropout or remat; "
                         "train a diffjax UNet (model.architecture='unet') in a new workdir instead")


def unet_model_keys(config: ml_collections.ConfigDict) -> dict:
    """``config.model`` as ``UNetConfig`` keyword arguments (tuples for the lists), without the keys that pick the
    network class; refuses a converted diffusers UNet, which trains in no diffjax loop."""
    _refuse_training(config)
    return _with_tuples({k: v for k, v in config.model.items() if k not in _ARCHITECTURE_KEYS})


def _network(name: str):
    """``(network class, its config class)`` of ``pipeline.network`` (``"unet"``, ``"classifier"``, ``"autoencoder"``)."""
    from diffjax import nn  # the network package is only needed here

    return {"classifier": (nn.Classifier, nn.ClassifierConfig),
            "autoencoder": (nn.Autoencoder, nn.AutoencoderConfig)}.get(name, (nn.UNet, nn.UNetConfig))


def _with_tuples(kwargs: dict) -> dict:
    """``kwargs`` with the list fields a JSON round trip leaves as lists made tuples (the configs are hashable)."""
    return {**kwargs, **{k: tuple(kwargs.get(k, ())) for k in ("channel_mult", "attn_resolutions")}}


def build_sde(config: ml_collections.ConfigDict) -> sde_lib.SDE:
    """The forward process named by ``config.sde.name`` with the fields it takes."""
    cls = _lookup("sde", config.sde.name, SDES)
    kwargs = _pick(config.sde, cls)
    if not kwargs.get("eps", 1.0):  # 0 (the schema's default) keeps the process's own end time
        kwargs.pop("eps")
    return cls(**kwargs)


def build_model_config(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int = 0):
    """``diffjax.nn.UNetConfig`` from ``config.model``, the data's ``(H, W, C)`` and ``num_classes`` (used with
    ``config.data.use_labels``); a ValueError for unknown model keys or hyper-parameters the UNet rejects."""
    from diffjax.nn import ClassifierConfig, UNetConfig  # the network package is only needed here

    height, width, channels = image_shape
    if height != width:
        raise ValueError(f"the UNet needs square images, the dataset gives {height}x{width}")
    pipeline = build_pipeline(config)
    if pipeline.network == "autoencoder":
        return build_autoencoder_config(config, image_shape)
    if pipeline.network == "classifier":
        # The classifier shares the UNet's keys it has a use for (prediction is not one).
        kwargs = _with_tuples(_pick(config.model, ClassifierConfig))
        return ClassifierConfig(image_size=height, in_channels=channels, num_classes=num_classes, **kwargs)
    _refuse_training(config)
    fields = _constructor_fields(UNetConfig)
    unknown = sorted(set(config.model.keys()) - fields - set(_ARCHITECTURE_KEYS))
    if unknown:
        raise ValueError(f"unknown model keys {unknown}; UNetConfig takes {sorted(fields)}")
    kwargs = {**unet_model_keys(config), "image_size": height, "in_channels": channels,
              "num_classes": num_classes if config.data.use_labels else 0,
              "cond_channels": pipeline.cond_channels(image_shape), **pipeline.model_fields()}
    if getattr(pipeline, "needs_autoencoder", False):  # latent diffusion: the network sees the latent grid
        kwargs["image_size"], kwargs["in_channels"] = pipeline.network_shape(image_shape)
    return UNetConfig(**kwargs)


def build_autoencoder_config(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]):
    """``diffjax.nn.AutoencoderConfig`` from ``config.autoencoder`` and the data's image shape.

    The discriminator is built only when ``config.autoencoder.disc_start >= 0``.

    Raises:
      ValueError: hyper-parameters the autoencoder rejects.
    """
    from diffjax.nn import AutoencoderConfig

    a = config.autoencoder
    kwargs = _pick(a, AutoencoderConfig)
    kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    kwargs["disc_channels"] = a.disc_channels if a.disc_start >= 0 else 0
    return AutoencoderConfig(image_size=image_shape[0], in_channels=image_shape[2], **kwargs)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs, image_shape, num_classes: int = 0):
    """``(model, model_config)``: the network of ``config`` (a UNet, or a Classifier / Autoencoder for such a task)
    initialised from ``rngs``, for the data's ``image_shape`` and ``num_classes`` (see :func:`build_model_config`)."""
    from diffjax import nn

    model_config = build_model_config(config, image_shape, num_classes)
    network = {nn.ClassifierConfig: nn.Classifier, nn.AutoencoderConfig: nn.Autoencoder}.get(type(model_config), nn.UNet)
    return network(model_config, rngs=rngs), model_config


def build_loss(config: ml_collections.ConfigDict, sde: sde_lib.SDE | None = None):
    """``loss_fn(apply_fn, x0, key)`` from ``config.loss`` and ``config.model.prediction``.

    A conditional-estimator task (``conditional_sr``, ``conditional_inpainting``)
    gets :func:`diffjax.losses.make_conditional_loss_fn` for its ``method``, which
    also takes the batch's condition.
    """
    _refuse_training(config)  # the trainer's first network builder: refuse before any data is read
    sde = build_sde(config) if sde is None else sde
    pipeline = build_pipeline(config)
    if pipeline.network == "classifier":
        return make_classifier_loss_fn(sde, time_input=config.loss.time_input)
    if pipeline.network == "autoencoder":
        from diffjax.losses import make_autoencoder_loss_fn
        from diffjax.metrics import lpips_loss_fn

        a = config.autoencoder
        return make_autoencoder_loss_fn(lpips_loss_fn(a.perceptual_net) if a.perceptual_weight > 0 else None,
                                        perceptual_weight=a.perceptual_weight, kl_weight=a.kl_weight,
                                        disc_weight=a.disc_weight, disc_start=a.disc_start)
    make, extra = make_loss_fn, {}
    if isinstance(pipeline, conditional_pipelines.ConditionalTask):
        make, extra = make_conditional_loss_fn, {"method": pipeline.method, "sde_y": pipeline.sde_y}
    loss = {k: config.loss[k] for k in ("time_input", "kind", "norm", "weighting", "t_sampling", "num_steps")}
    return make(sde, **extra, prediction=config.model.prediction, **loss)


def build_sampler(config: ml_collections.ConfigDict) -> samplers.Sampler:
    """The sampler named by ``config.sampling.sampler``, given the fields it takes.

    String fields left empty (``spacing = ""``) keep the sampler's own default.
    """
    cls = _lookup("sampler", config.sampling.sampler, SAMPLERS)
    kwargs = {k: v for k, v in _pick(config.sampling, cls).items() if v != ""}
    return cls(**kwargs)


def build_dataset(config: ml_collections.ConfigDict, split: str = "train"):
    """``diffjax.data.load_dataset`` for ``config.data`` and ``split`` (only ``config.data.classes``, if set)."""
    from diffjax.data import load_dataset, select_classes

    d = config.data
    dataset = load_dataset(d.name, split=split, image_size=d.image_size or None, seed=config.training.seed,
                           data_dir=d.data_dir or None, channels=d.channels, num_classes=d.num_classes,
                           eval_fraction=d.eval_fraction, crop=d.get("crop", "center"))
    classes = tuple(d.get("classes", ()))
    return select_classes(dataset, classes) if classes else dataset


def build_lr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning-rate schedule of ``config.optim`` over ``config.training.num_steps``."""
    return make_lr_schedule(config.optim.lr, config.optim.warmup_steps, config.training.num_steps)


def build_optimizer(config: ml_collections.ConfigDict, lr: float | None = None) -> optax.GradientTransformation:
    """AdamW + clipping + warm-up/cosine schedule from ``config.optim`` (peak ``lr``, default ``optim.lr``)."""
    o = config.optim
    return make_optimizer(lr=o.lr if lr is None else lr, warmup_steps=o.warmup_steps, total_steps=config.training.num_steps,
                          weight_decay=o.weight_decay, grad_clip=o.grad_clip, b1=o.b1, b2=o.b2)


def build_pipeline(config: ml_collections.ConfigDict):
    """The task's host-side pipeline (:mod:`diffjax.pipelines`) from ``config.task``."""
    cls = _lookup("task", config.task.name, PIPELINES)
    section = config.task.get(config.task.name, ml_collections.ConfigDict())
    pipeline = cls(**dict(section.items()))
    if getattr(pipeline, "needs_autoencoder", False):
        # The named autoencoder run, checked now; its weights are restored on first use.
        pipeline.attach(first_stage_for(config))
    return pipeline


# -- restoring a trained run's network (a latent task's first stage is one) ---
# Here, not in the run layer, because building a latent pipeline restores the
# autoencoder run it names: the recursion stays inside this module.


def load_model_config(workdir: str, network: str = "unet"):
    """The ``UNetConfig`` (``network="classifier"``: ``ClassifierConfig``; ``"autoencoder"``: ``AutoencoderConfig``) stored with the run.

    Raises:
      ValueError: if ``workdir`` holds no ``model_config.json``.
    """
    from diffjax.checkpoint import model_config_path
    from diffjax.errors import dataclass_from_json, load_json
    from diffjax.nn.diffusers_unet import DiffusersUNetConfig

    path = model_config_path(workdir)
    if not workdir_io.exists(path):
        raise ValueError(f"{workdir} holds no model_config.json: expected the --workdir of a train.py run")
    cls = _network(network)[1]
    if network == "unet":
        stored = load_json(path)
        if isinstance(stored, dict) and "diffusers_config" in stored:  # a converted diffusers UNet2DModel
            cls = DiffusersUNetConfig
    return dataclass_from_json(cls, path)  # a damaged or hand-edited file is named, with its line


def restore_ema_model(config: ml_collections.ConfigDict, workdir: str, mesh, step: int | None = None):
    """Restore the EMA parameters of checkpoint ``step`` (default: the latest) onto ``mesh`` (replicated).

    ``config`` is the run's (its optimizer gives the checkpoint's structure); ``mesh`` any devices
    (:func:`diffjax.sharding.make_mesh`), whatever the layout that wrote the checkpoint. Returns
    ``(graphdef, ema_params, model_state, model_config, step)``; a ValueError if ``workdir`` holds no
    model config or no checkpoint.
    """
    import jax

    from diffjax.checkpoint import restore_latest
    from diffjax.nn.diffusers_unet import DiffusersUNet2D, DiffusersUNetConfig
    from diffjax.sharding import replicated
    from diffjax.training import TrainState

    network = build_pipeline(config).network
    model_config, optimizer = load_model_config(workdir, network), build_optimizer(config)
    # Abstract model: shapes only, no weights drawn.
    cls = DiffusersUNet2D if isinstance(model_config, DiffusersUNetConfig) else _network(network)[0]
    model = nnx.eval_shape(lambda: cls(model_config, rngs=nnx.Rngs(0)))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

    def init():
        p, r = (jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), tree) for tree in (params, model_state))
        return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=optimizer.init(p),
                          ema_params=p, model_state=r)

    state = restore_latest(workdir, init, replicated(mesh), step)
    return graphdef, state.ema_params, state.model_state, model_config, int(state.step)


_FIRST_STAGES: dict = {}


def first_stage_for(config: ml_collections.ConfigDict) -> ldm_pipelines.FirstStage:
    """The autoencoder of a latent run: ``config.autoencoder.workdir``, checked (its parameters restored on first use).

    With an empty workdir the autoencoder is only *declared* by the fields of
    ``config.autoencoder`` (enough to build the diffusion network's shapes;
    training and sampling refuse it).

    Raises:
      ValueError: a workdir that does not exist, is not a ``train.py`` run, is
        a run of another task than ``autoencoder``, or holds no checkpoint.
    """
    from diffjax.checkpoint import Checkpointer
    from diffjax.pipelines.ldm import FirstStage
    from diffjax.sharding import make_mesh

    workdir = config.autoencoder.workdir
    if not workdir:
        return FirstStage(build_autoencoder_config(config, (64, 64, 1)))
    where = f"--config.autoencoder.workdir={workdir}"
    if not workdir_io.isdir(workdir):
        raise ValueError(f"{where} does not exist; train the autoencoder first: python train.py "
                         f"--config configs/autoencoder_photos.py --workdir {workdir}")
    try:
        ae_run_config = load_run_config(workdir)
    except (ValueError, OSError) as err:
        raise ValueError(f"{where} is not a train.py run ({err})") from None
    if ae_run_config.task.name != "autoencoder":
        raise ValueError(f"{where} is a {ae_run_config.task.name!r} run, not an autoencoder: its "
                         "task.name must be 'autoencoder' (configs/autoencoder_photos.py)")
    checkpointer = Checkpointer(workdir, keep=1, async_save=False)
    try:
        step = checkpointer.latest_step()
    finally:
        checkpointer.close()
    if step is None:
        raise ValueError(f"{where} is untrained: it holds no checkpoint; train it first "
                         f"(python train.py --config <its config> --workdir {workdir})")
    ae_config = load_model_config(workdir, "autoencoder")
    key = (workdir_io.absolute(workdir), step)
    if key not in _FIRST_STAGES:
        def loader():
            graphdef, params, model_state, _, _ = restore_ema_model(ae_run_config, workdir, make_mesh())
            return graphdef, params, model_state

        _FIRST_STAGES[key] = FirstStage(ae_config, workdir_io.absolute(workdir), step, loader)
    return _FIRST_STAGES[key]
