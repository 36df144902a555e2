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
