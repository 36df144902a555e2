"""Base configuration shared by every config file (also the schema for key checks).

Every config in this directory starts from :func:`get_base_config` and changes
values only; a key that is not here is a typo, and ``train.py`` rejects it.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    """All sections and keys a run reads, with their defaults."""
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # "digits", "fashion_mnist", "photos" or "tfds:<name>"
    c.data.image_size = 16
    c.data.data_dir = ""  # "" = the loader's default location
    c.data.use_labels = False  # feed class labels to the network (class-conditional model)

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

    c.sampling = ml_collections.ConfigDict()
    c.sampling.sampler = "ddim"  # see builders.SAMPLERS ("unipc" for few steps)
    c.sampling.steps = 50
    c.sampling.spacing = ""  # time grid: "uniform", "quadratic", "logsnr", "karras", "fitted" (unipc); "" = the sampler's default
    c.sampling.eta = 0.0  # ddim, dpm_solver_pp: 0 = deterministic (ODE), 1 = stochastic (SDE)
    c.sampling.order = 2  # dpm_solver_pp
    c.sampling.lower_order_final = True  # dpm_solver_pp
    c.sampling.snr = 0.16  # pc
    c.sampling.corrector_steps = 1  # pc
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
    c.task.palette_colorization = ml_collections.ConfigDict()
    c.task.palette_jpeg = ml_collections.ConfigDict({"quality_range": (5, 30)})
    c.task.palette_multitask = ml_collections.ConfigDict({
        "tasks": ("inpainting", "uncropping", "colorization", "jpeg"), "mask_kinds": ("free_form", "box"),
        "directions": ("left", "right", "top", "bottom", "all"), "quality_range": (5, 30),
        "hole_loss_only": False,
    })
    c.task.repaint = ml_collections.ConfigDict({"steps": 250, "jump_length": 10, "jump_n_sample": 10})

    c.eval = ml_collections.ConfigDict()
    c.eval.enabled = True  # demo evaluation at the end of training
    c.eval.num_samples = 256
    c.eval.fd_alexnet = True  # FD-AlexNet of samples vs held-out images
    c.eval.split = "test"
    return c


def noise_level_conditioning(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SR3's continuous noise levels: ``gamma = alpha(t)`` drawn uniformly between adjacent
    levels of a 1000-level grid, and the network sees ``gamma`` itself (sinusoidal, x1000),
    so any sampler, schedule and step count can drive it."""
    c.loss.kind = "discrete"
    c.loss.t_sampling = "sr3"
    c.loss.time_input = "alpha"
    c.model.time_embedding = "sinusoidal"
    c.model.time_scale = 1000.0
    return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a config to a tiny CPU run (seconds): a small UNet, a few dozen steps.

    Config files call it for their ``:smoke`` argument, then adjust what their
    task needs on top.
    """
    c.model.base_channels = 8
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.model.dropout = 0.0
    c.optim.warmup_steps = 5
    c.training.num_steps = 20
    c.training.batch_size = 8
    c.training.log_every = 10
    c.training.ckpt_every = 20
    c.training.sample_every = 20
    c.training.num_grid_samples = 8
    c.training.ema_decay = 0.9
    c.sampling.steps = 5
    c.sampling.num_samples = 8
    c.sampling.batch_size = 8
    c.eval.num_samples = 16
    return c


def check_arg(config_name: str, arg, allowed=("smoke",)) -> None:
    """Refuse a config argument the file does not know."""
    if arg not in (None, "", *allowed):
        raise ValueError(f"{config_name} takes no argument or one of {list(allowed)}, got {arg!r}")
