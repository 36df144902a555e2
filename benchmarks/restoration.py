"""Restoration benchmark: Palette and RePaint against classical baselines on held-out photos.

Trains (or reuses) one model per task under ``--root``, then restores held-out
32x32 crops of the ``photo_corpus`` test split (``--eval_data``: photos from
sources that no training run uses, docs/data.md) and reports PSNR, SSIM, LPIPS
(AlexNet) against the clean crops, on all crops and on the smooth and textured
subsets (``diffjax.data.texture_labels``), and seconds per image:

* inpainting, free-form strokes and a random box: Palette (known pixels pasted
  back), RePaint (same masks), scikit-image's biharmonic inpainting;
* uncropping (halves and the four-sided border): Palette vs biharmonic;
* colorization: Palette (its output given the input's luma exactly, as
  ``sample.py`` does) vs the grayscale input itself;
* JPEG at quality 10: Palette vs the decoded JPEG.

    python benchmarks/restoration.py --root /tmp/restoration_bench            # CPU-sized models
    python benchmarks/restoration.py --root DIR --quick                       # minutes: a smoke run
    python benchmarks/restoration.py --root DIR --train_only palette_jpeg     # train one run, then exit

A run folder ``ROOT/<config>`` that already holds a ``config.json`` (e.g. a
full ``train.py --config configs/palette_inpainting.py`` run) is used as it is;
otherwise the config is shrunk to ``--channels`` / ``--steps`` and trained there.
``--train_only`` lets the five trainings run as parallel processes (sharing one
accelerator, compiling at the same time); the benchmark run then reuses them.
Palette and RePaint are sampled with ``--seeds`` keys (default 3). Every comparison of
a diffusion method with another method of its task gets a 95% bootstrap interval of
the paired difference (over images and seeds, ``diffjax.metrics.bootstrap_ci``) and
a verdict only where the interval excludes zero: LPIPS and PSNR on all crops, and
LPIPS on the smooth and on the textured crops apart (the targets are stated per subset).
``--inpainting_masks box --no_repaint`` scores Palette box inpainting alone.
Prints each row as it is measured, a markdown table, the comparisons, and one JSON line;
the main figure (LPIPS per method, grouped by task) goes to ``--figure``
(default ``outputs/benchmarks/restoration_lpips.png``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders, degradations  # noqa: E402
from diffjax.guidance import clip_x0  # noqa: E402
from diffjax.metrics import lpips, psnr, ssim  # noqa: E402
from diffjax.parametrization import model_score_fn  # noqa: E402
from diffjax.plots import plot_grouped_bars  # noqa: E402
from diffjax.tasks import palette as palette_lib  # noqa: E402
from diffjax.tasks.repaint import repaint  # noqa: E402
from intervals import compare, print_comparisons  # noqa: E402

JPEG_QUALITY = 10
# The runs each task's rows need.
TASK_RUNS = {
    "inpainting": ("palette_inpainting", "repaint_photos"),
    "uncropping": ("palette_uncropping",),
    "colorization": ("palette_colorization",),
    "jpeg": ("palette_jpeg",),
}
CONFIGS = tuple(name for names in TASK_RUNS.values() for name in names)
INPAINTING_MASKS = ("free-form", "box")


def _load_config(name: str):
    from train import load_config_file

    return load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", f"{name}.py"))


def shrink(config, channels: int, steps: int, batch: int, image_size: int):
    """A CPU-sized version of a config: a narrow UNet, ``steps`` steps, ``image_size`` crops."""
    c = config
    c.data.image_size = image_size
    c.model.base_channels = channels
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()
    c.model.dropout = 0.0
    c.training.num_steps = steps
    c.training.batch_size = batch
    c.training.ckpt_every = steps
    c.training.log_every = max(1, min(100, steps // 10))  # a run stopped by SIGTERM still shows its rate
    c.training.sample_every = 0
    c.training.ema_decay = 0.999 if steps >= 2000 else 0.99
    c.training.progress_bar = False
    c.optim.lr = 1e-3
    c.optim.warmup_steps = min(200, steps // 10 + 1)
    c.eval.enabled = False
    return c


def get_run(root: str, name: str, args) -> str:
    """The run folder of config ``name``, trained here if it holds no run yet."""
    from train import train_and_evaluate

    workdir = os.path.join(root, name)
    if not os.path.exists(os.path.join(workdir, "config.json")):
        start = time.perf_counter()
        summary = train_and_evaluate(shrink(_load_config(name), args.channels, args.steps, args.batch,
                                            args.image_size), workdir)
        if summary["stopped_early"]:  # SIGTERM: the run saved a checkpoint; stop the benchmark too
            raise SystemExit(f"stopped while training {name}; rerun to resume")
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return workdir


@functools.lru_cache(maxsize=None)
def load_model(workdir: str):
    """``(config, make_score_fn(cond), sde)`` of a run's EMA parameters (restored once per run)."""
    from sample import load_run_config, restore_ema_model

    from diffjax.sharding import make_mesh
    from diffjax.training import model_from_state

    config = load_run_config(workdir)
    sde = builders.build_sde(config)
    graphdef, params, model_state, _, _ = restore_ema_model(config, workdir, make_mesh())

    def make_score_fn(cond):
        model = model_from_state(graphdef, params, model_state)
        apply = (lambda x, c: model(x, c)) if cond is None else (lambda x, c: model(x, c, cond=cond))
        return model_score_fn(apply, sde, prediction=config.model.prediction, time_input=config.loss.time_input)

    return config, make_score_fn, sde


