"""Sampler benchmark on a Gaussian mixture with an exact score.

Data: ``tests/gaussians.mixture`` (d = 8, K = 4, unequal weights, distinct
covariances), VP process. The figure of merit is the sliced Wasserstein-2
distance between the sampler's output and exact samples, next to the
exact-vs-exact noise floor of the same sample size.

The default run is the low-NFE study: every sampler / time grid at NFE 3-20,
N = 20,000 samples from each of several prior draws (seeds), the mean and
spread over seeds, the ratio to the floor, and a PNG plot. ``--wide`` runs the
older wide-budget table instead (NFE 5-1000, N = 4096, every sampler family),
then the adaptive probability-flow ODE at several tolerances, time per score
evaluation and the loop's own overhead against the score function's cost.

    python benchmarks/samplers.py                 # low-NFE study + plot
    python benchmarks/samplers.py --quick         # 3 budgets, N = 4096, 2 seeds
    python benchmarks/samplers.py --wide          # the wide-budget table
    python benchmarks/samplers.py --overhead-only

Prints markdown tables and ends with one JSON line; the main figure (sliced W2 against
NFE, one line per sampler, with the noise floor) goes to ``--figure``
(default ``outputs/benchmarks/samplers_nfe.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import diffjax as dj  # noqa: E402
import gaussians  # noqa: E402
from diffjax import samplers as S  # noqa: E402
from diffjax.plots import plot_error_vs_nfe  # noqa: E402


def sliced_w2(samples: jax.Array, reference: jax.Array, key: jax.Array, projections: int) -> float:
    """Sliced W2 from ``samples`` (N) to a reference set of k * N exact samples.

    Along each random direction the 1-D W2 pairs the sorted samples with the
    reference's quantiles at the same levels ``(i + 1/2) / N``; a reference k
    times larger keeps its own sampling noise out of the figure. The squared
    distances are averaged over directions, then square-rooted.
    """
    n = samples.shape[0]
    k = reference.shape[0] // n
    if reference.shape[0] != k * n or k < 1:
        raise ValueError(f"reference size must be a multiple of {n}, got {reference.shape[0]}")
    dirs = jax.random.normal(key, (samples.shape[1], projections), samples.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
    ps = jnp.sort(samples @ dirs, axis=0)
    pr = jnp.sort(reference @ dirs, axis=0)[k // 2 :: k]
    return float(jnp.sqrt(jnp.mean((ps - pr) ** 2)))


# name -> (constructor from a step count, score evaluations per step). The
# per-step cost sets the step count for an NFE budget, so budgets are matched
# honestly (the table shows the NFE actually spent).
REFERENCE_FACTOR = 16


def sampler_table():
    return {
        "EulerMaruyama": (lambda n: S.EulerMaruyama(n), 1),
        "ReverseDiffusion": (lambda n: S.ReverseDiffusion(n), 1),
        "PredictorCorrector": (lambda n: S.PredictorCorrector(n, snr=0.16, corrector_steps=1), 2),
        "Ancestral": (lambda n: S.Ancestral(n), 1),
        "DDIM": (lambda n: S.DDIM(n, eta=0.0), 1),
        "Heun": (lambda n: S.Heun(n), 2),
        "DPM++1 logsnr": (lambda n: S.DPMSolverPP(n, order=1, spacing="logsnr"), 1),
        "DPM++2M logsnr": (lambda n: S.DPMSolverPP(n, order=2, spacing="logsnr"), 1),
        "DPM++3M logsnr": (lambda n: S.DPMSolverPP(n, order=3, spacing="logsnr"), 1),
        "DPM++2M quadratic": (lambda n: S.DPMSolverPP(n, order=2, spacing="quadratic"), 1),
        "DPM++3M quadratic": (lambda n: S.DPMSolverPP(n, order=3, spacing="quadratic"), 1),
        "DPM++2M uniform": (lambda n: S.DPMSolverPP(n, order=2, spacing="uniform"), 1),
    }


# Low-NFE study: name -> constructor from an NFE budget (None: the budget is too small).
LOW_NFE = (3, 4, 5, 6, 7, 8, 10, 12, 15, 20)


def low_nfe_table():
    heun = lambda spacing: lambda b: S.Heun(b // 2, spacing=spacing) if b >= 2 else None  # noqa: E731
    return {
        "DDIM": lambda b: S.DDIM(b),
        "DPM++2M logsnr": lambda b: S.DPMSolverPP(b, order=2, spacing="logsnr"),
        "DPM++3M logsnr": lambda b: S.DPMSolverPP(b, order=3, spacing="logsnr"),
        "DPM++3M logsnr, no lower-order final": lambda b: S.DPMSolverPP(b, order=3, spacing="logsnr", lower_order_final=False),
        "DPM++3M quadratic": lambda b: S.DPMSolverPP(b, order=3, spacing="quadratic"),
        "DPM++2M karras": lambda b: S.DPMSolverPP(b, order=2, spacing="karras"),
        "DPM++3M karras": lambda b: S.DPMSolverPP(b, order=3, spacing="karras"),
        "DPM++2M fitted": lambda b: S.DPMSolverPP(b, order=2, spacing="fitted"),
        "DPM++3M fitted": lambda b: S.DPMSolverPP(b, order=3, spacing="fitted"),
        "UniPC-2 logsnr": lambda b: S.UniPC(b, order=2, spacing="logsnr"),
        "UniPC-3 logsnr": lambda b: S.UniPC(b, order=3, spacing="logsnr"),
        "UniPC-3 bh1 logsnr": lambda b: S.UniPC(b, order=3, spacing="logsnr", variant="bh1"),
        "UniPC-2 karras": lambda b: S.UniPC(b, order=2, spacing="karras"),
        "UniPC-3 karras": lambda b: S.UniPC(b, order=3, spacing="karras"),
        "UniPC-2 fitted": lambda b: S.UniPC(b, order=2, spacing="fitted"),
        "UniPC-3 fitted": lambda b: S.UniPC(b, order=3, spacing="fitted"),
        "Heun uniform": heun("uniform"),
        "Heun logsnr": heun("logsnr"),
        "Heun karras": heun("karras"),
        # What a user gets with default arguments.
        "default UniPC(n)": lambda b: S.UniPC(b),
        "default DPMSolverPP(n)": lambda b: S.DPMSolverPP(b),
        "default Heun(n // 2)": lambda b: S.Heun(b // 2) if b >= 2 else None,
    }


def sorted_reference(reference: jax.Array, n: int, key: jax.Array, projections: int):
    """Directions and the reference's projected quantiles at levels ``(i + 1/2) / n``, once.

    The same pairing as :func:`sliced_w2`, with the (large) reference sorted only once.
    """
    k = reference.shape[0] // n
    dirs = jax.random.normal(key, (reference.shape[1], projections), reference.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
    return dirs, jnp.sort(reference @ dirs, axis=0)[k // 2 :: k]


@jax.jit
def _sw2_against(samples, dirs, quantiles):
    return jnp.sqrt(jnp.mean((jnp.sort(samples @ dirs, axis=0) - quantiles) ** 2))


def low_nfe_study(*, quick: bool, seeds: int, n: int, projections: int, plot: str | None, rows: str = "",
                  budgets=None) -> dict:
    """Sliced W2 of every low-NFE sampler over ``seeds`` prior draws of ``n`` samples each."""
    budgets = tuple(budgets or ((5, 10, 20) if quick else LOW_NFE))
    mix = gaussians.mixture(dim=8, k=4, seed=0)
    sde = dj.VPSDE()
    score_fn = mix.score_fn(sde)
    reference = mix.sample(jax.random.key(100), REFERENCE_FACTOR * n)
    dirs, quantiles = sorted_reference(reference, n, jax.random.key(1234), projections)
    del reference
    sw2 = lambda y: float(_sw2_against(y, dirs, quantiles))  # noqa: E731
    # As many exact sets as prior draws (at least 8): the floor's mean is then as precise
    # as the rows' means (at N = 20,000 one set's figure moves by a third of itself with
    # how many samples land in each mode).
    floors = [sw2(mix.sample(jax.random.key(200 + i), n)) for i in range(max(8, seeds))]
    floor = float(np.mean(floors))
    x_T = jnp.stack([sde.prior_sample(jax.random.key(s), (n, 8)) for s in range(seeds)])

    def evaluate(sampler):
        run = jax.jit(jax.vmap(lambda x: dj.sample(score_fn, sde, x, key=jax.random.key(1), sampler=sampler)))
        y, info = run(x_T)
        return [sw2(y[i]) for i in range(seeds)], int(info["nfe"][0])

    # What each seed's prior draw converges to under the exact flow (a 200-step UniPC-3).
    converged, _ = evaluate(S.UniPC(200, order=3, spacing="logsnr"))
    print(
        f"# Low NFE: sliced W2 to exact samples (N={n} per seed, {seeds} seeds, {projections} projections, "
        f"reference {REFERENCE_FACTOR}N)\n\nnoise floor {floor:.4f} (std {np.std(floors):.4f} over {len(floors)} "
        f"exact sets); exact flow of the same prior draws {np.mean(converged):.4f} +- {np.std(converged):.4f} "
        f"({np.mean(converged) / floor:.2f}x the floor)\n\nCells: mean over seeds / floor (std over seeds / floor).\n"
    )
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|" + "---|" * (len(budgets) + 1))
    results: dict[str, dict[str, dict]] = {}
    for name, make in low_nfe_table().items():
        if rows and not re.search(rows, name):
            continue
        row = {}
        for b in budgets:
            try:
                sampler = make(b)
            except ValueError as e:  # e.g. no fitted grid for this family
                print(f"<!-- {name} at NFE {b} skipped: {e} -->")
                continue
            if sampler is None:
                continue
            values, nfe = evaluate(sampler)
            row[str(b)] = {"nfe": nfe, "sw2": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
        results[name] = row
        print(format_row(name, row, budgets, floor), flush=True)
    report = summarise(results, budgets, floor, converged, plot)
    return {
        "n": n,
        "seeds": seeds,
        "projections": projections,
        "noise_floor": floor,
        "noise_floor_runs": floors,
        "converged_flow": converged,
        "budgets": list(budgets),
        "sw2": results,
        "targets": report,
    }


def format_row(name: str, row: dict, budgets, floor: float) -> str:
    """One markdown row: mean / floor (std / floor) per budget, [n] where the NFE spent differs."""
    cells = []
    for b in budgets:
        c = row.get(str(b))
        if c is None:
            cells.append("-")
            continue
        cell = f"{c['mean'] / floor:.2f} ({c['std'] / floor:.2f})"
        cells.append(cell + ("" if c["nfe"] == b else f" [{c['nfe']}]"))
    return f"| {name} | " + " | ".join(cells) + " |"


def print_rows(results: dict, budgets, floor: float) -> None:
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|" + "---|" * (len(budgets) + 1))
    for name, row in results.items():
        print(format_row(name, row, budgets, floor))


def summarise(results: dict, budgets, floor: float, converged, plot: str | None) -> dict:
    """Targets and best-per-NFE of a low-NFE table; writes the plot."""
    print("\n[n] = NFE actually spent where the budget is not a multiple of the per-step cost.")

    def ratio(name, b):
        c = results.get(name, {}).get(str(b))
        return None if c is None else c["mean"] / floor

    def value(name, b):
        c = results.get(name, {}).get(str(b))
        return None if c is None else c["mean"]

    targets = {
        "default_unipc_10nfe_ratio": ratio("default UniPC(n)", 10),
        "default_dpmpp_10nfe_ratio": ratio("default DPMSolverPP(n)", 10),
        "default_unipc_5nfe_sw2": value("default UniPC(n)", 5),
        "default_dpmpp_5nfe_sw2": value("default DPMSolverPP(n)", 5),
        "default_heun_20nfe_ratio": ratio("default Heun(n // 2)", 20),
        "converged_flow_ratio": float(np.mean(converged)) / floor,
    }
    # The sharper figure for deterministic samplers: excess over the exact flow of the same draws.
    excess = {}
    for name, row in results.items():
        excess[name] = {b: float(np.mean(np.asarray(c["sw2"]) / np.asarray(converged))) for b, c in row.items()}
    targets["ratio_to_converged_flow_same_draws"] = excess
    best = {}
    for b in budgets:
        cands = {k: v[str(b)]["mean"] for k, v in results.items() if str(b) in v}
        if cands:
            k = min(cands, key=cands.get)
            best[str(b)] = {"sampler": k, "ratio": cands[k] / floor}
    targets["best_per_nfe"] = best
    print("\n# Targets (ratios to the floor's mean)\n")
    for k, v in targets.items():
        print(f"- {k}: {v}")
    if plot:
        write_plot(plot, results, budgets, floor, float(np.mean(converged)))
        print(f"\nplot written to {plot}")
    return targets


def merge_logs(paths: list[str], plot: str | None) -> dict:
    """Join the final JSON lines of several low-NFE runs (same N, seeds, floor) into one report."""
    runs = [json.loads([ln for ln in open(p).read().splitlines() if ln.startswith("{")][-1]) for p in paths]
    first = runs[0]
    for r in runs[1:]:
        if (r["n"], r["seeds"], r["noise_floor"]) != (first["n"], first["seeds"], first["noise_floor"]):
            raise ValueError(f"runs differ in n / seeds / floor: {paths}")
    results = {}
    for r in runs:
        results.update(r["sw2"])
    budgets = sorted({int(b) for r in runs for b in r["budgets"]})
    floor, converged = first["noise_floor"], first["converged_flow"]
    print(f"# Low NFE (merged from {len(runs)} runs): N={first['n']} per seed, {first['seeds']} seeds; noise floor "
          f"{floor:.4f}; exact flow of the same prior draws {np.mean(converged):.4f} +- {np.std(converged):.4f} "
          f"({np.mean(converged) / floor:.2f}x the floor)\n\nCells: mean over seeds / floor (std over seeds / floor).\n")
    print_rows(results, budgets, floor)
    targets = summarise(results, budgets, floor, converged, plot)
    return dict(first, budgets=budgets, sw2=results, targets=targets, merged_from=paths)


def write_plot(path: str, results: dict, budgets, floor: float, converged: float) -> None:
    """Ratio to the floor against NFE for the main samplers (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = ["DDIM", "DPM++2M logsnr", "DPM++3M logsnr", "DPM++3M karras", "UniPC-3 logsnr", "UniPC-3 karras",
             "UniPC-3 fitted", "DPM++2M karras", "Heun uniform", "Heun karras", "default UniPC(n)",
             "default DPMSolverPP(n)", "default Heun(n // 2)"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name in shown:
        row = results.get(name, {})
        bs = [b for b in budgets if str(b) in row]
        if not bs:
            continue
        mean = np.array([row[str(b)]["mean"] for b in bs]) / floor
        std = np.array([row[str(b)]["std"] for b in bs]) / floor
        style = "-" if name.startswith("default") else "--"
        ax.errorbar(bs, mean, yerr=std, fmt=style + "o", ms=3, capsize=2, label=name, lw=2 if style == "-" else 1)
    ax.axhline(1.0, color="k", lw=0.8, label="noise floor")
    ax.axhline(1.3, color="gray", ls=":", lw=0.8, label="1.3x floor")
    ax.axhline(converged / floor, color="tab:gray", lw=0.8, ls="-.", label="exact flow of the same draws")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(list(budgets))
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("score evaluations (NFE)")
    ax.set_ylabel("sliced W2 / noise floor")
    ax.set_title("Gaussian mixture (d=8, K=4), VP, exact score")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compiled_sampler(score_fn, sde, sampler):
    return jax.jit(lambda x, key: dj.sample(score_fn, sde, x, key=key, sampler=sampler))


def time_call(fn, *args, repeats: int) -> float:
    """Fastest wall time of ``fn(*args)`` over ``repeats`` calls after a warm-up (seconds).

    The minimum, not the median: on a shared machine other work only ever adds
    time, so the fastest run is the least contaminated estimate.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def mlp_score_fn(dim: int, width: int, depth: int):
    """A network-sized stand-in score (random MLP) for the overhead measurement only."""
    keys = jax.random.split(jax.random.key(7), depth + 1)
    sizes = [dim + 1] + [width] * depth + [dim]
    weights = [jax.random.normal(k, (i, o)) / np.sqrt(i) for k, i, o in zip(keys, sizes[:-1], sizes[1:])]

    def fn(x, t):
        h = jnp.concatenate([x, t[:, None]], axis=1)
        for w in weights[:-1]:
            h = jax.nn.silu(h @ w)
        return h @ weights[-1]

    return fn


def loop_overhead(score_fn, sde, sampler, dim: int, batch: int, repeats: int) -> dict:
    """Sampler time against nfe x (the score alone), both jitted, after warm-up.

    The score's cost is measured as ``nfe`` chained calls inside one compiled
    ``lax.scan`` (no per-call dispatch), so the overhead is what the sampler's
    own arithmetic, random draws and bookkeeping add per step.
    """
    x = sde.prior_sample(jax.random.key(0), (batch, dim))
    run = compiled_sampler(score_fn, sde, sampler)
    nfe = int(run(x, jax.random.key(1))[1]["nfe"])

    @jax.jit
    def scores_only(x):
        t = jnp.full((batch,), 0.5, x.dtype)

        def body(y, _):
            return score_fn(y, t), None

        return jax.lax.scan(body, x, None, length=nfe)[0]

    # Interleave the two measurements so both see the same machine load.
    sampler_fn = lambda x: run(x, jax.random.key(1))[0]  # noqa: E731
    t_sampler, t_scores = [], []
    for _ in range(repeats):
        t_sampler.append(time_call(sampler_fn, x, repeats=1))
        t_scores.append(time_call(scores_only, x, repeats=1))
    t_sampler, t_scores = min(t_sampler), min(t_scores)
    return {"nfe": nfe, "sampler_s": t_sampler, "scores_s": t_scores, "overhead": t_sampler / t_scores - 1.0}


def overhead_table(sde, mix, *, quick: bool) -> dict:
    """Print and return the loop-overhead table (batch 256)."""
    score_fn = mix.score_fn(sde)
    print("\n# Loop overhead at batch 256: sampler time / (NFE x score alone) - 1\n")
    print("| score function | sampler | NFE | sampler ms | scores alone ms | overhead |")
    print("|---|---|---|---|---|---|")
    overhead_cases = {
        "exact mixture": score_fn,
        "MLP 3x512 (stand-in network)": mlp_score_fn(8, 512, 3),
    }
    overhead_samplers = {
        "DPM++2M": S.DPMSolverPP(100, order=2),
        "EulerMaruyama": S.EulerMaruyama(100),
        "PredictorCorrector": S.PredictorCorrector(50),
        "Heun": S.Heun(50),
        "Ancestral": S.Ancestral(100),
        "DDIM": S.DDIM(100),
        "ProbabilityFlowODE": S.ProbabilityFlowODE(),
    }
    if quick:
        overhead_samplers = {"DPM++2M": overhead_samplers["DPM++2M"]}
    overhead = {}
    for score_name, fn in overhead_cases.items():
        for sampler_name, sampler in overhead_samplers.items():
            o = loop_overhead(fn, sde, sampler, dim=8, batch=256, repeats=5 if quick else 10)
            overhead[f"{score_name} / {sampler_name}"] = o
            print(
                f"| {score_name} | {sampler_name} | {o['nfe']} | {1e3 * o['sampler_s']:.2f} | "
                f"{1e3 * o['scores_s']:.2f} | {100 * o['overhead']:.1f}% |"
            )

    return overhead


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer budgets, samples and projections")
    parser.add_argument("--overhead-only", action="store_true", help="only the loop-overhead table")
    parser.add_argument("--figure", default="outputs/benchmarks/samplers_nfe.png", help="PNG of sliced W2 against NFE (--wide table)")
    parser.add_argument("--wide", action="store_true", help="the wide-budget table (NFE 5-1000, N = 4096)")
    parser.add_argument("--seeds", type=int, default=None, help="prior draws in the low-NFE study (default 16; quick 2)")
    parser.add_argument("--n", type=int, default=None, help="samples per seed in the low-NFE study (default 20000)")
    parser.add_argument("--plot", default="docs/samplers_low_nfe.png", help="PNG path of the low-NFE plot ('' = none)")
    parser.add_argument("--rows", default="", help="regex: only the low-NFE rows whose name matches")
    parser.add_argument("--budgets", default="", help="comma-separated NFE budgets of the low-NFE study")
    parser.add_argument("--merge", default="", help="comma-separated logs of low-NFE runs: print them as one")
    args = parser.parse_args()
    if args.merge:
        out = merge_logs(args.merge.split(","), args.plot or None)
        print(json.dumps({"benchmark": "samplers_low_nfe", **out, "device": jax.devices()[0].platform}))
        return
    if not args.wide and not args.overhead_only:
        seeds = args.seeds or (2 if args.quick else 16)
        n = args.n or (4096 if args.quick else 20000)
        if seeds < 1 or n < 16:
            parser.error(f"--seeds must be >= 1 and --n >= 16, got --seeds {seeds} --n {n}")
        out = low_nfe_study(quick=args.quick, seeds=seeds, n=n, projections=128, plot=args.plot or None, rows=args.rows,
                            budgets=[int(b) for b in args.budgets.split(",")] if args.budgets else None)
        print(json.dumps({"benchmark": "samplers_low_nfe", "quick": args.quick, **out, "device": jax.devices()[0].platform}))
        return
    if args.overhead_only:
        overhead = overhead_table(dj.VPSDE(), gaussians.mixture(dim=8, k=4, seed=0), quick=args.quick)
        print(json.dumps({"benchmark": "samplers_overhead", "overhead": overhead, "device": jax.devices()[0].platform}))
        return

    budgets = [10, 100] if args.quick else [5, 10, 20, 50, 100, 1000]
    n = 2048 if args.quick else 4096
    projections = 128 if args.quick else 256
    tolerances = [1e-3] if args.quick else [1e-2, 1e-3, 1e-5]

    mix = gaussians.mixture(dim=8, k=4, seed=0)
    sde = dj.VPSDE()
    score_fn = mix.score_fn(sde)
    proj_key = jax.random.key(1234)

    reference = mix.sample(jax.random.key(100), REFERENCE_FACTOR * n)
    # The floor: fresh exact sets of the same size N scored the same way.
    floors = [sliced_w2(mix.sample(jax.random.key(200 + i), n), reference, proj_key, projections) for i in range(8)]
    floor = float(np.mean(floors))
    x_T = sde.prior_sample(jax.random.key(0), (n, 8))

    results: dict[str, dict[str, dict]] = {}
    seconds_per_nfe: dict[str, float] = {}
    print(
        f"# Sliced W2 to exact samples (N={n}, {projections} projections, reference {REFERENCE_FACTOR}N); "
        f"noise floor {floor:.4f} (std {np.std(floors):.4f} over {len(floors)} exact sets)\n"
    )
    header = "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |"
    print(header)
    print("|" + "---|" * (len(budgets) + 1))
    for name, (make, per_step) in sampler_table().items():
        row = {}
        for budget in budgets:
            steps = max(1, budget // per_step)
            run = compiled_sampler(score_fn, sde, make(steps))
            y, info = run(x_T, jax.random.key(1))
            y = jax.block_until_ready(y)
            row[str(budget)] = {"nfe": int(info["nfe"]), "sw2": sliced_w2(y, reference, proj_key, projections)}
            if budget == budgets[-1]:
                elapsed = time_call(lambda x: run(x, jax.random.key(1))[0], x_T, repeats=2)
                seconds_per_nfe[name] = elapsed / int(info["nfe"])
        results[name] = row
        cells = [
            f"{c['sw2']:.4f}" + ("" if c["nfe"] == int(b) else f" ({c['nfe']})") for b, c in row.items()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n(n) = NFE actually spent where the budget is not a multiple of the per-step cost.\n")

    print("# Adaptive probability-flow ODE (Tsit5)\n")
    print("| rtol = atol | NFE | accepted steps | rejected | sliced W2 |")
    print("|---|---|---|---|---|")
    ode_rows = []
    for tol in tolerances:
        run = compiled_sampler(score_fn, sde, S.ProbabilityFlowODE(rtol=tol, atol=tol))
        y, info = run(x_T, jax.random.key(1))
        row = {
            "tol": tol,
            "nfe": int(info["nfe"]),
            "steps": int(info["steps"]),
            "rejected": int(info["rejected_steps"]),
            "sw2": sliced_w2(y, reference, proj_key, projections),
        }
        ode_rows.append(row)
        print(f"| {tol:g} | {row['nfe']} | {row['steps']} | {row['rejected']} | {row['sw2']:.4f} |")

    print(f"\n# Time per NFE at batch {n} (NFE {budgets[-1]} runs, fastest of 2, after warm-up)\n")
    print("| sampler | µs per NFE |")
    print("|---|---|")
    for name, sec in seconds_per_nfe.items():
        print(f"| {name} | {1e6 * sec:.1f} |")

    overhead = overhead_table(sde, mix, quick=args.quick)

    dpm10 = {k: v["10"]["sw2"] for k, v in results.items() if k.startswith("DPM++") and "10" in v}
    best_name = min(dpm10, key=dpm10.get) if dpm10 else None
    targets = {
        "dpm_10nfe_best": best_name,
        "dpm_10nfe_ratio_to_floor": dpm10[best_name] / floor if best_name else None,
        "ode_tightest_ratio_to_floor": ode_rows[-1]["sw2"] / floor,
    }
    if "1000" in results["EulerMaruyama"]:
        targets["stochastic_1000_ratio_to_floor"] = {
            k: results[k]["1000"]["sw2"] / floor for k in ("EulerMaruyama", "ReverseDiffusion", "PredictorCorrector", "Ancestral")
        }
    curves = {name: {c["nfe"]: c["sw2"] for c in row.values()} for name, row in results.items()}
    curves["adaptive ODE (Tsit5)"] = {r["nfe"]: r["sw2"] for r in ode_rows}
    figure = plot_error_vs_nfe(curves, args.figure, floor=floor, ylabel="sliced W2 to exact samples",
                               title=f"Gaussian mixture d=8, K=4, N={n}: sampler error against NFE")
    print(f"\nfigure: {figure}")

    print("\n# Targets\n")
    for k, v in targets.items():
        print(f"- {k}: {v}")
    print(
        json.dumps(
            {
                "benchmark": "samplers",
                "quick": args.quick,
                "n": n,
                "projections": projections,
                "noise_floor": floor,
                "noise_floor_runs": floors,
                "sw2": results,
                "ode": ode_rows,
                "seconds_per_nfe": seconds_per_nfe,
                "overhead": overhead,
                "targets": targets,
                "device": jax.devices()[0].platform,
                "figure": figure,
            }
        )
    )


if __name__ == "__main__":
    if "--paired" in sys.argv[1:]:  # paired error to the converged flow: benchmarks/sampler_metrics.py
        from sampler_metrics import main as paired_main

        paired_main()
    else:
        main()
