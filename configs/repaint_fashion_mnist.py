"""The unconditional fashion-mnist model of configs/ddpm_fashion_mnist.py, for RePaint with ``sample.py --input``.

Training is the same; the run records task ``repaint``, so ``sample.py --workdir RUN
--input IN --output OUT`` completes ``x.png`` where ``x_mask.png`` is white, with the
schedule of ``config.task.repaint`` (the paper's 250 levels, jumps of 10, 10 resamplings).
"""

from configs.ddpm_fashion_mnist import get_config as unconditional_config
from configs.repaint_photos import as_repaint


def get_config(arg=None):
    return as_repaint(unconditional_config(arg), arg)
