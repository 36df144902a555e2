"""benchmarks/sampler_metrics.py: the paired error to the exact flow of the same x_T."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

import diffjax as dj
from exact_flow import gaussian_flow_map
from gaussians import gaussian

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from sampler_metrics import mean_and_spread, paired_errors, paired_rmse  # noqa: E402


def test_paired_rmse_and_spread_closed_form():
    a = np.zeros((4, 2))
    b = np.array([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [3.0, 1.0]])
    assert paired_rmse(a, b) == pytest.approx(np.sqrt((2 + 2 + 2 + 10) / 8))
    # Pairing matters: the same rows in another order are far apart.
    assert paired_rmse(b, b) == 0.0 and paired_rmse(b, b[::-1]) > 1.0
    assert mean_and_spread([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_and_spread([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        paired_rmse(a, b[:3])


def test_paired_errors_against_the_closed_form_gaussian_flow():
    """With Gaussian data the exact flow map is known: the paired error is 0 for it and
    shrinks with DPM-Solver++'s step count, draw by draw."""
    g = gaussian(dim=4, seed=0)
    sde = dj.VPSDE()
    exact = lambda x: np.asarray(gaussian_flow_map(g, sde, x, sde.T, sde.eps))  # noqa: E731
    draws = [sde.prior_sample(jax.random.key(i), (128, 4)) for i in range(3)]

    def solver(steps):
        fn = jax.jit(lambda x: dj.sample(g.score_fn(sde), sde, x, key=jax.random.key(0),
                                         sampler=dj.samplers.DPMSolverPP(steps, order=2))[0])
        return lambda x: np.asarray(fn(x))

    assert paired_errors(exact, exact, draws) == [0.0, 0.0, 0.0]
    coarse, fine = paired_errors(solver(5), exact, draws), paired_errors(solver(40), exact, draws)
    assert all(f < 0.02 for f in fine)
    assert all(c > 4 * f for c, f in zip(coarse, fine))