def _timed(fn, *args):
    """Compile ahead of time, then time one call: (seconds without compilation, result)."""
    compiled = fn.lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start, np.asarray(out)


def palette_outputs(workdir, cond, known, masks, args, key):
    config, make_score_fn, sde = load_model(workdir)
    config.sampling.sampler = args.sampler
    config.sampling.steps = args.sampler_steps
    if args.eta is not None:
        config.sampling.eta = args.eta
    sampler = builders.build_sampler(config)
    shape = (len(cond), *known.shape[1:])

    def run(cond, known, masks, key):
        score_fn = clip_x0(make_score_fn(cond), sde) if args.clip_x0 else make_score_fn(cond)
        return palette_lib.palette_restore(score_fn, sde, shape, key=key, sampler=sampler,
                                           known=known, mask=masks, denoise=True)[0]

    if masks is None:
        fn = jax.jit(lambda cond, key: run(cond, None, None, key))
        return _timed(fn, cond, key)
    return _timed(jax.jit(run), cond, known, masks, key)


def repaint_outputs(workdir, known, masks, args, key):
    _, make_score_fn, sde = load_model(workdir)
    fn = jax.jit(lambda x, m, k: repaint(make_score_fn(None), sde, x, m, key=k, steps=args.repaint_steps,
                                         jump_length=args.jump_length, jump_n_sample=args.jump_n_sample).clip(-1, 1))
    return _timed(fn, known, masks, key)


def biharmonic(images, masks):
    from skimage.restoration import inpaint_biharmonic

    start = time.perf_counter()
    out = np.stack([inpaint_biharmonic((img + 1) / 2, m < 0.5, channel_axis=-1) * 2 - 1
                    for img, m in zip(images, masks)])
    return time.perf_counter() - start, out.astype(np.float32)


