"""Plug-and-play priors on an exact answer: how close the iterates' mean comes to the
posterior mode as steps and the last noise level vary.

Prior: a 4-D Gaussian (``tests/gaussians.py``, seed 0) with its exact eps under the VP
process; constraint: ``||H x - y||^2 / (2 tau^2)`` with ``H`` 2x4, ``tau = 0.5``. The
posterior mode is closed-form. ``--chains`` independent chains start at 0 and run
``dj.tasks.plug_and_play`` (prior gradient "score", linear schedule from T to t_min);
the table gives the distance of their mean from the mode and its standard error.

    python benchmarks/pnp_gaussian.py [--chains 4096]

Prints a markdown table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import diffjax as dj  # noqa: E402
from gaussians import gaussian  # noqa: E402

SETTINGS = ((100, 0.05, 0.05), (300, 0.05, 0.05), (1000, 0.05, 0.01), (300, 0.2, 0.05), (300, 0.02, 0.05))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4096)
    args = parser.parse_args()

    sde, prior = dj.VPSDE(), gaussian(dim=4, seed=0)
    rng = np.random.default_rng(1)
    h, y, tau = rng.normal(size=(2, 4)), 3.0 * rng.normal(size=2), 0.5
    cov, m = prior.covariances[0], prior.means[0]
    prec = np.linalg.inv(cov)
    mode = np.linalg.solve(prec + h.T @ h / tau**2, prec @ m + h.T @ y / tau**2)

    def eps_fn(x, t):
        return -sde.alpha_sigma(t)[1][:, None] * prior.score(x, t, sde)

    def constraint(x):
        return 0.5 * jnp.sum((x @ jnp.asarray(h.T, x.dtype) - jnp.asarray(y, x.dtype)) ** 2) / tau**2

    rows = []
    print("| steps | t_min | learning rate | error of the mean | standard error |")
    print("|---:|---:|---:|---:|---:|")
    for steps, t_min, lr in SETTINGS:
        fn = jax.jit(functools.partial(dj.tasks.plug_and_play, eps_fn, sde, constraint, steps=steps,
                                       learning_rate=lr, t_schedule="linear", t_min=t_min))
        x = np.asarray(fn(jnp.zeros((args.chains, 4)), key=jax.random.key(0)), np.float64)
        err = float(np.linalg.norm(x.mean(0) - mode))
        se = float(np.linalg.norm(x.std(0) / np.sqrt(args.chains)))
        rows.append({"steps": steps, "t_min": t_min, "learning_rate": lr, "error": err, "standard_error": se})
        print(f"| {steps} | {t_min} | {lr} | {err:.3f} | {se:.3f} |")
    print(f"mode distance from the prior mean {np.linalg.norm(mode - m):.3f}, from the constraint's "
          f"least-norm solution {np.linalg.norm(mode - np.linalg.lstsq(h, y, rcond=None)[0]):.3f}")
    print(json.dumps({"benchmark": "pnp_gaussian", "rows": rows}))


if __name__ == "__main__":
    main()
