"""Super-resolution benchmark on held-out-by-source photo crops that training never sees.

Compares, for a trained SR3 run (default ``runs/sr3_x4`` from
``python train.py --config configs/sr3_photos_x4.py --workdir runs/sr3_x4``):

* bicubic upsampling;
* a regression UNet of the same size trained with L2 on the same pairs
  (trained here, for as many steps as the SR3 run unless ``--regression-steps``);
* SR3 with ancestral sampling (default 1000 steps) and DPM-Solver++ (20, 40, 50
  steps), both as the probability-flow ODE (``eta=0``) and as the reverse SDE
  (``eta=1``, SDE-DPM-Solver++).

* each SR3 sampler with every ``--projections`` choice (``none``, ``end``,
  ``each``: the low-frequency consistency projection, docs/sr.md).

The crops are ``photo_corpus`` ``test`` crops (``--eval_data``): photos from
sources that no training run uses (docs/data.md); ``--eval_size`` crops larger
than the network, super-resolved as blended tiles as ``sample.py`` does. Metrics
against the ground truth: PSNR, SSIM, LPIPS (AlexNet), on all crops and on the
smooth and textured subsets (``diffjax.data.texture_labels``); consistency is
the PSNR of the output downsampled again (the training operator) against the
low-resolution input; seconds per image exclude compilation.

    python benchmarks/sr.py --workdir runs/sr3_x4 [--num 32] [--quick]

Each SR3 row is sampled with ``--seeds`` keys (default 3) and compared with bicubic and
with the ancestral row on LPIPS: the 95% bootstrap interval of the paired difference
over images and seeds, and a verdict only where it excludes zero.

Prints a markdown table, the comparisons, and ends with one JSON line; the main figure
(LPIPS per method) goes to ``--figure`` (default ``outputs/benchmarks/sr_lpips.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders, metrics
from diffjax.pipelines.sr3 import make_sr_fn
from diffjax.plots import plot_bars
from diffjax.tasks.sr3 import upsample
from diffjax.training import model_from_state
from intervals import compare, print_comparisons  # noqa: E402


def per_image_scores(sr: np.ndarray, hr: np.ndarray, low: np.ndarray, scale: int) -> dict:
    """Per-image PSNR, SSIM, LPIPS (AlexNet) and consistency PSNR, as float64 arrays."""
    return {
        "psnr": np.asarray(metrics.psnr(sr, hr), np.float64),
        "ssim": np.asarray(metrics.ssim(sr, hr), np.float64),
        "lpips_alex": np.asarray(metrics.lpips(sr, hr, net="alex"), np.float64),
        "consistency_db": np.asarray(metrics.consistency_psnr(sr, low, scale, method="bicubic"), np.float64),
    }


def evaluate(name: str, outputs, hr: np.ndarray, low: np.ndarray, scale: int, seconds: float,
             textured: np.ndarray) -> dict:
    """A table row: means over images (and over seeds when ``outputs`` is a list), per-image values kept.

    ``row["per_image"][metric]`` is ``(seeds, N)``, for the bootstrap comparisons;
    ``row["<metric>_smooth"]`` / ``row["<metric>_textured"]`` are the means on each subset.
    """
    outputs = outputs if isinstance(outputs, list) else [outputs]
    per_seed = [per_image_scores(o, hr, low, scale) for o in outputs]
    per_image = {m: np.stack([d[m] for d in per_seed]) for m in per_seed[0]}
    subsets = {f"{m}_{name_}": float(v[:, sel].mean()) if sel.any() else float("nan")
               for m, v in per_image.items() for name_, sel in (("smooth", ~textured), ("textured", textured))}
    return {"method": name, **{m: float(v.mean()) for m, v in per_image.items()}, **subsets,
            "sec_per_image": seconds, "seeds": len(outputs), "per_image": per_image}


def train_regression(config, steps: int, batch_size: int, seed: int = 0):
    """The SR3 network's architecture trained to output the high-res image directly (L2).

    Its noisy-image input is fed zeros and its time input a constant, so the
    only information is the bicubic condition: the classic regression baseline.
    """
    from flax import nnx

    dataset = builders.build_dataset(config, "train")
    pipeline = builders.build_pipeline(config)
    model, _ = builders.build_model(config, nnx.Rngs(params=seed), dataset.image_shape)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # 100 warm-up steps, fewer for short runs (--quick, smoke tests): the schedule needs decay > warm-up.
    warmup = min(100, max(1, steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.optim.lr, warmup, max(steps, warmup + 1))
    optimizer = optax.adamw(schedule, weight_decay=0.0)
    opt_state = optimizer.init(params)

    def loss_fn(params, batch):
        net = model_from_state(graphdef, params, rest)
        x = jnp.zeros_like(batch["image"])
        out = net(x, jnp.ones(x.shape[:1]), cond=batch["cond"])
        return jnp.mean((out - batch["image"]) ** 2)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rows = np.arange(batch_size)
    for i in range(steps):
        batch = pipeline.prepare_batch(dataset.batch(i, batch_size, seed=seed + 1), step=i, seed=seed + 1, rows=rows)
        params, opt_state, loss = step(params, opt_state, {k: batch[k] for k in ("image", "cond")})
        if i % 200 == 0 or i == steps - 1:
            print(f"  regression step {i}: loss {float(loss):.4f}", flush=True)

    @jax.jit
    def predict(params, cond):
        net = model_from_state(graphdef, params, rest)
        return jnp.clip(net(jnp.zeros_like(cond), jnp.ones(cond.shape[:1]), cond=cond), -1, 1)

    return lambda cond: predict(params, cond)


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    out = np.asarray(jax.block_until_ready(fn(*args)))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/sr3_x4")
    parser.add_argument("--num", type=int, default=32, help="held-out crops")
    parser.add_argument("--ancestral-steps", type=int, default=1000)
    parser.add_argument("--dpm-steps", default="20,40,50")
    parser.add_argument("--regression-steps", type=int, default=None, help="default: the SR3 run's num_steps; 0 skips the regression baseline")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds of each SR3 row (intervals cover them)")
    parser.add_argument("--quick", action="store_true", help="8 crops, 100 ancestral steps, 50 regression steps")
    parser.add_argument("--etas", default="0,1", help="DPM-Solver++ eta values (0 = ODE, 1 = SDE)")
    parser.add_argument("--projections", default="none,end,each",
                        help="low-frequency consistency projections to measure with each sampler (docs/sr.md)")
    parser.add_argument("--eval_data", default="photo_corpus",
                        help="dataset whose 'test' split is cropped (default: the held-out-by-source photos)")
    parser.add_argument("--eval_size", type=int, default=0,
                        help="crop side of the held-out images (default: the run's image_size); larger crops are "
                             "super-resolved as blended tiles, as sample.py does")
    parser.add_argument("--checkpoint", type=int, default=None, help="SR3 checkpoint step (default: the latest)")
    parser.add_argument("--figure", default="outputs/benchmarks/sr_lpips.png", help="PNG of LPIPS per method")
    args = parser.parse_args()
    if args.quick:
        args.num, args.ancestral_steps, args.regression_steps, args.seeds = 8, 100, 50, 2
    projections = args.projections.split(",")

    from diffjax.sharding import make_mesh
    from sample import load_run_config, restore_ema_model

    config = load_run_config(args.workdir)
    pipeline = builders.build_pipeline(config)
    scale = pipeline.scale
    from diffjax.data import load_dataset, texture_labels

    size = args.eval_size or config.data.image_size
    hr = load_dataset(args.eval_data, split="test", image_size=size).eval_images(args.num, seed=0)
    textured = texture_labels(hr)
    low = pipeline.low_res(hr)
    cond = upsample(low, scale)
    n = args.num
    rows = []

    start = time.perf_counter()
    bicubic = np.clip(upsample(low, scale), -1, 1)
    rows.append(evaluate("bicubic", bicubic, hr, low, scale, (time.perf_counter() - start) / n, textured))

    reg_steps = config.training.num_steps if args.regression_steps is None else args.regression_steps
    t0 = time.perf_counter()
    if reg_steps > 0:
        predict = train_regression(config, reg_steps, config.training.batch_size)
        out, seconds = timed(predict, jnp.asarray(cond))
        rows.append(evaluate(f"regression UNet (L2, {reg_steps} steps)", out, hr, low, scale, seconds / n, textured))
    train_seconds = time.perf_counter() - t0

    graphdef, params, model_state, mc, step = restore_ema_model(config, args.workdir, make_mesh(), step=args.checkpoint)
    sde = builders.build_sde(config)
    dpm_steps = [int(s) for s in args.dpm_steps.split(",")]
    etas = [float(e) for e in args.etas.split(",")]
    runs = ([("ancestral", args.ancestral_steps, 0.0)] if args.ancestral_steps > 0 else []) + [
        ("dpm_solver_pp", s, eta) for eta in etas for s in dpm_steps]
    low_j = jnp.asarray(low)
    for sampler_name, steps, eta in runs:
        config.sampling.sampler, config.sampling.steps, config.sampling.eta = sampler_name, steps, eta
        config.sampling.spacing = "logsnr" if sampler_name == "dpm_solver_pp" else ""
        for projection in projections:
            sr = jax.jit(make_sr_fn(graphdef, model_state, sde, builders.build_sampler(config),
                                    channels=mc.in_channels, tile=mc.image_size, overlap=pipeline.tile_overlap,
                                    prediction=config.model.prediction, time_input=config.loss.time_input,
                                    denoise=True, clip_x0=pipeline.clip_denoised, projection=projection))
            out, seconds = timed(sr, params, jnp.asarray(cond), jax.random.key(0), low_j)
            outs = [out] + [np.asarray(sr(params, jnp.asarray(cond), jax.random.key(s), low_j))
                            for s in range(1, args.seeds)]
            label = "ancestral" if sampler_name == "ancestral" else f"DPM-Solver++ {'SDE' if eta else 'ODE'}"
            suffix = "" if projection == "none" else f", projection {projection}"
            rows.append(evaluate(f"SR3 {label} {steps} steps{suffix}", outs, hr, low, scale, seconds / n, textured))
            print(f"  { {k: v for k, v in rows[-1].items() if k != 'per_image'} }", flush=True)

    print(f"\nSR x{scale}, {n} held-out-by-source {hr.shape[1]}x{hr.shape[2]} crops ({args.eval_data} test: "
          f"{int((~textured).sum())} smooth, {int(textured.sum())} textured), SR3 checkpoint step {step}\n")
    print("| method | LPIPS all | LPIPS smooth | LPIPS textured | PSNR all / smooth / textured | SSIM all | "
          "consistency (dB) | s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['lpips_alex']:.3f} | {r['lpips_alex_smooth']:.3f} | "
              f"{r['lpips_alex_textured']:.3f} | {r['psnr']:.2f} / {r['psnr_smooth']:.2f} / {r['psnr_textured']:.2f} | "
              f"{r['ssim']:.3f} | {r['consistency_db']:.1f} | {r['sec_per_image']:.4f} |")
    figure = plot_bars({r["method"]: r["lpips_alex"] for r in rows}, args.figure, ylabel="LPIPS (AlexNet), lower is better",
                       title=f"SR x{scale} on {n} held-out crops (SR3 step {step})")
    print(f"\nfigure: {figure}")
    # Every SR3 row against bicubic and against the first SR3 row (ancestral), paired over images.
    by_name = {r["method"]: r for r in rows}
    sr3 = [r["method"] for r in rows if r["method"].startswith("SR3")]
    pairs = [(m, "bicubic") for m in sr3] + [(m, sr3[0]) for m in sr3[1:]]
    comparisons = [compare(a, b, "lpips_alex", by_name[a]["per_image"]["lpips_alex"],
                           by_name[b]["per_image"]["lpips_alex"]) for a, b in pairs]
    print_comparisons(comparisons)
    for r in rows:
        r.pop("per_image")
    print(json.dumps({"benchmark": "sr", "scale": scale, "num": n, "seeds": args.seeds, "checkpoint_step": step,
                      "eval_data": args.eval_data, "num_textured": int(textured.sum()),
                      "regression_train_seconds": round(train_seconds, 1), "rows": rows,
                      "comparisons": comparisons, "figure": figure}))


if __name__ == "__main__":
    main()
