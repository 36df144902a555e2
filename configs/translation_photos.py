"""SDEdit on photos: stroke paintings of held-out photos edited by an unconditional photos model.

The defaults are CPU-sized (a base-32 UNet without attention, ``v``-prediction
and SR3's continuous noise levels,
trained on 32x32 colour crops of the photo corpus's training sources), so that
the photo demo can be reproduced on 2 CPU cores; ``:paper`` is the
``configs/ddpm_photos.py``-sized model (base 64, attention, 50,000 steps of 128)
for accelerators. Both sample with the stochastic SDE-DPM-Solver++ that SDEdit
needs. Make stroke paintings with :func:`diffjax.degradations.stroke_painting`, then::

    python train.py --config configs/translation_photos.py --workdir runs/photos_edit
    python sample.py --workdir runs/photos_edit --input PAINTINGS --output EDITS \\
        --config.translation.method=sdedit --config.translation.t0=0.2

or run the demo (``benchmarks/sdedit_photos.py``). ``:smoke`` is a seconds-long
version. docs/translation.md.
"""

from configs.ddpm_fashion_mnist import unconditional_32
from configs.default import apply_smoke, check_arg, cpu_photo_network, noise_level_conditioning


def cpu_sized(c):
    """The CPU demo model: the SR3 photo configs' network size and continuous noise levels, unconditional."""
    noise_level_conditioning(c)
    cpu_photo_network(c, num_steps=2500)
    c.training.log_every = 100
    c.training.sample_every = 0
    return c


def get_config(arg=None):
    check_arg("translation_photos", arg, ("smoke", "paper"))
    c = unconditional_32("photos")
    if arg != "paper":
        cpu_sized(c)
    c.model.prediction = "v"
    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.eta = 1.0  # SDEdit's stochastic reverse SDE
    c.sampling.steps = 50
    # At 32x32 the VP process's sigma(0.5) = 0.96 leaves little of a painting's colours
    # (benchmarks/sdedit_photos.py: SSIM to the photo 0.09 at 0.5, 0.29 at 0.2); the
    # paper's 0.5 is for 256x256 images, whose regions survive more noise.
    c.translation.t0 = 0.2
    return apply_smoke(c) if arg == "smoke" else c
