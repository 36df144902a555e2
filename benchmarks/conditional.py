"""CDE, CDiffE and CMDE (Batzolis et al.) on x4 super-resolution and on the exact Gaussian problem.

Part 1, held-out photo crops (8x8 -> 32x32 RGB, crops training never sees): PSNR, SSIM,
LPIPS (AlexNet), consistency (PSNR of the output downsampled again against the input)
and seconds per image of the three estimators trained with
``configs/conditional_photos_sr.py:<method>`` and of SR3 (``configs/sr3_photos_x4.py``),
all with the same network and the same number of steps (``--steps``), next to bicubic.
Runs missing from ``--root`` are trained here first (``--root/<cde|cdiffe|cmde|sr3>``);
existing ones are reused as they are.

Part 2, the exact problem (no training): a jointly Gaussian (x, y) in 4 + 4 dimensions
(tests/paired_gaussians.py) where every estimator's target score is known; each is
sampled with Euler-Maruyama at 100 and 1000 steps and compared with p(x | y) by the
2-Wasserstein distance of the fitted Gaussian (the sampling-noise floor is printed too).

    python benchmarks/conditional.py --root runs/conditional --steps 1500 [--num 32]
    python benchmarks/conditional.py --quick      # seconds-sized smoke run

Prints two markdown tables and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import diffjax as dj  # noqa: E402
import paired_gaussians as pg  # noqa: E402
from diffjax import builders  # noqa: E402
from diffjax.data import texture_labels  # noqa: E402
from diffjax.tasks.sr3 import upsample  # noqa: E402
from sr import evaluate, timed  # noqa: E402  (benchmarks/sr.py's metrics row and timing)


def _row(*args) -> dict:
    """benchmarks/sr.py's table row without its per-image arrays (kept there for bootstrap intervals).

    Takes ``evaluate``'s arguments, including the smooth / textured split of the crops."""
    row = evaluate(*args)
    row.pop("per_image", None)
    return row

METHODS = ("cde", "cdiffe", "cmde")
RUNS = METHODS + ("sr3",)


