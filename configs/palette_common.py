"""What every Palette config shares: photos at 32x32, a conditional UNet, no grids.

``train.py``'s sample grids and end-of-training evaluation draw unconditional
samples, which a conditional model cannot make, so Palette configs turn them off
(``training.sample_every = 0``, ``eval.enabled = False``); ``benchmarks/restoration.py``
and ``sample.py --input`` evaluate the models instead.
"""

from configs.default import get_base_config, noise_level_conditioning


def palette_config(task: str, arg=None):
    """The config of Palette task ``task`` (``config.task.name``), full size or ``smoke``."""
    c = get_base_config()
    c.task.name = task
    c.data.name = "photo_corpus"  # held-out-by-source evaluation split (diffjax/data/corpus.py)
    c.data.image_size = 32

    c.model.base_channels = 64
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.0

    c.optim.lr = 2e-4
    c.optim.warmup_steps = 1000
    c.training.num_steps = 50_000
    c.training.batch_size = 128
    c.training.ckpt_every = 2500
    c.training.sample_every = 0
    c.training.ema_decay = 0.9999
    c.eval.enabled = False

    # As the CPU-sized SR3 configs (docs/sr.md): v-prediction, whose implied x0
    # stays accurate at high noise after short training where an eps-network's is
    # amplified by sigma / alpha; continuous noise levels (SR3's gamma sampling,
    # the network sees gamma) so any sampler and step count work; stochastic
    # DPM-Solver++ (eta = 1) at 20 steps.
    c.model.prediction = "v"
    noise_level_conditioning(c)

    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.steps = 20
    c.sampling.eta = 1.0
    c.sampling.batch_size = 16

    if arg == "smoke":
        c.model.base_channels = 8
        c.model.channel_mult = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = ()
        c.optim.warmup_steps = 5
        c.training.num_steps = 20
        c.training.batch_size = 8
        c.training.log_every = 10
        c.training.ckpt_every = 20
        c.training.ema_decay = 0.9
        c.sampling.steps = 5
        c.sampling.batch_size = 8
    elif arg not in (None, ""):
        raise ValueError(f"{task} configs take no argument or 'smoke', got {arg!r}")
    return c
