"""The first stage of latent diffusion on photo_corpus crops: a KL autoencoder, f = 4 (docs/ldm.md).

``python train.py --config configs/autoencoder_photos.py --workdir runs/ae_photos`` trains
on 64x64 crops of the training sources (a 3-channel 16x16 latent) and logs the
reconstruction PSNR / LPIPS of held-out-source crops at the end
(``metrics.json``). Check it with ``python sample.py --workdir runs/ae_photos --input IN
--output OUT`` (any PNG; sizes not divisible by f are reflect-padded and cropped back).
Arguments: ``f8`` (three stride-2 levels, 8x8x4 latents), ``smoke`` (a few steps
of a tiny network), or both as ``f8,smoke``.
"""

from configs.default import get_base_config


def autoencoder_base(c, *, f8: bool = False):
    """What the autoencoder configs share: the task, an f = 4 (or 8) KL first stage, no diffusion evaluation."""
    c.task.name = "autoencoder"
    a = c.autoencoder
    a.base_channels = 32
    a.channel_mult = (1, 2, 2, 4) if f8 else (1, 2, 2)
    a.num_res_blocks = 1
    a.z_channels = 4 if f8 else 3  # the paper's f=4 model has 3 latent channels, its f=8 one 4
    a.kl_weight = 1e-6
    a.perceptual_weight = 1.0
    a.disc_start = -1  # the patch GAN is off on CPU; e.g. --config.autoencoder.disc_start=2000 turns it on
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 50
    c.training.sample_every = 0  # no diffusion samples to draw
    c.training.ema_decay = 0.99
    c.training.log_every = 50
    return c


def smoke(c):
    """A few steps of a tiny network (installation check and tests)."""
    c.autoencoder.base_channels = 8
    c.autoencoder.eval_num = 8
    c.optim.warmup_steps = 1
    c.training.num_steps = 3
    c.training.batch_size = 4
    c.training.log_every = 1
    c.training.ckpt_every = 3
    c.training.ema_decay = 0.5
    return c


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    if not set(parts) <= {"f8", "smoke"}:
        raise ValueError(f"autoencoder_photos takes no argument, 'f8', 'smoke' or 'f8,smoke'; got {arg!r}")
    c = autoencoder_base(get_base_config(), f8="f8" in parts)
    c.data.name = "photo_corpus"  # held-out-by-source evaluation split (diffjax/data/corpus.py)
    c.data.image_size = 64
    c.training.num_steps = 1200
    c.training.batch_size = 16
    c.training.ckpt_every = 600
    if "smoke" in parts:
        smoke(c)
        c.data.image_size = 32
    return c
