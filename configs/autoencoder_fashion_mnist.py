"""The first stage of latent diffusion on Fashion-MNIST (32x32, f = 4: 8x8x3 latents); docs/ldm.md.

``python train.py --config configs/autoencoder_fashion_mnist.py --workdir runs/ae_fmnist``
(the reconstruction PSNR / LPIPS of test images at the end, in ``metrics.json``);
``:smoke`` runs a few steps of a tiny network. The class-conditional second
stage is ``configs/ldm_fashion_mnist.py``.
"""

from configs.autoencoder_photos import autoencoder_base, smoke
from configs.default import check_arg, get_base_config


def get_config(arg=None):
    check_arg("autoencoder_fashion_mnist", arg)
    c = autoencoder_base(get_base_config())
    c.data.name = "fashion_mnist"
    c.data.image_size = 32  # 28 -> 32: the latent grid (8x8) halves cleanly in the diffusion UNet
    c.training.num_steps = 1000
    c.training.batch_size = 32
    c.training.ckpt_every = 500
    if arg == "smoke":
        smoke(c)
    return c
