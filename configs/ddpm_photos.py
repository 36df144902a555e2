"""Unconditional model on 32x32 colour photo crops (offline dataset)."""

from configs.default import get_base_config


def get_config(arg=None):
    c = get_base_config()
    c.data.name = "photos"
    c.data.image_size = 32

    c.model.base_channels = 64
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.1

    c.optim.lr = 2e-4
    c.optim.warmup_steps = 1000
    c.training.num_steps = 50_000
    c.training.batch_size = 128
    c.training.ckpt_every = 2500
    c.training.sample_every = 2500
    c.training.ema_decay = 0.9999

    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.steps = 20

    if arg == "smoke":
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
    elif arg not in (None, ""):
        raise ValueError(f"ddpm_photos takes no argument or 'smoke', got {arg!r}")
    return c
