"""Pixel classifiers on DDPM features (Baranchuk et al.): few labelled images, 11 classes.

``python train.py --config configs/segmentation_ddpm_features.py --workdir S
--config.segmentation.backbone_workdir=DDPM_RUN [--config.segmentation.labelled_dir=L
--config.data.num_classes=K]`` computes the features of the labelled images with the UNet of
``DDPM_RUN`` (an unconditional run, e.g. ``configs/ddpm_scenes.py``) at
``segmentation.times``, trains an ensemble of ``segmentation.num_members`` MLPs on them and
reports the held-out mIoU; ``python sample.py --workdir S --input IN --output OUT`` then
writes ``name_label.png`` and ``name_uncertainty.png`` for every image of ``IN``.

``--config.segmentation.features=pixels|random_unet`` gives the baselines (raw pixels; a
randomly initialised UNet of the backbone's shape). Without ``labelled_dir`` the labelled
images are the procedural scenes (32x32 RGB; evaluation on held-out backgrounds).
"""

from configs.default import check_arg, get_base_config


def get_config(arg=None):
    check_arg("segmentation_ddpm_features", arg)
    c = get_base_config()
    c.task.name = "segmentation_features"
    c.data.name = "scenes"
    c.data.image_size = 32
    c.data.num_classes = 11
    # The random UNet's architecture when features=random_unet has no backbone_workdir to
    # copy (the CPU-sized backbone of benchmarks/segmentation.py).
    c.model.base_channels = 16
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.eval.enabled = False  # the segmentation run's own evaluation (mIoU) always runs
    s = c.segmentation
    s.features = "ddpm"
    s.times = (0.05, 0.15, 0.25)  # the paper's t = 50, 150, 250 of 1000
    s.blocks = ("up_1", "up_2", "up_3", "up_4")
    s.num_labelled = 20
    s.num_members = 10
    s.steps = 600
    s.batch_size = 512
    if arg == "smoke":
        c.model.base_channels = 8
        c.model.channel_mult = (1, 2)
        c.model.attn_resolutions = ()
        s.blocks = ("up_1", "up_2")
        s.times = (0.1, 0.3)
        s.num_labelled = 2
        s.num_members = 2
        s.steps = 20
        s.batch_size = 64
        s.num_eval = 2
    return c
