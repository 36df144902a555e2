"""Low-NFE sampler defaults on a family of exact-score problems: fit on some, report on held-out ones.

``benchmarks/samplers.py`` scores samplers on one Gaussian mixture (d = 8, K = 4, VP), the
one the defaults were first chosen on. Here every problem is a Gaussian mixture with a
closed-form score at every t (covariances held as eigendecompositions computed once on
the host, so the compiled programs are matmuls only: no batched LAPACK call, see the
CPU hang in tests/README), varying the dimension, the number, spread and width of the
modes, and the process (VP, sub-VP, VE). The problems are split in two:

* ``fit``: the problems the defaults are *chosen* on (they include the benchmark's own
  mixture and the mixture the UniPC grids were fitted on);
* ``held``: problems no default, grid or threshold was chosen on; the report.

Two figures per cell, each the mean over ``--seeds`` prior draws of N samples:

* the **paired ratio** (the tables' main columns): sliced W2 (128 directions, to 16 N
  exact samples, as ``benchmarks/samplers.py``) of the sampler's output over that of
  the exact probability flow of the *same* prior draws (a 100-step UniPC-3). It isolates
  the solver's error from the draws' own sampling noise; 1 = no solver error;
* the **floor ratio**: the same sliced W2 over the sampling floor (the mean figure of 4
  exact sets of N). It is noisy (one problem's 4 exact sets spread over 0.09-0.17,
  with how many samples land in each mode) and it also carries what the exact flow of
  prior draws itself misses: column "converged flow / floor" reaches 5.2 on a VE
  problem, where 100- and 200-step solvers of both orders agree to 0.1 % (so not a
  solver error; under VE the prior N(0, sigma_max^2 I) is not exactly p_T). Paired
  ratios below 1 occur on such problems.

For each sampler class the configuration with the lowest median paired ratio over the
fitting problems is "chosen"; the tables give median, quartiles and worst over the
fitting and over the held-out problems, so a choice that wins only on the fitting
problems shows.

    python benchmarks/sampler_family.py                       # all problems, NFE 5, 10, 20
    python benchmarks/sampler_family.py --quick               # 2 problems, NFE 10, N = 4096
    python benchmarks/sampler_family.py --problems held --out h.json   # one split per process
    python benchmarks/sampler_family.py --from-json f.json,h.json      # the tables from saved runs

Prints markdown tables and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

import diffjax as dj  # noqa: E402
import gaussians  # noqa: E402
from diffjax import samplers as S  # noqa: E402
from samplers import _sw2_against, sorted_reference  # noqa: E402  (benchmarks/samplers.py: the same measure)

REFERENCE_FACTOR = 16
FLOOR_SETS = 4


@dataclasses.dataclass(frozen=True)
class Problem:
    """One exact problem: a Gaussian mixture under a process."""

    name: str
    split: str  # "fit" or "held"
    dim: int
    k: int
    separation: float  # std of the component means
    eig: tuple[float, float]  # range of the components' covariance eigenvalues
    process: str  # "vp", "subvp", "ve"
    seed: int

    def mixture(self) -> gaussians.GaussianMixture:
        if (self.dim, self.k, self.separation, self.eig) == (8, 4, 3.0, (0.05, 0.5)):
            return gaussians.mixture(dim=8, k=4, seed=self.seed)  # the benchmark's own family
        rng = np.random.default_rng(self.seed)
        weights = rng.dirichlet(np.full(self.k, 2.0))
        means = rng.normal(size=(self.k, self.dim)) * self.separation
        eig = [gaussians.random_spd(rng, self.dim, *self.eig) for _ in range(self.k)]
        return gaussians.GaussianMixture(weights=weights, means=means, eigvals=np.stack([e[0] for e in eig]),
                                         eigvecs=np.stack([e[1] for e in eig]))

    def sde(self):
        return {"vp": dj.VPSDE(), "subvp": dj.SubVPSDE(), "ve": dj.VESDE()}[self.process]


PROBLEMS = (
    # Fitting problems: the benchmark's mixture, the grids' fitting mixture, and two others.
    Problem("bench-d8k4-vp", "fit", 8, 4, 3.0, (0.05, 0.5), "vp", 0),
    Problem("grid-d8k4-vp", "fit", 8, 4, 3.0, (0.05, 0.5), "vp", 1),
    Problem("d4k2-subvp", "fit", 4, 2, 2.0, (0.1, 1.0), "subvp", 2),
    Problem("d16k6-ve", "fit", 16, 6, 4.0, (0.02, 0.3), "ve", 3),
    # Held-out problems: nothing was chosen on them.
    Problem("d2k8-sharp-vp", "held", 2, 8, 5.0, (0.01, 0.1), "vp", 10),
    Problem("d32k3-overlap-vp", "held", 32, 3, 2.0, (0.1, 1.0), "vp", 11),
    Problem("d8k10-subvp", "held", 8, 10, 6.0, (0.01, 0.2), "subvp", 12),
    Problem("d16k2-wide-ve", "held", 16, 2, 1.0, (0.2, 2.0), "ve", 13),
    Problem("d4k5-ve", "held", 4, 5, 4.0, (0.05, 0.5), "ve", 14),
    Problem("d24k6-subvp", "held", 24, 6, 3.0, (0.03, 0.3), "subvp", 15),
    Problem("d8k4-far-vp", "held", 8, 4, 8.0, (0.005, 0.05), "vp", 16),
    Problem("d12k3-ve", "held", 12, 3, 3.0, (0.05, 0.5), "ve", 17),
)


def candidates() -> dict:
    """name -> (sampler class, constructor from an NFE budget, scored at every budget?). Heun spends 2 NFE a step.

    The rows scored at every budget are the defaults before this study and the strongest
    rows of a first pass at NFE 10; the rest are scored at NFE 10 only (CPU time).
    """
    every = {"UniPC-2 fitted", "UniPC-3 fitted", "UniPC-3 quadratic", "DPM++2M logsnr", "DPM++3M quadratic",
             "Heun uniform"}
    table = {}
    for order in (2, 3):
        for spacing in ("fitted", "logsnr", "quadratic", "karras"):
            table[f"UniPC-{order} {spacing}"] = lambda b, o=order, s=spacing: S.UniPC(b, order=o, spacing=s)
        for spacing in ("logsnr", "quadratic", "uniform"):
            table[f"DPM++{order}M {spacing}"] = lambda b, o=order, s=spacing: S.DPMSolverPP(b, order=o, spacing=s)
    for spacing in ("uniform", "karras"):
        table[f"Heun {spacing}"] = lambda b, s=spacing: S.Heun(b // 2, spacing=s)
    def cls(name):
        return "UniPC" if name.startswith("UniPC") else "Heun" if name.startswith("Heun") else "DPMSolverPP"

    return {name: (cls(name), make, name in every) for name, make in table.items()}


def score_problem(problem: Problem, budgets, *, n: int, seeds: int, projections: int, rows: str = "",
                  makers: dict | None = None) -> dict:
    """Ratios of every candidate on one problem, plus the floor and the converged flow.

    ``makers`` (name -> sampler from an NFE budget) replaces the candidate table, e.g. to
    score a sampler with its default arguments (tests/test_reference_checks.py).
    """
    mix, sde = problem.mixture(), problem.sde()
    score_fn = mix.score_fn(sde)
    dirs, quantiles = sorted_reference(mix.sample(jax.random.key(100), REFERENCE_FACTOR * n), n,
                                        jax.random.key(1234), projections)
    sw2 = lambda y: float(_sw2_against(y, dirs, quantiles))  # noqa: E731
    floors = [sw2(mix.sample(jax.random.key(200 + i), n)) for i in range(FLOOR_SETS)]
    floor = float(np.mean(floors))
    x_T = jnp.stack([sde.prior_sample(jax.random.key(s), (n, problem.dim)) for s in range(seeds)])

    def evaluate(sampler):
        run = jax.jit(jax.vmap(lambda x: dj.sample(score_fn, sde, x, key=jax.random.key(1), sampler=sampler)))
        y, info = run(x_T)
        return np.array([sw2(y[i]) for i in range(seeds)]), int(info["nfe"][0])

    # The exact flow of the same prior draws (a 100-step UniPC-3): what a perfect ODE solver returns.
    converged, _ = evaluate(S.UniPC(100, order=3, spacing="logsnr"))
    out = {"problem": dataclasses.asdict(problem), "floor": floor, "floor_sets": floors,
           "converged": converged.tolist(), "converged_ratio": float(np.mean(converged) / floor), "ratios": {}}
    table = candidates() if makers is None else {k: (None, m, True) for k, m in makers.items()}
    for name, (_, make, every) in table.items():
        if rows and name not in rows.split(","):
            continue
        out["ratios"][name] = {}
        for b in (budgets if every or rows else [b for b in budgets if b == 10]):  # named rows: every budget
            values, nfe = evaluate(make(b))
            # "mean": paired, the sampler's sliced W2 over the exact flow's on the same draws (1 = no
            # solver error; free of the draws' own sampling noise); "floor": over the sampling floor.
            out["ratios"][name][str(b)] = {"mean": float(np.mean(values / converged)),
                                           "floor": float(np.mean(values) / floor), "sw2": values.tolist(), "nfe": nfe}
    return out


def spread(values) -> dict:
    v = np.asarray(values, np.float64)
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "worst": float(v.max()), "n": int(v.size)}


def summarise(results: list[dict], budgets) -> dict:
    """Per candidate and NFE: the spread of ratios over fitting and over held-out problems; the choices."""
    names = list(dict.fromkeys(nm for r in results for nm in r["ratios"]))  # runs of other rows may be merged
    table = {}
    for name in names:
        for b in budgets:
            if not any(str(b) in r["ratios"].get(name, {}) for r in results):
                continue
            per_split = {}
            for split in ("fit", "held"):
                cells = [r["ratios"][name][str(b)] for r in results
                         if r["problem"]["split"] == split and str(b) in r["ratios"].get(name, {})]
                if cells:
                    per_split[split] = spread([c["mean"] for c in cells])
                    per_split[split]["floor"] = spread([c["floor"] for c in cells])
            table.setdefault(name, {})[str(b)] = per_split
    classes = {name: cls for name, (cls, _, _) in candidates().items()}
    chosen = {}
    for b in budgets:
        for cls in ("UniPC", "DPMSolverPP", "Heun"):
            pool = [nm for nm in names if classes[nm] == cls and "fit" in table.get(nm, {}).get(str(b), {})]
            if not pool:
                continue
            on_fit = min(pool, key=lambda nm: table[nm][str(b)]["fit"]["median"])
            on_held = min(pool, key=lambda nm: table[nm][str(b)].get("held", {"median": np.inf})["median"])
            for nm in pool:
                table[nm][str(b)]["class"] = cls
            chosen.setdefault(str(b), {})[cls] = {"chosen_on_fit": on_fit, "best_on_held": on_held}
    return {"table": table, "chosen": chosen}


def print_tables(results: list[dict], summary: dict, budgets) -> None:
    print("\n## Problems\n")
    print("| problem | split | d | K | mean spread | eigenvalues | process | floor (sliced W2) | "
          "converged flow / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p = r["problem"]
        print(f"| {p['name']} | {p['split']} | {p['dim']} | {p['k']} | {p['separation']} | "
              f"{p['eig'][0]}-{p['eig'][1]} | "
              f"{p['process']} | {r['floor']:.4f} | {r['converged_ratio']:.2f} |")
    for b in budgets:
        print(f"\n## NFE {b}: sliced W2 over the exact flow's on the same draws (floor ratio), "
              "median [quartiles] worst over problems\n")
        print("| sampler | fitting problems | held-out problems | held-out, over the sampling floor |")
        print("|---|---|---|---|")
        rows = [nm for nm in summary["table"] if str(b) in summary["table"][nm]]
        order = sorted(rows, key=lambda nm: summary["table"][nm][str(b)].get("held", {"median": 0})["median"])
        def fmt(s):
            return "-" if s is None else f"{s['median']:.2f} [{s['q1']:.2f}, {s['q3']:.2f}] {s['worst']:.2f}"

        for nm in order:
            cell = summary["table"][nm][str(b)]
            print(f"| {nm} | {fmt(cell.get('fit'))} | {fmt(cell.get('held'))} | "
                  f"{fmt(cell.get('held', {}).get('floor'))} |")
        print(f"\nchosen at NFE {b}: {json.dumps(summary['chosen'].get(str(b), {}))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="all", help="all, fit, held, or comma-separated names")
    parser.add_argument("--budgets", default="5,10,20")
    parser.add_argument("--n", type=int, default=8192, help="samples per prior draw")
    parser.add_argument("--seeds", type=int, default=2, help="prior draws per cell")
    parser.add_argument("--projections", type=int, default=128)
    parser.add_argument("--rows", default="", help="comma-separated candidate names: only these, at every budget")
    parser.add_argument("--quick", action="store_true", help="2 problems, NFE 10, N = 4096, 1 seed")
    parser.add_argument("--out", default="", help="also write the raw results to this JSON file")
    parser.add_argument("--from-json", default="", help="comma-separated JSON files of earlier runs: tables only")
    args = parser.parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    if args.from_json:
        results = [r for path in args.from_json.split(",") for r in json.load(open(path))["results"]]
    else:
        if args.quick:
            chosen_problems, budgets, args.n, args.seeds = [PROBLEMS[0], PROBLEMS[4]], (10,), 4096, 1
        elif args.problems in ("all", "fit", "held"):
            chosen_problems = [p for p in PROBLEMS if args.problems in ("all", p.split)]
        else:
            wanted = set(args.problems.split(","))
            chosen_problems = [p for p in PROBLEMS if p.name in wanted]
        results = []
        for p in chosen_problems:
            results.append(score_problem(p, budgets, n=args.n, seeds=args.seeds, projections=args.projections,
                                         rows=args.rows))
            print(f"# {p.name} done (floor {results[-1]['floor']:.4f})", flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"results": results, "n": args.n, "seeds": args.seeds}, f)
    summary = summarise(results, budgets)
    print_tables(results, summary, budgets)
    print(json.dumps({"budgets": budgets, "chosen": summary["chosen"], "table": summary["table"]}))


if __name__ == "__main__":
    main()
