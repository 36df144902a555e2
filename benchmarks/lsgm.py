"""LSGM against the VAE alone and the pixel diffusion model, each trained for the same wall-clock.

    nice -n 5 python benchmarks/lsgm.py --out /tmp/lsgm_bench --minutes 8

Models (Fashion-MNIST, 32x32 grey):

* ``vae``:   ``configs/lsgm_fashion_mnist.py`` with ``--config.lsgm.prior=normal`` (the VAE alone);
* ``lsgm``:  the same config (same VAE) with the score-based latent prior, trained jointly;
* ``pixel``: ``configs/ddpm_fashion_mnist.py``, the pixel-space diffusion model.

Each trains for ``--minutes`` of wall-clock (stopped with a checkpoint; every
phase is recorded in ``OUT/results.json`` as it ends; a re-run skips the
training and samples it finds there and recomputes the bound), then is
evaluated, samples first and the bound last (the pixel model's ODE bound is
the slow part), on the test split: the NLL bound in bits/dim (``benchmarks/likelihood.py``:
the first ``--num_bpd`` images, ``--num_bpd_pixel`` for the pixel ODE), FD-AlexNet of
``--num_fd`` samples against as many test images, and samples per second at the
config's sampler (DPM-Solver++, 20 steps, for both diffusion models). Writes a
sample grid per model (``OUT/<model>_samples.png``), a bar chart of the bounds,
a markdown table, the paired LSGM - VAE bound difference over the same test
images, and ends with one JSON line. ``--pixel_speed_only`` measures only the pixel
model's samples/s (at initial weights: the speed does not depend on them). Figures taken on a shared CPU vary
with the load; the JSON holds the steps each model reached.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time

import jax
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import likelihood  # noqa: E402  (benchmarks/likelihood.py)

from diffjax import builders  # noqa: E402
from diffjax.checkpoint import StopRequest  # noqa: E402
from diffjax.logging_utils import save_grid  # noqa: E402
from diffjax.metrics import alexnet_features, frechet_distance  # noqa: E402
from diffjax.run_config import apply_overrides, load_config_file, load_run_config  # noqa: E402
from diffjax.run_kinds import train_and_evaluate  # noqa: E402

MODELS = {
    "vae": ("configs/lsgm_fashion_mnist.py", {"lsgm.prior": "normal"}),
    "lsgm": ("configs/lsgm_fashion_mnist.py", {}),
    "pixel": ("configs/ddpm_fashion_mnist.py", {"training.sample_every": 0, "eval.enabled": False,
                                              "training.log_every": 1}),  # step 1 time = compile time
}


def train_for(config, workdir: str, seconds: float) -> dict:
    """Train ``config`` into ``workdir`` until ``seconds`` of wall-clock have passed (or it finishes)."""
    stop = StopRequest()
    timer = threading.Timer(seconds, stop.request)
    timer.start()
    start = time.perf_counter()
    try:
        summary = train_and_evaluate(config, workdir, stop=stop)
    finally:
        timer.cancel()
    return {"train_seconds": round(time.perf_counter() - start, 1), "steps": int(summary["step"])}


def generate(workdir: str, num: int, seed: int) -> tuple[np.ndarray, float]:
    """``num`` samples in ``[-1, 1]`` of any of the three runs, and the seconds taken (compilation excluded)."""
    import diffjax as dj

    config = load_run_config(workdir)

    run = dj.load_run(workdir)
    batch = min(config.sampling.batch_size, num)
    run.generate(batch, key=seed + 1)  # compile and warm up
    start = time.perf_counter()
    images = run.generate(num, key=seed) * 2.0 - 1.0
    return images, time.perf_counter() - start


def fd_alexnet(samples: np.ndarray, reference_moments) -> float:
    """FD-AlexNet of ``samples`` against precomputed reference moments."""
    feats = np.asarray(alexnet_features(samples), np.float64)
    return float(frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), *reference_moments))


def pixel_sampling_speed(batch: int = 64, repeats: int = 2) -> dict:
    """Samples/s of ``configs/ddpm_fashion_mnist.py``'s UNet with its sampler, at initial weights.

    The speed of a sampler does not depend on the weights, so this measures the
    pixel model's sampling cost without training it (compilation excluded).
    """
    from flax import nnx

    from diffjax.generate import make_generate_fn
    from diffjax.training import create_train_state

    c = load_config_file(os.path.join(ROOT, MODELS["pixel"][0]))
    model, _ = builders.build_model(c, nnx.Rngs(0), (c.data.image_size, c.data.image_size, 1))
    graphdef, state = create_train_state(model, builders.build_optimizer(c))
    fn = jax.jit(make_generate_fn(graphdef, state.model_state, builders.build_sde(c), builders.build_sampler(c),
                                  (c.data.image_size, c.data.image_size, 1), batch, prediction=c.model.prediction,
                                  time_input=c.loss.time_input, denoise=c.sampling.denoise))
    jax.block_until_ready(fn(state.params, jax.random.key(1)))  # compile and warm up
    start = time.perf_counter()
    for i in range(repeats):
        jax.block_until_ready(fn(state.params, jax.random.key(2 + i)))
    seconds = time.perf_counter() - start
    return {"samples_per_second": round(batch * repeats / seconds, 2), "images": batch * repeats,
            "sampler": f"{c.sampling.sampler} {c.sampling.steps} steps"}


def paired_difference(path_a: str, path_b: str) -> dict | None:
    """Mean and standard error of per-image ``a - b`` over the images both files hold (``None`` if one is missing)."""
    if not (os.path.exists(path_a) and os.path.exists(path_b)):
        return None
    a, b = np.load(path_a), np.load(path_b)
    n = min(len(a), len(b))
    d = a[:n] - b[:n]
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "images": n}


def main(argv=None) -> dict:
    """Train, evaluate, print the table, end with a JSON line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the runs, grids and results")
    p.add_argument("--minutes", type=float, default=8.0, help="training wall-clock per model")
    p.add_argument("--models", default="vae,lsgm,pixel")
    p.add_argument("--num_bpd", type=int, default=512)
    p.add_argument("--num_bpd_pixel", type=int, default=32)
    p.add_argument("--num_fd", type=int, default=256)
    p.add_argument("--rtol", type=float, default=1e-4, help="ODE likelihood tolerance (rtol = atol)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config_arg", default="", help="e.g. 'smoke' for a quick check of the script")
    p.add_argument("--pixel_speed_only", action="store_true",
                   help="only the pixel model's samples/s at initial weights (no training)")
    args = p.parse_args(argv)
    if args.pixel_speed_only:
        out = {"pixel_sampling_speed": pixel_sampling_speed()}
        print(json.dumps(out))
        return out
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}

    def save(name: str, entry: dict) -> None:
        results[name] = entry
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)

    first = load_config_file(os.path.join(ROOT, MODELS[models[0]][0]) + (f":{args.config_arg}" if args.config_arg else ""))
    test = builders.build_dataset(first, "test").eval_images(args.num_fd, seed=args.seed + 1)
    ref_feats = np.asarray(alexnet_features(test), np.float64)
    ref = (ref_feats.mean(0), np.cov(ref_feats, rowvar=False))

    for name in models:
        path, overrides = MODELS[name]
        spec = os.path.join(ROOT, path) + (f":{args.config_arg}" if args.config_arg else "")
        config = apply_overrides(load_config_file(spec), dict(overrides, **{"training.progress_bar": False}))
        workdir = os.path.join(args.out, name)
        entry = results.get(name, {})
        if "steps" not in entry:
            print(f"[{name}] training for {args.minutes} min ...", flush=True)
            entry.update(train_for(config, workdir, args.minutes * 60))
            save(name, entry)
        # Samples and FD before the bound: the pixel model's ODE bound is the slow part,
        # and each phase is recorded as it ends (a re-run skips recorded training and samples).
        if "fd_alexnet" not in entry:
            print(f"[{name}] {entry['steps']} steps; sampling ...", flush=True)
            images, seconds = generate(workdir, args.num_fd, args.seed)
            save_grid(os.path.join(args.out, f"{name}_samples.png"), images[:64])
            entry.update({"samples_per_second": round(len(images) / seconds, 2), "fd_alexnet": fd_alexnet(images, ref),
                          "fd_samples": len(images), "sampler": f"{config.sampling.sampler}"
                          + ("" if name == "vae" else f" {config.sampling.steps} steps")})
            save(name, entry)
            del images
        print(f"[{name}] FD-AlexNet {entry['fd_alexnet']:.2f}; bound ...", flush=True)
        num = args.num_bpd_pixel if name == "pixel" else args.num_bpd
        start = time.perf_counter()
        bound = likelihood.evaluate(workdir, num=num, batch=min(64, num), seed=args.seed, rtol=args.rtol,
                                    save=os.path.join(args.out, f"{name}_bpd.npy"))
        entry.update({"test_bpd": bound["test_bpd"], "test_bpd_se": bound["test_bpd_se"],
                      "bpd_images": bound["num_images"], "bpd_kind": bound["kind"], "bpd_rtol": args.rtol,
                      "bpd_seconds": round(time.perf_counter() - start, 1)})
        save(name, entry)
        print(f"[{name}] {json.dumps(entry)}", flush=True)
        # Drop this model's compiled programs and buffers before the next one compiles
        # (the pixel UNet's train step alone takes several GB to compile on CPU).
        jax.clear_caches()
        gc.collect()

    try:
        from diffjax.plots import plot_bars

        plot_bars({k: v["test_bpd"] for k, v in results.items()}, os.path.join(args.out, "bpd.png"),
                  ylabel="test NLL bound (bits/dim)", title="Fashion-MNIST, equal training wall-clock")
    except ValueError:
        pass
    print("| model | train steps (s) | test bound bits/dim (images) | FD-AlexNet (samples) | samples/s |")
    print("|---|---|---|---|---|")
    for name, e in results.items():
        print(f"| {name} | {e['steps']} ({e['train_seconds']}) | {e['test_bpd']:.3f} +- {e['test_bpd_se']:.3f} "
              f"({e['bpd_images']}) | {e['fd_alexnet']:.1f} ({e['fd_samples']}) | {e['samples_per_second']} |")
    out = {"results": results, "minutes": args.minutes, "jax_devices": str(jax.devices())}
    paired = paired_difference(os.path.join(args.out, "lsgm_bpd.npy"), os.path.join(args.out, "vae_bpd.npy"))
    if paired is not None:
        out["lsgm_minus_vae_bpd"] = paired
        print(f"LSGM - VAE, paired over the same test images: {paired['mean']:+.4f} +- {paired['se']:.4f} bits/dim")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
