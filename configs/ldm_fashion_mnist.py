"""Class-conditional latent diffusion on Fashion-MNIST: 8x8x3 latents of 32x32 images (docs/ldm.md).

::

    python train.py --config configs/autoencoder_fashion_mnist.py --workdir runs/ae_fmnist
    python train.py --config configs/ldm_fashion_mnist.py --workdir runs/ldm_fmnist \\
        --config.autoencoder.workdir=runs/ae_fmnist
    python sample.py --workdir runs/ldm_fmnist --num 8 --output OUT   # 8 images per class

The UNet denoises the autoencoder's latents (scaled by ``1 / std`` of the first
batch's, ``latent.json``) and is conditioned on the class by cross-attention:
each label becomes a learned token (``model.label_conditioning="context"``)
that a cross-attention block after every self-attention block (and in the
middle) attends to; the same network takes any ``(batch, tokens,
context_dim)`` sequence a token encoder gives. Samples are decoded inside the
sampling program.
``:smoke`` runs a few steps of a tiny network (with
``configs/autoencoder_fashion_mnist.py:smoke``).
"""

from configs.default import check_arg, get_base_config
from configs.ldm_photos_sr4 import ldm_base, smoke


def get_config(arg=None):
    check_arg("ldm_fashion_mnist", arg)
    c = ldm_base(get_base_config())
    c.data.name = "fashion_mnist"
    c.data.image_size = 32
    c.data.use_labels = True
    c.task.name = "ldm"
    c.model.base_channels = 64
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (4,)
    c.model.dropout = 0.0
    c.model.context_dim = 64  # cross-attention on class tokens, as LDM's class-conditional models
    c.model.label_conditioning = "context"
    c.model.label_tokens = 1
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.training.num_steps = 2000
    c.training.batch_size = 64
    c.training.log_every = 50
    c.training.ckpt_every = 1000
    c.training.ema_decay = 0.995
    c.sampling.steps = 20
    c.sampling.eta = 0.0  # deterministic DPM-Solver++ for generation
    if arg == "smoke":
        smoke(c)
    return c
