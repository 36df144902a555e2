"""Unconditional backbone on the procedural scenes (32x32 RGB; diffjax/data/scenes.py).

The DDPM whose features the segmentation configs read. Sized for a CPU: a small UNet
and a short run; ``--config.data.name=folder --config.data.data_dir=DIR`` trains the
same model on a user's unlabelled images instead.
"""

from configs.default import apply_smoke, check_arg, get_base_config


def get_config(arg=None):
    check_arg("ddpm_scenes", arg)
    c = get_base_config()
    c.data.name = "scenes"
    c.data.image_size = 32

    c.model.base_channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.dropout = 0.0

    c.optim.lr = 5e-4
    c.optim.warmup_steps = 200
    c.training.num_steps = 2000
    c.training.batch_size = 32
    c.training.ckpt_every = 1000
    c.training.sample_every = 1000
    c.training.num_grid_samples = 16
    c.training.ema_decay = 0.999

    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.steps = 20
    c.eval.num_samples = 64
    return apply_smoke(c) if arg == "smoke" else c
