"""Unconditional model on Fashion-MNIST, 28x28 resized to 32x32 (grayscale).

Class-conditional variants (docs/unet.md):

* ``labels``: the ten classes through the label embedding (added to the time embedding);
* ``xattn``: the classes as context tokens read by cross-attention
  (``model.context_dim = 64``, ``model.label_conditioning = "context"``).

Each takes ``,smoke`` too (e.g. ``xattn,smoke``); ``smoke`` alone is the
unconditional smoke run.
"""

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


def class_conditional(c, by: str):
    """Make ``c`` class-conditional: ``by="labels"`` (label embedding) or ``"xattn"`` (context tokens)."""
    c.data.use_labels = True
    # Training-time grids and the end-of-training FD sample unconditionally (the null
    # label, which these runs never train): off. Sample per class with run.generate(n, labels=)
    # or sample.py --num K (K images per class).
    c.training.sample_every = 0
    c.eval.enabled = False
    if by == "xattn":
        c.model.context_dim = 64
        c.model.label_conditioning = "context"
        c.model.label_tokens = 1
    return c


def get_config(arg=None):
    check_arg("ddpm_fashion_mnist", arg, ("smoke", "labels", "xattn", "labels,smoke", "xattn,smoke"))
    parts = (arg or "").split(",")
    variant = parts[0] if parts[0] in ("labels", "xattn") else None
    rest = parts[1:] if variant else [p for p in parts if p]
    c = unconditional_32("fashion_mnist")
    if variant:
        class_conditional(c, variant)
    if rest == ["smoke"]:
        apply_smoke(c)
        if variant:
            c.training.sample_every = 0
        if variant == "xattn":
            c.model.context_dim = 16
    return c
