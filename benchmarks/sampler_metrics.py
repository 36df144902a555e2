"""Paired sampler errors: each deterministic sampler against the converged flow of the same x_T.

A distance between sample *sets* (sliced W2) has a noise floor of its own and cannot
rank samplers whose error is below that floor; it also rewards a lucky ``x_T`` draw.
For deterministic samplers (DDIM, Heun, DPM-Solver++ at eta = 0) there is a sharper
question: how far is each output from the exact probability-flow image of the *same*
``x_T``? Here that image is a converged reference (adaptive Tsit5 at rtol = atol =
1e-6), checked against a second, independent converged solver (DPM-Solver++ 3M with
1000 log-SNR steps); their gap is reported as the reference's own error. The paired
RMSE (per coordinate) is averaged over several independent ``x_T`` draws, and its
spread over draws is reported next to it. Stochastic samplers draw fresh noise, so
they do not approximate that map (a sampler counts as deterministic when two keys
give the same output); for them the sliced W2 to exact samples is given,
also averaged over draws, next to the exact-vs-exact floor with its spread.

    python benchmarks/samplers.py --paired           # d = 8 mixture, 5 draws of 1,024
    python benchmarks/sampler_metrics.py --quick     # the same, 2 draws of 256, 2 budgets

Prints markdown tables and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import diffjax as dj  # noqa: E402
from diffjax import samplers as S  # noqa: E402

REFERENCE_TOL = 1e-6


def paired_rmse(samples, reference) -> float:
    """Root-mean-square difference per coordinate between paired samples.

    Args:
      samples: ``(N, D)`` outputs of a sampler.
      reference: ``(N, D)`` the reference outputs for the same inputs, row by row.

    Returns:
      ``sqrt(mean((samples - reference)^2))`` as a float.

    Raises:
      ValueError: if the shapes differ or are not ``(N, D)``.
    """
    a, b = np.asarray(samples, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired_rmse: expected two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of per-draw figures."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"mean_and_spread: expected a non-empty 1-D sequence, got shape {v.shape}")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired_errors(run: Callable, reference: Callable, x_t_draws: Sequence) -> list[float]:
    """Paired RMSE of ``run(x_T)`` against ``reference(x_T)`` for each draw of ``x_T``.

    Args:
      run, reference: ``x_T -> samples`` (``(N, D)``), e.g. jitted deterministic samplers.
      x_t_draws: the ``x_T`` arrays, one per draw.

    Returns:
      One paired RMSE per draw.
    """
    return [paired_rmse(run(x), reference(x)) for x in x_t_draws]


def _deterministic(score_fn, sde, sampler):
    fn = jax.jit(lambda x: dj.sample(score_fn, sde, x, key=jax.random.key(0), sampler=sampler))
    return lambda x: np.asarray(fn(x)[0])


def is_deterministic(score_fn, sde, sampler, x) -> bool:
    """Whether ``sampler`` maps ``x`` to the same output under two different keys (eta = 0 kinds)."""
    fn = jax.jit(lambda x, key: dj.sample(score_fn, sde, x, key=key, sampler=sampler)[0])
    return bool(np.array_equal(np.asarray(fn(x, jax.random.key(0))), np.asarray(fn(x, jax.random.key(1)))))


def _cell(values: Sequence[float]) -> str:
    m, s = mean_and_spread(values)
    return f"{m:.4f} ± {s:.4f}"


def paired_report(*, quick: bool, budgets: Sequence[int] | None = None) -> dict:
    """Run the paired table (and the stochastic samplers' sliced W2) on the d = 8 mixture; print it."""
    import gaussians
    from samplers import REFERENCE_FACTOR, sampler_table, sliced_w2

    draws, n = (2, 256) if quick else (5, 1024)
    budgets = list(budgets or ([10, 20] if quick else [5, 10, 20, 50, 100]))
    projections = 128 if quick else 256
    mix = gaussians.mixture(dim=8, k=4, seed=0)
    sde = dj.VPSDE()
    score_fn = mix.score_fn(sde)
    x_ts = [sde.prior_sample(jax.random.key(i), (n, 8)) for i in range(draws)]

    reference = _deterministic(score_fn, sde, S.ProbabilityFlowODE(rtol=REFERENCE_TOL, atol=REFERENCE_TOL))
    check = _deterministic(score_fn, sde, S.DPMSolverPP(1000, order=3, spacing="logsnr"))
    ref_outputs = [reference(x) for x in x_ts]
    cached = dict(zip(map(id, x_ts), ref_outputs))
    ref_fn = lambda x: cached[id(x)]  # noqa: E731
    ref_gap = paired_errors(check, ref_fn, x_ts)
    scale = float(np.sqrt(np.mean(np.concatenate(ref_outputs) ** 2)))

    print(f"# Paired RMSE to the converged flow of the same x_T (d = 8 mixture, {draws} draws of {n}; "
          f"mean ± std over draws)\n")
    print(f"Reference: adaptive ODE at rtol = atol = {REFERENCE_TOL:g}; DPM-Solver++ 3M at 1000 steps differs "
          f"from it by {np.mean(ref_gap):.1e} (mean over draws: the reference's own error); RMS of the samples {scale:.3f}.\n")
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|" + "---|" * (len(budgets) + 1))
    paired: dict[str, dict[str, list[float]]] = {}
    table = sampler_table()
    kinds = {name: is_deterministic(score_fn, sde, make(2), x_ts[0][:8]) for name, (make, _) in table.items()}
    for name, (make, per_step) in table.items():
        if not kinds[name]:
            continue
        row = {}
        for budget in budgets:
            run = _deterministic(score_fn, sde, make(max(1, budget // per_step)))
            row[str(budget)] = paired_errors(run, ref_fn, x_ts)
        paired[name] = row
        print(f"| {name} | " + " | ".join(_cell(v) for v in row.values()) + " |")

    reference_set = mix.sample(jax.random.key(100), REFERENCE_FACTOR * n)
    proj_key = jax.random.key(1234)
    floors = [sliced_w2(mix.sample(jax.random.key(200 + i), n), reference_set, proj_key, projections)
              for i in range(max(draws, 5))]
    print(f"\n# Stochastic samplers: sliced W2 to exact samples, mean ± std over {draws} draws "
          f"(floor, exact vs exact: {_cell(floors)})\n")
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|" + "---|" * (len(budgets) + 1))
    stochastic: dict[str, dict[str, list[float]]] = {}
    for name, (make, per_step) in table.items():
        if kinds[name]:
            continue
        row = {}
        for budget in budgets:
            sampler = make(max(1, budget // per_step))
            fn = jax.jit(lambda x, key, s=sampler: dj.sample(score_fn, sde, x, key=key, sampler=s)[0])
            row[str(budget)] = [sliced_w2(fn(x, jax.random.key(10 + i)), reference_set, proj_key, projections)
                                for i, x in enumerate(x_ts)]
        stochastic[name] = row
        print(f"| {name} | " + " | ".join(_cell(v) for v in row.values()) + " |")
    report = {"benchmark": "sampler_paired", "quick": quick, "draws": draws, "n": n, "budgets": budgets,
              "reference_tol": REFERENCE_TOL, "reference_gap": ref_gap, "sample_rms": scale,
              "paired_rmse": paired, "stochastic_sw2": stochastic, "sw2_floor": floors,
              "device": jax.devices()[0].platform}
    print(json.dumps(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 draws of 256 samples, NFE 10 and 20")
    parser.add_argument("--paired", action="store_true", help="accepted: how benchmarks/samplers.py hands over")
    args = parser.parse_args()
    paired_report(quick=args.quick)


if __name__ == "__main__":
    main()
