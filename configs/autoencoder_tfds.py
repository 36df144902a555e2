"""The paper's first stages (KL-f4 / KL-f8) on a TFDS dataset prepared on disk, for GPUs / TPUs (docs/ldm.md).

Arguments: ``f4`` (default; 256x256 -> 64x64x3) or ``f8`` (-> 32x32x4), optionally
followed by ``,smoke`` for a tiny network. ``--config.data.name=tfds:<name>``
(default ``tfds:imagenet2012``; ``tfds build`` it first: training never
downloads). Sized as Rombach et al.'s autoencoders (128 channels, multipliers
1, 2, 4 (, 4), two residual blocks per level, KL weight 1e-6, LPIPS weight 1,
the patch discriminator from step 50001). Not trained in this repository: on a
CPU use ``configs/autoencoder_photos.py``.
"""

from configs.autoencoder_photos import autoencoder_base, smoke
from configs.default import get_base_config


def get_config(arg=None):
    parts = [p for p in (arg or "f4").split(",") if p]
    if parts[0] not in ("f4", "f8") or parts[1:] not in ([], ["smoke"]):
        raise ValueError(f"autoencoder_tfds takes 'f4' or 'f8', optionally with ',smoke'; got {arg!r}")
    c = autoencoder_base(get_base_config(), f8=parts[0] == "f8")
    c.data.name = "tfds:imagenet2012"
    c.data.image_size = 256
    a = c.autoencoder
    a.base_channels = 128
    a.channel_mult = (1, 2, 4, 4) if parts[0] == "f8" else (1, 2, 4)
    a.num_res_blocks = 2
    a.disc_start = 50_001
    a.disc_weight = 0.5
    a.perceptual_net = "vgg"  # the paper's LPIPS uses VGG16
    c.optim.lr = 4.5e-6 * 12  # the paper's base rate times its batch size
    c.optim.warmup_steps = 0
    c.training.num_steps = 500_000
    c.training.batch_size = 12
    c.training.ckpt_every = 10_000
    c.training.ema_decay = 0.999
    c.training.log_every = 100
    if parts[1:] == ["smoke"]:
        smoke(c)
        c.data.image_size = 32
    return c
