"""Time schedules fitted once on the exact-score problem (Align-Your-Steps style).

Each entry of ``FITTED[family][steps]`` is the ``steps - 1`` interior points of
a decreasing time grid, written as fractions of the half log-SNR range:
``lambda_i = lambda(t_start) + f_i (lambda(t_end) - lambda(t_start))``, so
``f_0 = 0`` and ``f_steps = 1`` are implied. The numbers are *data*, written by
``benchmarks/fit_schedule.py``, which minimises the mean squared distance
between the sampler's output and the exact probability-flow image of the same
prior draws on the Gaussian mixture of ``tests/gaussians.mixture`` (d = 8,
K = 4, seed 1: a different mixture from the benchmark's seed 0) under the VP
process (beta 0.1-20, [1e-3, 1]); see docs/samplers.md for the procedure.
One entry is refined further: ``unipc2`` at 5 steps, where no grid lets the
sampler follow the flow path by path, was refined by Nelder-Mead for the sliced
W2 of its samples on the same seed-1 mixture (``fit_schedule.py --refine-sw2 5``;
on the benchmark's seed-0 mixture 2.90x the noise floor against 3.35x before).

For step counts without a fit, :func:`fitted_fractions` interpolates the
nearest fitted grid linearly in log-SNR against the step index (the log-linear
interpolation Align Your Steps uses). Under other processes the same fractions
of *their* log-SNR range are used: the fit is for the VP process, and only
approximately transfers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FITTED", "fitted_fractions"]

# family -> steps -> interior log-SNR fractions (generated; do not edit by hand).
FITTED: dict[str, dict[int, tuple[float, ...]]] = {}
# BEGIN GENERATED
FITTED['unipc2'] = {
    3: (0.34253, 0.62319,),
    4: (0.29820, 0.35319, 0.49198,),
    5: (0.25847, 0.27847, 0.46195, 0.58680,),
    6: (0.27183, 0.33878, 0.42613, 0.55118, 0.63902,),
    7: (0.25696, 0.33400, 0.39691, 0.51066, 0.60331, 0.72282,),
    8: (0.19286, 0.27568, 0.35537, 0.42636, 0.55463, 0.63723, 0.79200,),
    10: (0.19702, 0.27305, 0.32869, 0.36759, 0.41428, 0.47112, 0.56904, 0.63698, 0.74882,),
    12: (0.14222, 0.25559, 0.31049, 0.35918, 0.39196, 0.42441, 0.48330, 0.54778, 0.62994, 0.69351, 0.78788,),
    15: (0.08502, 0.16972, 0.25576, 0.31709, 0.35089, 0.38817, 0.41260, 0.44835, 0.50402, 0.56752, 0.65374, 0.72034, 0.79080, 0.88254,),
    20: (0.05559, 0.11106, 0.16618, 0.22054, 0.27712, 0.32960, 0.35829, 0.38657, 0.40786, 0.44260, 0.49718, 0.55786, 0.62882, 0.66866, 0.71594, 0.76927, 0.82508, 0.88247, 0.94089,),
}
FITTED['unipc3'] = {
    3: (0.34253, 0.62319,),
    4: (0.29820, 0.35319, 0.49198,),
    5: (0.26330, 0.32883, 0.40217, 0.52624,),
    6: (0.23299, 0.31714, 0.39449, 0.47844, 0.58447,),
    7: (0.23643, 0.33467, 0.41379, 0.54266, 0.59672, 0.70547,),
    8: (0.18850, 0.30112, 0.37090, 0.42621, 0.55894, 0.59424, 0.71520,),
    10: (0.15000, 0.27355, 0.34727, 0.39975, 0.45460, 0.57347, 0.61725, 0.68448, 0.81138,),
    12: (0.12736, 0.24614, 0.33057, 0.38017, 0.42803, 0.49335, 0.54597, 0.65812, 0.69377, 0.76601, 0.86962,),
    15: (0.06743, 0.13561, 0.21053, 0.28454, 0.34076, 0.38607, 0.42547, 0.48010, 0.54012, 0.60433, 0.65994, 0.75067, 0.84013, 0.90756,),
    20: (0.08406, 0.17085, 0.24444, 0.29203, 0.32535, 0.36106, 0.39069, 0.41750, 0.44390, 0.47252, 0.50168, 0.53946, 0.57629, 0.62360, 0.66258, 0.72098, 0.79443, 0.85675, 0.91658,),
}
# END GENERATED


def fitted_fractions(family: str, steps: int) -> np.ndarray:
    """The ``steps + 1`` log-SNR fractions ``0 = f_0 < ... < f_steps = 1`` of a fitted grid.

    Args:
      family: a key of :data:`FITTED` (the sampler the grid was fitted for).
      steps: number of steps, ``>= 1``.

    Returns:
      float64 array of shape ``(steps + 1,)``.

    Raises:
      ValueError: on an unknown ``family`` or one with no fitted grids.
    """
    table = FITTED.get(family)
    if not table:
        raise ValueError(f"no fitted schedule for {family!r}; fitted families: {sorted(k for k, v in FITTED.items() if v)}")
    if steps in table:
        return np.concatenate([[0.0], np.asarray(table[steps], np.float64), [1.0]])
    # Nearest fitted step count (ties go to the larger, finer grid).
    ref = min(table, key=lambda n: (abs(n - steps), -n))
    ref_frac = np.concatenate([[0.0], np.asarray(table[ref], np.float64), [1.0]])
    return np.interp(np.linspace(0.0, 1.0, steps + 1), np.linspace(0.0, 1.0, ref + 1), ref_frac)
