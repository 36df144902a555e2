"""Unconditional DDPM-style model on the 8x8 digits (resized to 16x16): the smallest real run.

``configs/ddpm_digits.py`` trains in a few minutes on two CPU cores;
``configs/ddpm_digits.py:smoke`` runs a few dozen steps of a tiny network in
well under a minute (for tests and for checking an installation).
"""

from configs.default import apply_smoke, check_arg, get_base_config


def get_config(arg=None):
    check_arg("ddpm_digits", arg)
    c = get_base_config()
    c.data.name = "digits"
    c.data.image_size = 16

    c.model.base_channels = 32
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    # Sinusoidal embedding of 1000 t (the DDPM convention) halved FD-AlexNet
    # against Fourier features of t in an 800-step run (30 vs 57).
    c.model.time_embedding = "sinusoidal"
    c.model.time_scale = 1000.0

    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100

    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.log_every = 50
    c.training.ckpt_every = 400
    c.training.sample_every = 400
    c.training.ema_decay = 0.995

    # Ancestral sampling: this small, briefly trained model's probability flow
    # sends about a fifth of the samples to noise under DDIM / DPM-Solver++,
    # while the stochastic sampler's noise corrects those errors (all digits).
    c.sampling.sampler = "ancestral"
    c.sampling.steps = 100
    c.eval.num_samples = 256

    if arg == "smoke":
        apply_smoke(c)
        c.training.num_steps = 30
        c.training.batch_size = 16
        c.training.ckpt_every = 15
        c.training.sample_every = 30
        c.training.num_grid_samples = 16
        c.sampling.steps = 10
        c.sampling.num_samples = 16
        c.sampling.batch_size = 16
        c.eval.num_samples = 32
    return c
