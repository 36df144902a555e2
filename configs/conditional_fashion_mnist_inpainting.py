"""Fashion-MNIST inpainting with a conditional score estimator (CDE, CDiffE or CMDE; Batzolis et al.).

``python train.py --config configs/conditional_fashion_mnist_inpainting.py:cmde --workdir runs/inp``
trains on 28x28 grayscale (padded to 32x32) with Palette's masks and condition (known pixels, noise
in the hole, the mask as a channel); ``:cde`` (default), ``:cdiffe``, ``:cmde`` pick the estimator,
``:<method>_smoke`` / ``:smoke`` run a few steps of a tiny network. ``python sample.py --workdir
runs/inp --input IN --output OUT`` fills ``x.png`` where ``x_mask.png`` is white, as for Palette.
"""

from configs.conditional_photos_sr import METHODS, conditional_task
from configs.default import apply_smoke, check_arg
from configs.palette_common import palette_config
from configs.sr3_photos_x4 import get_config as sr3_x4_config

_SHARED_WITH_SR = {
    "model": ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions"),
    "optim": ("lr", "warmup_steps"),
    "training": ("num_steps", "batch_size", "log_every", "ckpt_every", "ema_decay"),
}


def get_config(arg=None):
    arg = "cde" if arg in (None, "") else arg
    check_arg("conditional_fashion_mnist_inpainting", arg,
              METHODS + tuple(f"{m}_smoke" for m in METHODS) + ("smoke",))
    method = "cde" if arg == "smoke" else arg.removesuffix("_smoke")
    c = conditional_task(palette_config("palette_inpainting"), "conditional_inpainting", method)
    c.data.name = "fashion_mnist"
    c.data.image_size = 32
    # CPU-sized: the network and training budget of configs/sr3_photos_x4.py.
    ref = sr3_x4_config()
    for section, keys in _SHARED_WITH_SR.items():
        for key in keys:
            c[section][key] = ref[section][key]
    c.sampling.steps = 40
    if arg.endswith("smoke"):
        apply_smoke(c)
        c.training.sample_every = 0
        c.data.image_size = 16
    return c
