"""Base configuration shared by every config file (also the schema for key checks).

Every config in this directory starts from :func:`get_base_config` (the schema,
defined in :mod:`diffjax.run_config` so that an installed package has it) and
changes values only; a key that is not there is a typo, and ``train.py`` rejects it.
"""

import ml_collections

# The schema lives in the package (an installed diffjax reads stored run configs
# without this folder); config files keep importing it from here.
from diffjax.run_config import get_base_config  # noqa: F401


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


def cpu_photo_network(c: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
    """The UNet, optimiser and run settings the CPU-sized photo configs share (SR3 x4, LDM x4,
    the SDEdit photos model): base 32, one residual block per level, no attention, batch 16."""
    c.model.base_channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.model.dropout = 0.0
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.training.num_steps = num_steps
    c.training.batch_size = 16
    c.training.log_every = 50
    c.training.ckpt_every = 500
    c.training.ema_decay = 0.995
    return c


def check_arg(config_name: str, arg, allowed=("smoke",)) -> None:
    """Refuse a config argument the file does not know."""
    if arg not in (None, "", *allowed):
        raise ValueError(f"{config_name} takes no argument or one of {list(allowed)}, got {arg!r}")
