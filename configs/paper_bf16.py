"""DDPM at the paper's 256x256 size (LSUN / CelebA-HQ network) in bfloat16, for TPUs and GPUs (docs/training.md).

Parameters and optimizer state in float32, convolutions, matmuls and activations
in bfloat16 (``model.dtype``), GroupNorm and softmax statistics in float32.
Every block is rematerialised (``model.remat``) and parameters, EMA and Adam
state are split over the devices (``sharding.fsdp``). The UNet: base 128,
channel multipliers (1, 1, 2, 2, 4, 4), 2 residual blocks per level, attention
at 16x16 (about 114M parameters). Images come from a folder on shared storage
(``--config.data.data_dir``; any sizes, scaled and center-cropped) or from
``--config.data.name=tfds:<name>``. ``:smoke`` shrinks it to a CPU-sized run.
Not trained in this repository.
"""

from configs.default import apply_smoke, check_arg, get_base_config


def get_config(arg=None):
    check_arg("paper_bf16", arg)
    c = get_base_config()
    c.data.name = "folder"
    c.data.image_size = 256
    c.data.channels = 3
    c.data.crop = "center"
    c.model.base_channels = 128
    c.model.channel_mult = (1, 1, 2, 2, 4, 4)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.0
    c.model.time_embedding = "sinusoidal"
    c.model.time_scale = 1000.0
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = True
    c.sharding.fsdp = True
    c.sde.name = "discrete"
    c.loss.kind = "discrete"
    c.loss.time_input = "index"
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 5000
    c.training.num_steps = 500_000
    c.training.batch_size = 64
    c.training.grad_accum = 1
    c.training.ckpt_every = 5000
    c.training.sample_every = 0
    c.training.ema_decay = 0.9999
    c.eval.enabled = False
    if arg == "smoke":
        apply_smoke(c)
        c.data.name = "digits"
        c.data.image_size = 16
        c.data.channels = 0
        c.eval.enabled = False
    return c
