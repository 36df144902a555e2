"""The unconditional photos model of configs/ddpm_photos.py, for RePaint with ``sample.py --input``.

It trains on the ``photo_corpus`` dataset (multi-scale crops of photos from several
sources; its ``test`` split holds other sources, see docs/data.md).

Training is the same; the run records task ``repaint``, so ``sample.py --workdir RUN
--input IN --output OUT`` completes ``x.png`` where ``x_mask.png`` is white, with the
schedule of ``config.task.repaint`` (the paper's 250 levels, jumps of 10, 10 resamplings).
"""

from configs.ddpm_photos import get_config as unconditional_config


def as_repaint(c, arg=None):
    """Record task ``repaint`` on an unconditional config (a short schedule for ``:smoke``)."""
    c.task.name = "repaint"
    if arg == "smoke":
        c.task.repaint.steps = 10
        c.task.repaint.jump_length = 2
        c.task.repaint.jump_n_sample = 2
    return c


def get_config(arg=None):
    c = as_repaint(unconditional_config(arg), arg)
    c.data.name = "photo_corpus"  # the restoration corpus, evaluated on held-out sources (docs/data.md)
    return c
