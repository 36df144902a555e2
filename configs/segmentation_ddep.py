"""DDeP (Brempong et al.): denoising pretraining of a segmentation UNet, then fine-tuning.

Two stages, chosen by the argument:

* ``:pretrain`` trains the UNet to predict the noise of ``sqrt(1 - s^2) x + s eps``
  (``segmentation.noise_scales = (0.2,)``, the paper's best single level; ``(lo, hi)`` draws
  a level per image) on unlabelled images: the scene set, or a user's folder with
  ``--config.data.name=folder --config.data.data_dir=DIR``.
* ``:finetune`` replaces the output layer by one with a channel per class and fine-tunes the
  whole network with cross-entropy on the labelled images:
  ``--config.segmentation.pretrain_workdir=P [--config.segmentation.labelled_dir=L
  --config.data.num_classes=K]``. ``--config.segmentation.init=random`` is the baseline (the
  same fine-tuning from a random initialisation; any pretrain_workdir is then ignored).

``python sample.py --workdir FINETUNE --input IN --output OUT`` writes label and uncertainty
maps as for configs/segmentation_ddpm_features.py. Add ``_smoke`` (``:pretrain_smoke``,
``:finetune_smoke``) for a seconds-long run.
"""

from configs.default import check_arg, get_base_config

ARGS = ("pretrain", "finetune", "pretrain_smoke", "finetune_smoke")


def get_config(arg=None):
    check_arg("segmentation_ddep", arg, ARGS)
    if arg in (None, ""):
        raise ValueError("segmentation_ddep needs a stage: configs/segmentation_ddep.py:pretrain or :finetune")
    stage, smoke = arg.removesuffix("_smoke"), arg.endswith("_smoke")
    c = get_base_config()
    c.task.name = f"ddep_{stage}"
    c.data.name = "scenes"
    c.data.image_size = 32
    c.eval.enabled = False
    # The segmentation UNet (the same for both stages; the fine-tune reads the pretraining's).
    # CPU-sized: 10,000 pretraining steps take 18 min on 2 CPU cores shared with other jobs
    # (about 15 min idle: 3,000 steps took 262 s), a 1,000-step fine-tune 44 s
    # (docs/segmentation.md); scale base_channels up on an accelerator. 600 pretraining steps
    # (the earlier default) gave no gain over random initialisation; 3,000 a small one, 10,000
    # the measured one.
    c.model.base_channels = 16
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.training.num_steps = 10000  # pretraining steps
    c.training.batch_size = 16
    c.training.log_every = 500
    s = c.segmentation
    s.noise_scales = (0.2,)
    if stage == "finetune":
        c.data.num_classes = 11
        s.num_labelled = 20
        s.steps = 1000  # fine-tuning steps (from 300: DDeP gained, random init did not; docs/segmentation.md)
        s.batch_size = 8  # labelled images per step
        s.learning_rate = 5e-4
    if smoke:
        c.model.base_channels = 8
        c.model.channel_mult = (1, 2)
        c.model.attn_resolutions = ()
        c.optim.warmup_steps = 2
        c.training.num_steps = 10
        c.training.batch_size = 4
        c.training.log_every = 5
        s.num_labelled = 2
        s.steps = 10
        s.batch_size = 2
        s.num_eval = 2
    return c
