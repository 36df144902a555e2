"""Unconditional model on Fashion-MNIST, 28x28 resized to 32x32 (grayscale)."""

from configs.default import apply_smoke, check_arg, get_base_config


def unconditional_32(dataset: str):
    """The 32x32 unconditional setting shared by the Fashion-MNIST and photos configs."""
    c = get_base_config()
    c.data.name = dataset
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
    return c


def get_config(arg=None):
    check_arg("ddpm_fashion_mnist", arg)
    c = unconditional_32("fashion_mnist")
    return apply_smoke(c) if arg == "smoke" else c
