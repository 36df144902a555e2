"""Fit the ``spacing="fitted"`` time grids (Align-Your-Steps style) on the exact-score problem.

For each sampler family and step count N, the grid is parametrised by N
log-SNR increments ``softmax(theta)`` (so it is always decreasing in t and
spans the whole ``[lambda(T), lambda(eps)]``), and ``theta`` is fitted by Adam
to minimise the mean squared distance between the sampler's output and the
exact probability-flow image of the same prior draws. The "exact" image is a
200-step third-order UniPC run (its own error is below 1e-5, far under any
low-NFE sampler's). Every step keeps at least a tenth of an equal log-SNR step,
and the best grid seen over the Adam iterations is kept. Data: the Gaussian mixture ``tests/gaussians.mixture(dim=8,
k=4, seed=1)``, a different mixture from the benchmark's seed 0, under the VP
process (beta 0.1-20); 4096 prior draws. The fit starts from the log-SNR grid.

At very few steps a sampler cannot follow the flow (UniPC-2 at N = 5 stays at mean
squared error 0.12 on every grid Nelder-Mead finds from 32 starts), and the grid
that is closest path by path is not the one whose samples are closest in
distribution. ``--refine-sw2 N[,N...]`` therefore refines the stored grids of those
step counts for the benchmark's own measure: sliced W2 (128 directions) of 40,000
samples to 16x as many exact ones of the same seed-1 mixture, by Nelder-Mead from
the stored grid (Adam on the same objective with fresh draws at every step only
wandered around the point Nelder-Mead finds). A full refit writes the path fits
again, so rerun ``--refine-sw2 5`` after one.

The result is written into ``diffjax/samplers/schedules.py`` (between the
GENERATED markers) as data; the package never runs this script.

    python benchmarks/fit_schedule.py            # all families, N = 3..20 (minutes)
    python benchmarks/fit_schedule.py --quick    # 2 step counts, few iterations, prints only
    # in parallel processes, then one write:
    python benchmarks/fit_schedule.py --families unipc2,unipc3 --no-write > a.log
    python benchmarks/fit_schedule.py --families dpmpp2,dpmpp3 --no-write > b.log
    python benchmarks/fit_schedule.py --from-logs a.log,b.log
    python benchmarks/fit_schedule.py --families unipc2 --refine-sw2 5   # then refine N = 5 for sliced W2

Prints a table of the loss before/after per (family, N) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import diffjax as dj  # noqa: E402
import gaussians  # noqa: E402
from diffjax import samplers as S  # noqa: E402

FAMILIES = {
    # family key of schedules.FITTED -> the sampler for N steps
    "unipc2": lambda n: S.UniPC(n, order=2),
    "unipc3": lambda n: S.UniPC(n, order=3),
    "dpmpp2": lambda n: S.DPMSolverPP(n, order=2),
    "dpmpp3": lambda n: S.DPMSolverPP(n, order=3),
}
STEPS = (3, 4, 5, 6, 7, 8, 10, 12, 15, 20)


# Every step keeps at least this share of an equal log-SNR step, so no step
# collapses (DPM-Solver++'s step ratios divide by the step size).
MIN_STEP_SHARE = 0.1


def fractions(theta):
    n = theta.shape[0]
    inc = MIN_STEP_SHARE / n + (1.0 - MIN_STEP_SHARE) * jax.nn.softmax(theta)
    return jnp.concatenate([jnp.zeros(1, theta.dtype), jnp.cumsum(inc)])


def grid(sde, theta):
    lam0, lam1 = sde.log_snr(jnp.float32(sde.T)), sde.log_snr(jnp.float32(sde.eps))
    ts = sde.t_from_log_snr(lam0 + (lam1 - lam0) * fractions(theta))
    return ts.at[0].set(sde.T).at[-1].set(sde.eps)


def fit(sampler, sde, score_fn, x, target, iters: int, lr: float):
    def loss(theta):
        y = sampler.run_on_times(score_fn, sde, x, grid(sde, theta), key=jax.random.key(0))
        return jnp.mean((y - target) ** 2)

    opt = optax.adam(lr)

    @jax.jit
    def train(theta):
        def body(carry, _):
            theta, state, best, best_value = carry
            value, grad = jax.value_and_grad(loss)(theta)
            ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
            better = ok & (value < best_value)
            best, best_value = jnp.where(better, theta, best), jnp.where(better, value, best_value)
            updates, new_state = opt.update(jnp.where(ok, grad, 0.0), state)
            return (optax.apply_updates(theta, updates), new_state, best, best_value), value

        init = (theta, opt.init(theta), theta, jnp.float32(jnp.inf))
        (_, _, best, best_value), values = jax.lax.scan(body, init, None, length=iters)
        return best, values, best_value

    theta0 = jnp.zeros(sampler.steps, jnp.float32)
    theta, values, final = train(theta0)
    return theta, float(values[0]), float(final)


def refine_sw2(sampler, sde, score_fn, mix, start: np.ndarray, maxiter: int = 400):
    """Nelder-Mead on the grid's softmax parameters for the sliced W2 of the samples (see the docstring).

    Returns ``(interior fractions, sliced W2 at the start, sliced W2 at the end)``.
    """
    import scipy.optimize

    n, draws, projections = 20_000, 2, 128
    x = jnp.concatenate([sde.prior_sample(jax.random.key(11 + i), (n, 8)) for i in range(draws)])
    # The benchmark's pairing of sorted samples with the reference's quantiles (16x as many).
    from samplers import sorted_reference

    dirs, quantiles = sorted_reference(mix.sample(jax.random.key(99), 16 * draws * n), draws * n,
                                       jax.random.key(7), projections)

    @jax.jit
    def sw2(theta):
        y = sampler.run_on_times(score_fn, sde, x, grid(sde, theta), key=jax.random.key(0))
        return jnp.sqrt(jnp.mean((jnp.sort(y @ dirs, axis=0) - quantiles) ** 2))

    # Invert `fractions` at the stored grid (increments below the floor share clip to it).
    inc = np.diff(start)
    theta0 = np.log(np.maximum((inc - MIN_STEP_SHARE / len(inc)) / (1.0 - MIN_STEP_SHARE), 1e-6))
    objective = lambda t: float(sw2(jnp.asarray(t, jnp.float32)))  # noqa: E731
    result = scipy.optimize.minimize(objective, theta0, method="Nelder-Mead",
                                     options=dict(maxiter=maxiter, xatol=1e-4, fatol=1e-6))
    best = result.x if result.fun < objective(theta0) else theta0
    return np.asarray(fractions(jnp.asarray(best, jnp.float32)))[1:-1], objective(theta0), objective(best)


def write_table(table: dict) -> str:
    path = os.path.join(ROOT, "diffjax", "samplers", "schedules.py")
    lines = ["# BEGIN GENERATED"]
    for family, rows in table.items():
        lines.append(f"FITTED[{family!r}] = {{")
        for n, frac in rows.items():
            lines.append(f"    {n}: ({', '.join(f'{v:.5f}' for v in frac)},),")
        lines.append("}")
    lines.append("# END GENERATED")
    text = open(path).read()
    text = re.sub(r"# BEGIN GENERATED.*# END GENERATED", "\n".join(lines), text, flags=re.S)
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N in (4, 8), 20 iterations, nothing written")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--no-write", action="store_true", help="print only; do not write schedules.py")
    parser.add_argument("--refine-sw2", default="", help="comma-separated step counts whose stored grids are "
                        "refined for sliced W2 (Nelder-Mead) instead of fitted afresh")
    parser.add_argument("--from-logs", default="", help="comma-separated logs of earlier runs: write their tables")
    args = parser.parse_args()
    if args.from_logs:
        table = {}
        for path in args.from_logs.split(","):
            last = json.loads([ln for ln in open(path).read().splitlines() if ln.startswith("{")][-1])
            table.update({f: {int(n): v for n, v in rows.items()} for f, rows in last["fitted"].items()})
        print(f"written to {write_table(table)}")
        return
    families = args.families.split(",")
    if not families or any(f not in FAMILIES for f in families):
        parser.error(f"--families must be a comma-separated subset of {','.join(FAMILIES)}")
    steps = (4, 8) if args.quick else STEPS
    iters = 20 if args.quick else args.iters

    mix = gaussians.mixture(dim=8, k=4, seed=1)
    sde = dj.VPSDE()
    score_fn = mix.score_fn(sde)
    x = sde.prior_sample(jax.random.key(11), (4096, 8))
    exact = jax.jit(lambda x: dj.sample(score_fn, sde, x, key=jax.random.key(0), sampler=S.UniPC(200, order=3, spacing="logsnr"))[0])(x)

    if args.refine_sw2:
        from diffjax.samplers.schedules import FITTED, fitted_fractions

        table = {f: {n: list(v) for n, v in rows.items()} for f, rows in FITTED.items()}
        print("| family | N | sliced W2 on the stored grid | sliced W2 on the refined grid |")
        print("|---|---|---|---|")
        for family in families:
            for n in (int(v) for v in args.refine_sw2.split(",")):
                frac, before, after = refine_sw2(FAMILIES[family](n), sde, score_fn, mix, fitted_fractions(family, n))
                table.setdefault(family, {})[n] = [float(v) for v in frac]
                print(f"| {family} | {n} | {before:.4f} | {after:.4f} |", flush=True)
            table[family] = dict(sorted(table[family].items()))
        if not args.no_write:
            print(f"\nwritten to {write_table(table)}")
        print(json.dumps({"benchmark": "fit_schedule", "refine_sw2": args.refine_sw2, "fitted": table}))
        return

    table: dict[str, dict[int, list[float]]] = {}
    print("| family | N | MSE on the log-SNR grid | MSE on the fitted grid |")
    print("|---|---|---|---|")
    for family in families:
        table[family] = {}
        for n in steps:
            theta, before, after = fit(FAMILIES[family](n), sde, score_fn, x, exact, iters, args.lr)
            frac = np.asarray(fractions(theta))[1:-1]
            table[family][n] = [float(v) for v in frac]
            print(f"| {family} | {n} | {before:.3e} | {after:.3e} |", flush=True)
    if not args.quick and not args.no_write:
        print(f"\nwritten to {write_table(table)}")
    print(json.dumps({"benchmark": "fit_schedule", "quick": args.quick, "iters": iters, "lr": args.lr, "fitted": table}))


if __name__ == "__main__":
    main()
