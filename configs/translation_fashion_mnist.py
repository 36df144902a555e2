"""Unpaired translation on Fashion-MNIST: sneakers (class 7) -> ankle boots (class 9), 32x32 grey.

Two runs, one config file:

* ``:score``: the unconditional score model of the *target* domain only
  (``data.classes = (target,)``), used by SDEdit and EGSDE;
* ``:classifier``: EGSDE's time-dependent domain classifier, trained with
  cross-entropy on noised images of both domains (``data.classes = (source,
  target)``: the source is class 0, the target class 1).

``:score_smoke`` and ``:classifier_smoke`` are seconds-long versions. The
domains are config keys: ``--config.data.classes="(7,)"`` etc. Commands and
figures: docs/translation.md.

    python train.py --config configs/translation_fashion_mnist.py:score --workdir runs/boots
    python train.py --config configs/translation_fashion_mnist.py:classifier --workdir runs/boots_cls
    python sample.py --workdir runs/boots --input IN --output OUT \\
        --config.translation.method=egsde --config.translation.classifier_workdir=runs/boots_cls
"""

from configs.default import apply_smoke, check_arg, get_base_config

SOURCE, TARGET = 7, 9  # sneaker, ankle boot
ARGS = ("score", "classifier", "score_smoke", "classifier_smoke")


def _common():
    c = get_base_config()
    c.data.name = "fashion_mnist"
    c.data.image_size = 32
    c.model.time_embedding = "fourier"
    c.optim.grad_clip = 1.0
    c.training.log_every = 100
    c.sampling.sampler = "dpm_solver_pp"
    c.sampling.eta = 1.0  # the stochastic reverse SDE: SDEdit's and EGSDE's sampler
    c.sampling.steps = 50
    c.translation.t0 = 0.5
    c.translation.down_factor = 4  # an 8x8 low-pass image, as the paper's 256 / 32
    return c


def score_config():
    """The target-domain score model (a small v-predicting UNet)."""
    c = _common()
    c.data.classes = (TARGET,)
    c.model.base_channels = 16
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.model.dropout = 0.0
    c.model.prediction = "v"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.training.num_steps = 1500
    c.training.batch_size = 64
    c.training.ckpt_every = 250
    c.training.sample_every = 500
    c.training.ema_decay = 0.999
    c.eval.num_samples = 256
    return c


def classifier_config():
    """The time-dependent domain classifier of source and target."""
    c = _common()
    c.task.name = "domain_classifier"
    c.data.classes = (SOURCE, TARGET)
    c.model.base_channels = 16
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.training.num_steps = 400
    c.training.batch_size = 64
    c.training.ckpt_every = 100
    c.training.sample_every = 0  # a classifier draws no samples
    c.training.ema_decay = 0.99
    c.eval.enabled = False
    return c


def get_config(arg=None):
    check_arg("translation_fashion_mnist", arg, allowed=ARGS)
    if arg in (None, ""):
        raise ValueError(f"translation_fashion_mnist needs an argument, one of {list(ARGS)} (e.g. ':score')")
    c = score_config() if arg.startswith("score") else classifier_config()
    if arg.endswith("smoke"):
        c = apply_smoke(c)
        if arg.startswith("classifier"):
            c.training.sample_every = 0
            c.eval.enabled = False
    return c