def scores(outputs, clean) -> dict:
    """Per-image PSNR, SSIM and LPIPS; LPIPS sees both sets upsampled to >= 32 px (AlexNet's minimum)."""
    factor = -(-32 // clean.shape[1])
    if factor > 1:
        resize = lambda x: np.asarray(jax.image.resize(x, (x.shape[0], x.shape[1] * factor, x.shape[2] * factor,
                                                           x.shape[3]), "bilinear"))
        big_out, big_clean = resize(outputs), resize(clean)
    else:
        big_out, big_clean = outputs, clean
    return {
        "psnr": np.asarray(psnr(outputs, clean), np.float64),
        "ssim": np.asarray(ssim(outputs, clean), np.float64),
        "lpips": np.asarray(lpips(big_out, big_clean), np.float64),
    }


def held_out_dataset(eval_data: str, image_size: int):
    """The dataset whose ``test`` split the benchmark restores (``photo_corpus``: sources no run trains on)."""
    from diffjax.data import load_dataset

    return load_dataset(eval_data, split="test", image_size=image_size)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (its defaults are the figures' settings)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="/tmp/restoration_bench", help="folder of the runs (one per config)")
    p.add_argument("--num", type=int, default=64, help="held-out images per task")
    p.add_argument("--steps", type=int, default=3000, help="training steps of models trained here")
    p.add_argument("--channels", type=int, default=32, help="UNet base channels of models trained here")
    p.add_argument("--batch", type=int, default=32, help="training batch of models trained here")
    p.add_argument("--image_size", type=int, default=32, help="crop size of models trained here")
    p.add_argument("--sampler", default="dpm_solver_pp", help="Palette's sampler (a builders.SAMPLERS name)")
    p.add_argument("--sampler_steps", type=int, default=20, help="Palette's sampler steps")
    p.add_argument("--eta", type=float, default=None,
                   help="Palette's sampler noise (0 = ODE, 1 = SDE); default: the run's config.sampling.eta")
    p.add_argument("--clip_x0", action="store_true", help="Palette: clip the implied x0 to [-1, 1] at every step")
    p.add_argument("--repaint_steps", type=int, default=250)
    p.add_argument("--jump_length", type=int, default=10)
    p.add_argument("--jump_n_sample", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3,
                   help="sampling seeds of the diffusion methods (intervals cover images and seeds)")
    p.add_argument("--eval_data", default="photo_corpus",
                   help="dataset whose 'test' split is restored (default: the held-out-by-source photos)")
    p.add_argument("--quick", action="store_true", help="tiny models and schedules (smoke run)")
    p.add_argument("--figure", default="outputs/benchmarks/restoration_lpips.png", help="PNG of LPIPS per method and task")
    p.add_argument("--train_only", choices=CONFIGS, help="train (or reuse) this config's run under --root and exit")
    p.add_argument("--tasks", default=",".join(TASK_RUNS),
                   help=f"comma-separated subset of {','.join(TASK_RUNS)}; only their runs are needed")
    p.add_argument("--inpainting_masks", default=",".join(INPAINTING_MASKS),
                   help=f"comma-separated subset of {','.join(INPAINTING_MASKS)}: the inpainting task's mask sets")
    p.add_argument("--no_repaint", action="store_true",
                   help="inpainting: score Palette and biharmonic only (no repaint_photos run is needed)")
    return p


def main():
    p = build_parser()
    args = p.parse_args()
    tasks = args.tasks.split(",")
    if not tasks or not set(tasks) <= set(TASK_RUNS):
        p.error(f"--tasks must be a comma-separated subset of {','.join(TASK_RUNS)}, got {args.tasks!r}")
    inpainting_masks = args.inpainting_masks.split(",")
    if not inpainting_masks or not set(inpainting_masks) <= set(INPAINTING_MASKS):
        p.error(f"--inpainting_masks must be a comma-separated subset of {','.join(INPAINTING_MASKS)}, "
                f"got {args.inpainting_masks!r}")
    if args.quick:
        args.num, args.steps, args.channels, args.batch, args.image_size = 8, 20, 8, 8, 16
        args.sampler_steps, args.repaint_steps, args.jump_length, args.jump_n_sample = 4, 10, 2, 2
        args.seeds = 2

    if args.train_only:
        get_run(args.root, args.train_only, args)
        return
    runs = {name: get_run(args.root, name, args) for task in tasks for name in TASK_RUNS[task]
            if not (args.no_repaint and name == "repaint_photos")}
    from diffjax.data import texture_labels
    from sample import load_run_config

    run_config = load_run_config(next(iter(runs.values())))
    size = run_config.data.image_size
    clean = held_out_dataset(args.eval_data, size).eval_images(args.num, seed=1)
    textured = texture_labels(clean)
    assert clean.shape[1:] == (size, size, 3), clean.shape
    n, hw = len(clean), (size, size)
    key = jax.random.key(0)
    noise = np.random.default_rng(2).standard_normal(clean.shape).astype(np.float32)
    rows, per_image, task_textured = [], {}, {}

    def seeded(outputs_fn, *fn_args):
        """The diffusion methods: one run per sampling seed; mean seconds, outputs per seed."""
        runs = [outputs_fn(*fn_args, jax.random.fold_in(key, s)) for s in range(args.seeds)]
        return float(np.mean([r[0] for r in runs])), [r[1] for r in runs]

    def add(task, method, seconds, outputs, select=slice(None)):
        per_seed = [scores(o[select], clean[select]) for o in (outputs if isinstance(outputs, list) else [outputs])]
        values = {m: np.stack([d[m] for d in per_seed]) for m in ("psnr", "ssim", "lpips")}
        sub = textured[select]
        per_image[(task, method)] = values
        task_textured[task] = sub
        subsets = {f"{m}_{name}": float(v[:, sel].mean()) if sel.any() else float("nan")
                   for m, v in values.items() for name, sel in (("smooth", ~sub), ("textured", sub))}
        rows.append({"task": task, "method": method, "sec_per_image": seconds / n, "seeds": len(per_seed),
                     **{m: float(v.mean()) for m, v in values.items()}, **subsets})
        r = rows[-1]
        print(f"  {task:22s} {method:16s} PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.3f}  LPIPS {r['lpips']:.3f} "
              f"(smooth {r['lpips_smooth']:.3f}, textured {r['lpips_textured']:.3f})  "
              f"{r['sec_per_image']:.4f} s/img", flush=True)

    mask_sets = {}
    if "inpainting" in tasks and "free-form" in inpainting_masks:
        mask_sets["inpainting free-form"] = np.stack([degradations.free_form_mask(hw, 100 + i) for i in range(n)])
    if "inpainting" in tasks and "box" in inpainting_masks:
        mask_sets["inpainting box"] = np.stack([degradations.box_mask(hw, 200 + i, area_range=(0.2, 0.3))
                                                for i in range(n)])
    if "uncropping" in tasks:
        mask_sets["uncropping"] = np.stack([degradations.uncrop_mask(hw, ("left", "right", "top", "bottom", "all")[i % 5])
                                            for i in range(n)])
    for task, masks in mask_sets.items():
        workdir = runs["palette_uncropping" if task == "uncropping" else "palette_inpainting"]
        cond = palette_lib.inpainting_condition(clean, masks, noise)
        add(task, "Palette", *seeded(palette_outputs, workdir, cond, clean, masks[..., None], args))
        if task != "uncropping" and not args.no_repaint:
            add(task, "RePaint", *seeded(repaint_outputs, runs["repaint_photos"], clean, masks[..., None], args))
        add(task, "biharmonic", *biharmonic(clean, masks))

    # Crops that are (nearly) grey carry no colour to recover: colorization is scored on the colour crops only.
    colour = np.abs(clean - clean[..., :1]).max(axis=(1, 2, 3)) > 0.05
    if "colorization" in tasks:
        gray = palette_lib.colorization_condition(clean)
        seconds, colour_outs = seeded(palette_outputs, runs["palette_colorization"], gray, clean, None, args)
        if load_model(runs["palette_colorization"])[0].task.palette_colorization.get("keep_luminance", True):
            colour_outs = [np.asarray(palette_lib.keep_luminance(o, gray)) for o in colour_outs]
        add("colorization", "Palette", seconds, colour_outs, select=colour)
        add("colorization", "grayscale input", 0.0, np.repeat(gray, 3, axis=-1), select=colour)

    if "jpeg" in tasks:
        start = time.perf_counter()
        decoded = palette_lib.jpeg_condition(clean, JPEG_QUALITY)
        jpeg_seconds = time.perf_counter() - start
        add(f"JPEG q={JPEG_QUALITY}", "Palette", *seeded(palette_outputs, runs["palette_jpeg"], decoded, clean,
                                                         None, args))
        add(f"JPEG q={JPEG_QUALITY}", "decoded JPEG", jpeg_seconds, decoded)

    print(f"\n{n} held-out-by-source {size}x{size} crops of {args.eval_data} test ({int(colour.sum())} in colour, "
          f"{int(textured.sum())} textured); Palette: {args.sampler} {args.sampler_steps} steps"
          f"{'' if args.eta is None else f', eta {args.eta:g}'}{' (x0 clipped)' if args.clip_x0 else ''}; RePaint: "
          f"{args.repaint_steps} levels, jumps of {args.jump_length}, {args.jump_n_sample} resamplings\n")
    print("| task | method | PSNR (dB) | SSIM | LPIPS all | LPIPS smooth | LPIPS textured | s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | "
              f"{r['lpips_smooth']:.3f} | {r['lpips_textured']:.3f} | {r['sec_per_image']:.4f} |")
    figure = plot_grouped_bars(rows, args.figure, group="task", label="method", value="lpips",
                               ylabel="LPIPS (AlexNet), lower is better", title=f"{n} held-out-by-source {size}x{size} crops")
    print(f"\nfigure: {figure}")
    # Each diffusion method against each other method of its task, paired over the same images.
    comparisons = []
    for (task, method), values in per_image.items():
        if method not in ("Palette", "RePaint"):
            continue
        for (other_task, other), other_values in per_image.items():
            if other_task == task and other != method and not (method == "RePaint" and other == "Palette"):
                comparisons += [compare(method, f"{other} ({task})", m, values[m], other_values[m])
                                for m in ("lpips", "psnr")]
                # The targets hold on each subset: LPIPS on the smooth and the textured crops apart.
                for subset, sel in (("smooth", ~task_textured[task]), ("textured", task_textured[task])):
                    if sel.sum() >= 2:
                        comparisons.append(compare(method, f"{other} ({task}, {subset})", "lpips",
                                                   values["lpips"][:, sel], other_values["lpips"][:, sel]))
    print_comparisons(comparisons)
    print(json.dumps({"benchmark": "restoration", "num": n, "num_colour": int(colour.sum()),
                      "num_textured": int(textured.sum()), "args": vars(args),
                      "rows": rows, "comparisons": comparisons, "figure": figure}))


if __name__ == "__main__":
    main()
