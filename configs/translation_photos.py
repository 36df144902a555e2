"""SDEdit on photos: stroke paintings of held-out photos edited by an unconditional photos model.

The model is ``configs/ddpm_photos.py``'s (32x32 colour crops of scikit-image's
photos, v-prediction here so that few-minute CPU runs give usable clean-image
estimates), sampled with the stochastic SDE-DPM-Solver++ that SDEdit needs.
Make stroke paintings with :func:`diffjax.degradations.stroke_painting`, then::

    python train.py --config configs/translation_photos.py --workdir runs/photos_edit
    python sample.py --workdir runs/photos_edit --input PAINTINGS --output EDITS \\
        --config.translation.method=sdedit --config.translation.t0=0.5

``:smoke`` is a seconds-long version. docs/translation.md.
"""

from configs.ddpm_fashion_mnist import unconditional_32
from configs.default import apply_smoke, check_arg


def get_config(arg=None):
    check_arg("translation_photos", arg)
    c = unconditional_32("photos")
    c.model.prediction = "v"
    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.eta = 1.0  # SDEdit's stochastic reverse SDE
    c.sampling.steps = 50
    c.translation.t0 = 0.5
    return apply_smoke(c) if arg == "smoke" else c
