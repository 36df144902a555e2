"""Latent diffusion at the paper's sizes on a TFDS dataset prepared on disk, for GPUs / TPUs (docs/ldm.md).

Arguments: ``sr4`` (x4 super-resolution 64x64 -> 256x256 on a KL-f4 autoencoder:
the low-resolution image concatenated to the 64x64x3 latent, as LDM-SR) or
``cin`` (class-conditional ImageNet on KL-f4 latents, the class as a cross-attention token), optionally followed by
``,smoke``. Name the autoencoder (``configs/autoencoder_tfds.py``) with
``--config.autoencoder.workdir``; without one the config still builds the
network from the declared ``config.autoencoder`` shapes (e.g. to count its
parameters) but refuses to train. Eps-prediction, the linear DDPM schedule of
1000 steps and DDIM sampling, as the paper. Not trained in this repository.
"""

from configs.default import get_base_config
from configs.ldm_photos_sr4 import smoke


def get_config(arg=None):
    parts = [p for p in (arg or "sr4").split(",") if p]
    if parts[0] not in ("sr4", "cin") or parts[1:] not in ([], ["smoke"]):
        raise ValueError(f"ldm_tfds takes 'sr4' or 'cin', optionally with ',smoke'; got {arg!r}")
    c = get_base_config()
    c.data.name = "tfds:imagenet2012"
    c.data.image_size = 256
    c.autoencoder.base_channels = 128
    c.autoencoder.channel_mult = (1, 2, 4)  # f = 4: 64x64x3 latents
    c.autoencoder.num_res_blocks = 2
    c.autoencoder.z_channels = 3
    c.sde.name = "discrete"
    c.sde.beta_start = 0.0015  # the paper's "linear" schedule for latents
    c.sde.beta_end = 0.0195
    c.loss.kind = "discrete"
    c.loss.time_input = "index"
    c.model.time_embedding = "sinusoidal"
    c.model.prediction = "eps"
    c.model.base_channels = 160 if parts[0] == "sr4" else 192
    c.model.channel_mult = (1, 2, 2, 4)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16, 8)
    c.model.num_heads = 8 if parts[0] == "sr4" else 4
    c.task.name = "ldm_sr" if parts[0] == "sr4" else "ldm"
    c.data.use_labels = parts[0] == "cin"
    if parts[0] == "cin":  # class tokens through cross-attention, as LDM's cin models
        c.model.context_dim = 512
        c.model.label_conditioning = "context"
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 10_000
    c.training.num_steps = 1_000_000
    c.training.batch_size = 64
    c.training.ckpt_every = 10_000
    c.training.sample_every = 0
    c.training.ema_decay = 0.9999
    c.sampling.sampler = "ddim"
    c.sampling.steps = 100
    c.eval.enabled = False
    if parts[1:] == ["smoke"]:
        smoke(c)
        c.data.image_size = 32
        c.autoencoder.base_channels = 8
        c.model.num_heads = 1
    return c
