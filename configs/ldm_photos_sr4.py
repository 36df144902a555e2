"""Latent-diffusion super-resolution x4 on photo_corpus crops: 16x16 -> 64x64 (docs/ldm.md).

Train the first stage, then this::

    python train.py --config configs/autoencoder_photos.py --workdir runs/ae_photos
    python train.py --config configs/ldm_photos_sr4.py --workdir runs/ldm_sr4 \\
        --config.autoencoder.workdir=runs/ae_photos
    python sample.py --workdir runs/ldm_sr4 --input LOW_RES_DIR --output OUT_DIR

The diffusion UNet works on the autoencoder's 16x16x3 latent of the 64x64
target (f = 4) and takes the 16x16 low-resolution input (antialiased bicubic,
8-bit, as SR3's) concatenated to it: at f = 4 and x4 the latent grid is the
low-resolution grid. The latents are scaled by ``1 / std`` of the first batch's
(``latent.json``). Like the CPU-sized SR3 configs the network predicts ``v``
and samples with the stochastic DPM-Solver++; ``:smoke`` runs a few steps of a
tiny network (with ``configs/autoencoder_photos.py:smoke``).
"""

from configs.default import check_arg, cpu_photo_network, get_base_config, noise_level_conditioning
from configs.sr3_photos_x4 import smoke as sr3_smoke


def ldm_base(c):
    """What the latent-diffusion configs share (the process, prediction and sampler of the CPU SR3 configs)."""
    c.model.prediction = "v"
    noise_level_conditioning(c)
    c.loss.norm = "l2"
    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.eta = 1.0
    c.sampling.steps = 40
    c.sampling.spacing = "logsnr"
    # Grids and the FD demo are pixel-space; benchmarks/ldm.py evaluates the latent model.
    c.training.sample_every = 0
    c.eval.enabled = False
    return c


def smoke(c):
    """A few steps of a tiny network (installation check and tests): SR3's smoke sizes."""
    sr3_smoke(c)
    c.sampling.batch_size = 4
    return c


def get_config(arg=None):
    check_arg("ldm_photos_sr4", arg)
    c = ldm_base(get_base_config())
    c.data.name = "photo_corpus"
    c.data.image_size = 64
    c.task.name = "ldm_sr"
    c.task.ldm_sr.scale = 4
    cpu_photo_network(c, num_steps=1500)
    if arg == "smoke":
        smoke(c)
        c.data.image_size = 32
    return c
