"""x4 super-resolution on the bundled photo crops with a conditional score estimator (Batzolis et al.).

``python train.py --config configs/conditional_photos_sr.py:cde --workdir runs/cde_x4`` (or
``:cdiffe``, ``:cmde``) trains 8x8 -> 32x32 RGB with the estimator named by the argument;
``:cde_smoke`` (``:cdiffe_smoke``, ``:cmde_smoke``; ``:smoke`` = ``:cde_smoke``) runs a few
steps of a tiny network. Then ``python sample.py --workdir runs/cde_x4 --input LOW_RES_DIR
--output OUT_DIR`` super-resolves a folder of PNGs, exactly as for SR3.

Everything but the estimator is configs/sr3_photos_x4.py (same network, batch, steps, v-prediction,
SR3's noise levels, stochastic DPM-Solver++ at 40 steps), so the three estimators and SR3 compare
at equal size and budget (benchmarks/conditional.py). CDE is SR3's estimator; CDiffE diffuses the
condition with the same VP process; CMDE with its own VE process, ``sigma_max_y = 1`` as in the
paper, and the network is told ``sigma_y(t)``.

Training time: the network, batch and 1500 steps of sr3_photos_x4.py, which trains in 7.5 minutes on
2 idle CPU cores (docs/sr.md); the conditional losses add one Gaussian draw per step. Measured here
only on a shared machine (load average 25-35 on 2 cores): 2-17 images/s (0.1-1 step/s at batch 16),
so the 15-minute budget holds only on idle cores; docs/conditional.md.
"""

from configs.default import check_arg
from configs.sr3_photos_x4 import get_config as sr3_x4_config
from configs.sr3_photos_x4 import smoke as sr3_smoke

METHODS = ("cde", "cdiffe", "cmde")


def conditional_task(c, task: str, method: str):
    """Point ``c`` at conditional task ``task`` (``conditional_sr`` / ``conditional_inpainting``) with ``method``."""
    c.task.name = task
    c.task[task].method = method
    return c


def get_config(arg=None):
    arg = "cde" if arg in (None, "") else arg
    check_arg("conditional_photos_sr", arg, METHODS + tuple(f"{m}_smoke" for m in METHODS) + ("smoke",))
    method = "cde" if arg == "smoke" else arg.removesuffix("_smoke")
    c = conditional_task(sr3_x4_config(), "conditional_sr", method)
    c.task.conditional_sr.scale = 4
    if arg.endswith("smoke"):
        sr3_smoke(c)
        c.data.image_size = 16
    return c
