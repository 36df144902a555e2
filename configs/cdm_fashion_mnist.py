"""A two-stage cascaded diffusion model (CDM) on Fashion-MNIST: class label -> 16x16 -> 32x32.

Each stage is its own train.py run; the SR stage's config names the base's workdir:

    python train.py --config configs/cdm_fashion_mnist.py:base --workdir runs/cdm_base
    python train.py --config configs/cdm_fashion_mnist.py:sr --workdir runs/cdm_sr \\
        --config.task.cascade.previous_workdir=runs/cdm_base
    python sample.py --workdir runs/cdm_sr --num 20     # writes stage0_16px/ and stage1_32px/

Arguments: ``base`` or ``sr``, optionally followed by ``,smoke`` (e.g. ``sr,smoke``).
Both conditioning-augmentation variants use the same trained SR stage; pick one
at sampling time with ``--config.task.cascade.truncated=True|False`` and
``--config.task.cascade.sample_aug_level=s``.
"""

from configs.default import get_base_config, noise_level_conditioning
from configs.sr3_photos_x4 import smoke


def _base(c):
    """Class-conditional generator at 16x16."""
    c.data.image_size = 16
    c.data.use_labels = True
    c.model.base_channels = 32
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.loss.time_input = "t"
    return c


def _sr(c):
    """SR3-style 16x16 -> 32x32 stage with Gaussian-noise conditioning augmentation."""
    c.data.image_size = 32
    c.task.name = "cascade"
    c.task.cascade.scale = 2
    c.task.cascade.noise_aug_max = 0.5
    c.task.cascade.sample_aug_level = 0.1
    c.task.cascade.previous_workdir = "runs/cdm_base"
    c.model.base_channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    noise_level_conditioning(c)
    c.training.sample_every = 0
    return c


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    stage = parts[0] if parts else None
    if stage not in ("base", "sr") or parts[1:] not in ([], ["smoke"]):
        raise ValueError(f"cdm_fashion_mnist takes 'base' or 'sr', optionally with ',smoke'; got {arg!r}")
    c = get_base_config()
    c.data.name = "fashion_mnist"
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 200
    c.training.num_steps = 5000
    c.training.batch_size = 64
    c.training.ckpt_every = 1000
    c.training.sample_every = 1000
    c.training.num_grid_samples = 16
    c.training.ema_decay = 0.999
    c.eval.enabled = False  # the cascade is evaluated by sample.py on the SR stage's workdir
    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.steps = 20
    c.sampling.spacing = "logsnr"
    c = _base(c) if stage == "base" else _sr(c)
    if parts[1:] == ["smoke"]:
        smoke(c)
        c.training.sample_every = 0
        if stage == "base":
            c.data.image_size = 8
            c.model.attn_resolutions = ()
        else:
            c.data.image_size = 16
    return c
