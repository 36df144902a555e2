"""SR3 x8 on the bundled photo crops: 8x8 -> 64x64 RGB (``:smoke`` for a tiny run)."""

from configs.sr3_photos_x4 import cpu_sized, smoke, sr3_base


def get_config(arg=None):
    c = cpu_sized(sr3_base(scale=8, image_size=64))
    c.model.base_channels = 32
    c.model.channel_mult = (1, 2, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.training.num_steps = 3000
    c.training.batch_size = 16
    c.training.log_every = 50
    c.training.ckpt_every = 500
    c.training.ema_decay = 0.995
    if arg == "smoke":
        smoke(c)
        c.data.image_size = 16
    elif arg not in (None, ""):
        raise ValueError(f"sr3_photos_x8 takes no argument or 'smoke', got {arg!r}")
    return c