def _config(name: str, args):
    from train import load_config_file

    configs = os.path.join(HERE, "..", "configs")
    if name == "sr3":
        path = os.path.join(configs, "sr3_photos_x4.py" + (":smoke" if args.quick else ""))
    else:
        path = os.path.join(configs, f"conditional_photos_sr.py:{name}" + ("_smoke" if args.quick else ""))
    c = load_config_file(path)
    c.data.image_size = 32  # also for --quick: LPIPS (AlexNet) needs at least 31x31
    c.training.num_steps = args.steps
    c.training.ckpt_every = args.steps
    c.training.log_every = max(1, args.steps // 10)
    c.optim.warmup_steps = min(c.optim.warmup_steps, max(1, args.steps // 10))
    c.training.progress_bar = False
    return c


def get_run(root: str, name: str, args) -> str:
    """The run folder of ``name``, trained here (``--steps`` steps) if it holds no run yet."""
    from train import train_and_evaluate

    workdir = os.path.join(root, name)
    if not os.path.exists(os.path.join(workdir, "config.json")):
        start = time.perf_counter()
        summary = train_and_evaluate(_config(name, args), workdir)
        if summary["stopped_early"]:
            raise SystemExit(f"stopped while training {name}; rerun to resume")
        print(f"trained {name} ({args.steps} steps) in {time.perf_counter() - start:.0f} s", flush=True)
    return workdir


def sr_function(workdir: str):
    """``(sr(params, cond, key), params, config, checkpoint step)`` of a trained SR run."""
    from sample import load_run_config, restore_ema_model

    from diffjax.pipelines.conditional import ConditionalTask, make_conditional_sr_fn
    from diffjax.pipelines.sr3 import make_sr_fn
    from diffjax.sharding import make_mesh

    config = load_run_config(workdir)
    pipeline = builders.build_pipeline(config)
    graphdef, params, model_state, mc, step = restore_ema_model(config, workdir, make_mesh())
    common = dict(channels=mc.in_channels, tile=mc.image_size, overlap=pipeline.tile_overlap,
                  prediction=config.model.prediction, time_input=config.loss.time_input,
                  denoise=config.sampling.denoise, clip_x0=pipeline.clip_denoised)
    sde, sampler = builders.build_sde(config), builders.build_sampler(config)
    if isinstance(pipeline, ConditionalTask):
        fn = make_conditional_sr_fn(graphdef, model_state, sde, sampler, method=pipeline.method,
                                    sde_y=pipeline.sde_y, **common)
    else:
        fn = make_sr_fn(graphdef, model_state, sde, sampler, **common)
    return jax.jit(fn), params, config, step


def photo_rows(args) -> tuple[list[dict], dict]:
    runs = {name: get_run(args.root, name, args) for name in args.runs}
    if args.train_only:
        return [], {}
    from sample import load_run_config

    first = load_run_config(runs[args.runs[0]])
    pipeline = builders.build_pipeline(first)
    hr = builders.build_dataset(first, "test").eval_images(args.num, seed=0)
    low = pipeline.low_res(hr)
    cond = jnp.asarray(upsample(low, pipeline.scale))
    textured = texture_labels(hr)  # sr.evaluate also scores the smooth and textured crops apart
    n, rows, steps = args.num, [], {}
    start = time.perf_counter()
    bicubic = np.clip(upsample(low, pipeline.scale), -1, 1)
    rows.append(_row("bicubic", bicubic, hr, low, pipeline.scale, (time.perf_counter() - start) / n, textured))
    for name in args.runs:
        sr, params, config, step = sr_function(runs[name])
        out, seconds = timed(sr, params, cond, jax.random.key(0))
        label = {"cde": "CDE", "cdiffe": "CDiffE", "cmde": "CMDE", "sr3": "SR3"}[name]
        rows.append(_row(f"{label} ({config.sampling.sampler} {config.sampling.steps} steps)", out, hr, low,
                             pipeline.scale, seconds / n, textured))
        steps[name] = step
        print(f"  {rows[-1]}", flush=True)
    return rows, {"checkpoint_steps": steps, "num": n, "scale": pipeline.scale, "size": int(hr.shape[1])}


def gaussian_rows(args) -> list[dict]:
    """W2 distance to p(x | y) of each estimator's exact score, Euler-Maruyama at each step count."""
    gauss = pg.PairedGaussian.random(0, dim=4, correlation=0.95)
    sde, sde_y = dj.VPSDE(), dj.VESDE(sigma_min=0.01, sigma_max=1.0)
    y_obs = gauss.my + gauss.v @ (1.5 * np.sqrt(gauss.vb))
    mean, cov = gauss.posterior(y_obs)
    n = args.gaussian_samples
    y = jnp.tile(jnp.asarray(y_obs, jnp.float32), (n, 1))
    # The floor: W2 of n exact posterior draws (what a perfect sampler would score).
    exact = np.random.default_rng(0).multivariate_normal(mean, cov, n)
    rows = [{"method": "exact draws (noise floor)", "steps": 0, "w2": pg.gaussian_w2(exact, mean, cov)}]
    for steps in args.gaussian_steps:
        for method in METHODS:
            process = sde_y if method == "cmde" else None
            run = jax.jit(functools.partial(dj.tasks.conditional_sample, gauss.cond_score_fn(sde, method, process),
                                            sde, sampler=dj.samplers.EulerMaruyama(steps), method=method,
                                            sde_y=process))
            x, _ = run(y, sde.prior_sample(jax.random.key(1), (n, gauss.dim)), key=jax.random.key(2))
            rows.append({"method": method, "steps": steps, "w2": pg.gaussian_w2(np.asarray(x), mean, cov)})
            print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/conditional", help="folder of the runs (trained here if missing)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each run (all equal)")
    parser.add_argument("--num", type=int, default=32, help="held-out crops")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    parser.add_argument("--gaussian_steps", default="100,1000")
    parser.add_argument("--gaussian_samples", type=int, default=4000)
    parser.add_argument("--skip_photos", action="store_true", help="only the exact Gaussian problem")
    parser.add_argument("--skip_gaussian", action="store_true", help="only the photo crops")
    parser.add_argument("--train_only", action="store_true", help="train the missing runs and stop")
    parser.add_argument("--quick", action="store_true", help="smoke: tiny networks, 4 steps, 4 crops")
    args = parser.parse_args()
    args.runs = tuple(r for r in args.runs.split(",") if r)
    if not args.runs or any(r not in RUNS for r in args.runs):
        parser.error(f"--runs must be a comma-separated subset of {','.join(RUNS)}, got {','.join(args.runs)!r}")
    try:
        args.gaussian_steps = tuple(int(s) for s in args.gaussian_steps.split(","))
    except ValueError:
        parser.error(f"--gaussian_steps must be comma-separated integers, got {args.gaussian_steps!r}")
    if args.quick:
        args.steps, args.num, args.gaussian_steps, args.gaussian_samples = 4, 4, (10,), 500

    photo, meta = ([], {}) if args.skip_photos else photo_rows(args)
    if args.train_only:
        return
    if photo:
        print(f"\nSR x{meta['scale']}, {meta['num']} held-out {meta['size']}x{meta['size']} crops, "
              f"{args.steps} training steps each\n")
        print("| method | PSNR | SSIM | LPIPS (alex) | consistency (dB) | s / image |")
        print("|---|---|---|---|---|---|")
        for r in photo:
            print(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips_alex']:.3f} | "
                  f"{r['consistency_db']:.1f} | {r['sec_per_image']:.4f} |")
    gauss = [] if args.skip_gaussian else gaussian_rows(args)
    if gauss:
        print(f"\nExact Gaussian problem: W2 to p(x | y), {args.gaussian_samples} samples, Euler-Maruyama\n")
        print("| estimator | " + " | ".join(f"{s} steps" for s in args.gaussian_steps) + " |")
        print("|---|" + "---|" * len(args.gaussian_steps))
        print(f"| exact draws (noise floor) | {gauss[0]['w2']:.4f} |" + " |" * (len(args.gaussian_steps) - 1))
        for method in METHODS:
            w2 = {r["steps"]: r["w2"] for r in gauss if r["method"] == method}
            print(f"| {method} | " + " | ".join(f"{w2[s]:.4f}" for s in args.gaussian_steps) + " |")
    photo_meta = {"train_steps": args.steps, **meta, "photo_rows": photo} if photo else {}
    print(json.dumps({"benchmark": "conditional", **photo_meta, "gaussian_rows": gauss}))


if __name__ == "__main__":
    main()
