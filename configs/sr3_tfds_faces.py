"""SR3 at the paper's sizes on a TFDS dataset already prepared on disk (for GPUs / TPUs).

Arguments: ``16_128`` (faces, 16x16 -> 128x128, x8) or ``64_256`` (64x64 ->
256x256, x4), optionally followed by ``,smoke`` for a tiny network. The dataset is
``--config.data.name=tfds:<name>`` (default ``tfds:celeb_a``; prepare it with
``tfds build`` first: training never downloads).
"""

from configs.sr3_photos_x4 import smoke, sr3_base

_SIZES = {"16_128": (8, 128), "64_256": (4, 256)}


def get_config(arg=None):
    parts = [p for p in (arg or "16_128").split(",") if p]
    if parts[0] not in _SIZES or parts[1:] not in ([], ["smoke"]):
        raise ValueError(f"sr3_tfds_faces takes one of {sorted(_SIZES)}, optionally with ',smoke'; got {arg!r}")
    scale, size = _SIZES[parts[0]]
    c = sr3_base(scale=scale, image_size=size)
    c.data.name = "tfds:celeb_a"
    # SR3's 16->128 network: 128 channels, multipliers 1,2,4,8,8, attention at 16x16.
    c.model.base_channels = 128
    c.model.channel_mult = (1, 2, 4, 8, 8) if size == 128 else (1, 1, 2, 2, 4, 4)
    c.model.num_res_blocks = 3 if size == 128 else 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.2 if size == 128 else 0.0
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 10_000
    c.training.num_steps = 1_000_000
    c.training.batch_size = 256 if size == 128 else 64
    c.training.ckpt_every = 10_000
    c.training.ema_decay = 0.9999
    c.sampling.steps = 50
    if parts[1:] == ["smoke"]:
        smoke(c)
        c.data.image_size = 32
    return c
