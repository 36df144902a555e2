"""Low-NFE samplers on trained image models: FD-AlexNet of samples at 5, 10 and 20 NFE.

The exact-score mixture of ``benchmarks/samplers.py`` ranks samplers against the
truth; this script checks that the ranking and the defaults carry over to real
networks. For each training run (``--workdir``, comma-separated) it draws
``--num`` samples with each sampler at each NFE budget through ``run.generate``
(the same prior draws for every row: one seed; the stochastic rows also draw their
noise from it), and scores them by FD-AlexNet
against ``--num`` held-out images of the run's dataset (its ``config.eval.split``).
Two reference rows bracket the table: a converged sampler (``UniPC(100)``, order
3, log-SNR spacing) and the statistic's own floor, training images against the
same held-out images.

    python train.py --config configs/ddpm_digits.py --workdir runs/digits
    python benchmarks/sampler_fd.py --workdir runs/digits,runs/photos_edit [--num 512] [--nfe 5,10,20]

Prints one markdown table per run (FD-AlexNet, and seconds per image after
compilation) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders  # noqa: E402
from diffjax import samplers as S  # noqa: E402
from diffjax.metrics import alexnet_moments as moments  # noqa: E402
from diffjax.metrics import frechet_distance  # noqa: E402
from diffjax.runs import load_run  # noqa: E402


def sampler_rows():
    """name -> sampler for an NFE budget, with default arguments (what a user gets)."""
    return {
        "UniPC(n)": lambda b: S.UniPC(b),
        "DPMSolverPP(n)": lambda b: S.DPMSolverPP(b),
        "DDIM(n)": lambda b: S.DDIM(b),
        "Heun(n // 2)": lambda b: S.Heun(b // 2),
        # Stochastic: fresh noise at every step corrects part of a network's own errors,
        # which the deterministic rows above carry to the end (their converged row).
        "DPMSolverPP(n, eta=1)": lambda b: S.DPMSolverPP(b, eta=1.0),
        "Ancestral(n)": lambda b: S.Ancestral(b),
    }


def score_run(workdir: str, budgets, num: int, seed: int, rows: str = "") -> dict:
    """FD-AlexNet of every (sampler, budget) for one run; see the module docstring."""
    run = load_run(workdir)
    c = run.config
    held_out = builders.build_dataset(c, c.eval.split).eval_images(num, seed=seed)  # [-1, 1]
    train = builders.build_dataset(c, "train").eval_images(num, seed=seed)
    ref = moments(held_out)
    result = {"workdir": workdir, "step": run.step, "num": num,
              "floor_train_vs_heldout": float(frechet_distance(*moments(train), *ref)), "rows": {}}

    def measure(sampler) -> dict:
        # Compile (and warm) first, at the batch the timed call uses (run.generate compiles per batch size).
        run.generate(min(num, int(c.sampling.batch_size)), key=seed, sampler=sampler)
        start = time.perf_counter()
        images = run.generate(num, key=seed, sampler=sampler) * 2.0 - 1.0
        seconds = (time.perf_counter() - start) / num
        return {"fd_alexnet": float(frechet_distance(*moments(images), *ref)), "seconds_per_image": seconds}

    result["converged"] = measure(S.UniPC(100, order=3, spacing="logsnr"))
    for name, make in sampler_rows().items():
        if not rows or re.search(rows, name):
            result["rows"][name] = {str(b): measure(make(b)) for b in budgets}
    return result


def print_table(r: dict, budgets) -> None:
    print(f"\n## {r['workdir']} (step {r['step']}): FD-AlexNet of {r['num']} samples against {r['num']} "
          f"held-out images (seconds per image)\n")
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|" + "---|" * (len(budgets) + 1))
    for name, row in r["rows"].items():
        cells = [f"{row[str(b)]['fd_alexnet']:.3f} ({row[str(b)]['seconds_per_image']:.3f})" for b in budgets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    conv = r["converged"]
    print(f"\nconverged (UniPC(100), order 3, log-SNR): {conv['fd_alexnet']:.3f} "
          f"({conv['seconds_per_image']:.3f} s/image); floor (training vs held-out images): "
          f"{r['floor_train_vs_heldout']:.3f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="comma-separated training runs (unconditional 'generate')")
    parser.add_argument("--nfe", default="5,10,20", help="comma-separated NFE budgets")
    parser.add_argument("--num", type=int, default=512, help="samples per cell, and held-out images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default="", help="regex: only the sampler rows whose name matches")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.nfe.split(",")]
    if any(b < 2 for b in budgets):
        parser.error(f"--nfe budgets must be >= 2 (Heun spends 2 per step), got {budgets}")
    if args.num < 2:
        parser.error(f"--num must be >= 2 (FD needs a covariance), got {args.num}")
    results = []
    for workdir in args.workdir.split(","):
        results.append(score_run(workdir, budgets, args.num, args.seed, args.rows))
        print_table(results[-1], budgets)
    summary = {"benchmark": "sampler_fd", "budgets": budgets, "devices": jax.device_count(), "runs": results}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
