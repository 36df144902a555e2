"""LSGM on Fashion-MNIST (28x28 resized to 32x32, grayscale): a small VAE with 8x8x4 latents and a
score-based latent prior, trained together (docs/lsgm.md).

``--config.lsgm.prior=normal`` trains the same VAE alone with a standard Normal prior.
The defaults are 1,000 steps of batch 64: the benchmark measured 0.48 steps/s
on 2 CPU cores shared with a dozen other jobs (about 35 minutes there); an
idle machine is faster (not timed).
"""

from configs.default import apply_smoke, check_arg, get_base_config


def get_config(arg=None):
    check_arg("lsgm_fashion_mnist", arg)
    c = get_base_config()
    c.task.name = "lsgm"
    c.data.name = "fashion_mnist"
    c.data.image_size = 32

    # The latent score network: a small UNet on 8x8x4 latents.
    c.model.base_channels = 64
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.model.dropout = 0.0

    c.sde.name = "vp"
    c.lsgm.latent_channels = 4
    c.lsgm.vae_channels = (32, 64)
    c.lsgm.vae_res_blocks = 1

    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0
    c.training.num_steps = 1000
    c.training.batch_size = 64
    c.training.log_every = 50
    c.training.ckpt_every = 250
    c.training.sample_every = 0
    c.training.ema_decay = 0.999

    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.steps = 20
    c.sampling.denoise = False  # latents are decoded at t = eps, the prior's own time
    c.eval.enabled = False  # benchmarks/lsgm.py and benchmarks/likelihood.py evaluate
    if arg == "smoke":
        c = apply_smoke(c)
        c.data.image_size = 32
        c.model.channel_mult = (1,)  # one level: the smallest program to compile
        c.lsgm.vae_channels = (8, 8)
        c.lsgm.latent_channels = 2
        c.training.num_steps = 4
        c.training.batch_size = 4
        c.training.ckpt_every = 4
        c.training.log_every = 2
        c.training.sample_every = 0
        c.sampling.steps = 3
        c.sampling.batch_size = 4
    return c
