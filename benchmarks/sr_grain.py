"""Where SR3's grain on smooth regions comes from: sampler variants on held-out crops of several sizes.

For a trained SR3 run (``configs/sr3_photos_x4.py``) this super-resolves ``photo_corpus``
``test`` crops (sources no training run reads, docs/data.md) of each ``--sizes`` side
(x4 from side / 4) with variants of the config's sampler and scores each output:

* ``default``: the config's sampler (stochastic DPM-Solver++, ``eta=1``, 40 log-SNR steps,
  projection ``each``, tiles of the network's size blended inside the sampler);
* ``ode``: the same with ``eta=0`` (no fresh noise at any step);
* ``sde+ode``: ``eta=1`` down to ``t = --switch``, then ``eta=0`` for the last
  ``--ode-steps`` of the 40 steps (no fresh noise at the low noise levels);
* ``stop early``: ``eta=1`` down to ``t = --switch`` only, then one Tweedie step
  (the network is never evaluated at the lowest noise levels);
* ``untiled`` (not in the default list): the default sampler on the whole image at once,
  for networks that accept any size (the photo UNet checks its input size, so it refuses);

and bicubic. Metrics per crop: LPIPS (AlexNet), PSNR, and the **grain**: the RMS of
the output's high-pass (the image minus its Gaussian blur, sigma 1 px), in 8-bit levels,
over the crop's *flat pixels* (where the ground truth's own high-pass, averaged over
5x5, is under 2 levels). The ground truth's grain on the same pixels is reported too.

Crops are labelled by content: *textured* (``diffjax.data.texture_labels``), else
*defocused* (no fine detail but coarse structure: luma standard deviation > ``--defocus-std``),
else *smooth*. Every variant is compared with bicubic and with ``default`` on LPIPS:
95% bootstrap interval of the paired difference over crops and seeds.

With ``--against RUN`` the ``default`` sampler of a second SR3 run (e.g. one trained on
other data) is scored on the same crops with the same keys, and this run's ``default`` is
compared with it: paired 95% intervals of LPIPS, PSNR and grain over crops and seeds.

    python benchmarks/sr_grain.py --workdir runs/sr3_x4 [--num 16] [--sizes 32,64,128] [--seeds 2] [--against RUN]

Prints one JSON object and markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from intervals import compare, print_comparisons  # noqa: E402

from diffjax import builders, metrics  # noqa: E402
from diffjax.data import load_dataset, texture_labels  # noqa: E402
from diffjax.degradations import LUMA_WEIGHTS  # noqa: E402
from diffjax.samplers.base import sample  # noqa: E402
from diffjax.tasks.sr3 import (clip_denoised, conditional_score_fn, consistency_projection, downsample,  # noqa: E402
                               downsample_pinv, upsample)
from diffjax.guidance import consistent_x0  # noqa: E402
from diffjax.tiling import tiled_score_fn  # noqa: E402
from diffjax.training import model_from_state  # noqa: E402

FLAT_LEVELS = 2.0  # 8-bit levels of local high-pass RMS under which a ground-truth pixel is "flat"


def highpass(images: np.ndarray) -> np.ndarray:
    """Image minus its Gaussian blur (sigma 1 px, per channel), in 8-bit levels."""
    x = np.asarray(images, np.float64) * 127.5
    return x - gaussian_filter(x, sigma=(0, 1, 1, 0))


def flat_mask(hr: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` True where the ground truth's 5x5-averaged high-pass RMS is under FLAT_LEVELS."""
    energy = uniform_filter((highpass(hr) ** 2).mean(-1), size=(1, 5, 5))
    return np.sqrt(energy) < FLAT_LEVELS


def grain(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per crop: RMS high-pass (8-bit levels) over the mask's pixels (NaN where the mask is empty)."""
    hp2 = (highpass(images) ** 2).mean(-1)
    count = mask.sum((1, 2))
    return np.where(count > 0, np.sqrt((hp2 * mask).sum((1, 2)) / np.maximum(count, 1)), np.nan)


def content_classes(hr: np.ndarray, defocus_std: float) -> np.ndarray:
    """``"textured"``, ``"defocused"`` or ``"smooth"`` per crop (see the module docstring)."""
    luma = ((np.asarray(hr, np.float64) + 1) / 2) @ np.asarray(LUMA_WEIGHTS)
    textured = texture_labels(hr)
    structured = luma.std((1, 2)) > defocus_std
    return np.where(textured, "textured", np.where(structured, "defocused", "smooth"))


def make_variant(graphdef, model_state, sde, config, *, tile, overlap, eta_after: float, switch: float | None,
                 ode_steps: int, steps: int, stop_early: bool = False):
    """``sr(params, cond, low, key)`` for one variant: SR3's score (clipped x0, projection ``each``,
    composed as :func:`diffjax.tasks.sr3.super_resolve` composes it) driven by the config's sampler
    (DPM-Solver++) with ``eta=1`` down to ``switch`` and with ``eta_after`` after it."""
    base = builders.build_sampler(config)

    def sr(params, cond, low, key):
        model = model_from_state(graphdef, params, model_state)
        score = conditional_score_fn(lambda x, c, ct: model(x, c, cond=ct), sde, prediction=config.model.prediction,
                                     time_input=config.loss.time_input)
        score = clip_denoised(score, sde)
        if tile is None or tile >= cond.shape[1]:
            score_fn = lambda x, t: score(x, t, cond)  # noqa: E731
        else:
            score_fn = tiled_score_fn(score, cond, tile, overlap)
        factor = cond.shape[1] // low.shape[1]
        score_fn = consistent_x0(score_fn, sde, low, lambda x: downsample(x, factor),
                                 lambda y: downsample_pinv(y, factor))
        prior_key, k1, k2 = jax.random.split(key, 3)
        x = sde.prior_sample(prior_key, cond.shape[:3] + (3,))
        if switch is None:
            x, _ = sample(score_fn, sde, x, key=k1, sampler=replace(base, steps=steps, eta=eta_after),
                          denoise=True)
        else:
            first = steps if stop_early else steps - ode_steps
            x, _ = sample(score_fn, sde, x, key=k1, sampler=replace(base, steps=first, eta=1.0),
                          t_end=switch, denoise=stop_early)
            if not stop_early:
                x, _ = sample(score_fn, sde, x, key=k2, sampler=replace(base, steps=ode_steps, eta=eta_after),
                              t_start=switch, denoise=True)
        return consistency_projection(jnp.clip(x, -1.0, 1.0), low, factor)

    return jax.jit(sr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/sr3_x4")
    p.add_argument("--num", type=int, default=16, help="crops per size")
    p.add_argument("--sizes", default="32,64,128")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--switch", type=float, default=0.15, help="time after which the sampler turns deterministic")
    p.add_argument("--ode-steps", type=int, default=10)
    p.add_argument("--variants", default="default,ode,sde+ode,stop early")
    p.add_argument("--defocus-std", type=float, default=0.06)
    p.add_argument("--against", default="", help="a second SR3 run whose default sampler is compared with this one's")
    args = p.parse_args()

    from diffjax.sharding import make_mesh
    from sample import load_run_config, restore_ema_model

    config = load_run_config(args.workdir)
    pipeline = builders.build_pipeline(config)
    graphdef, params, model_state, mc, step = restore_ema_model(config, args.workdir, make_mesh())
    sde = builders.build_sde(config)
    steps = config.sampling.steps
    common = dict(overlap=pipeline.tile_overlap, ode_steps=min(args.ode_steps, steps - 1), steps=steps)
    specs = {"default": dict(tile=mc.image_size, eta_after=1.0, switch=None),
             "ode": dict(tile=mc.image_size, eta_after=0.0, switch=None),
             "sde+ode": dict(tile=mc.image_size, eta_after=0.0, switch=args.switch),
             "stop early": dict(tile=mc.image_size, eta_after=1.0, switch=args.switch, stop_early=True),
             "untiled": dict(tile=None, eta_after=1.0, switch=None)}
    variants = [v for v in args.variants.split(",") if v]
    fns = {v: make_variant(graphdef, model_state, sde, config, **specs[v], **common) for v in variants}
    runs = {v: params for v in variants}
    if args.against:
        if "default" not in variants:
            raise ValueError("--against compares the default variants: keep 'default' in --variants")
        other = load_run_config(args.against)
        o_graphdef, o_params, o_state, o_mc, _ = restore_ema_model(other, args.against, make_mesh())
        if o_mc.image_size != mc.image_size or builders.build_pipeline(other).scale != pipeline.scale:
            raise ValueError(f"--against {args.against}: network size / scale differ from {args.workdir}'s")
        variants.append("against")
        fns["against"] = make_variant(o_graphdef, o_state, builders.build_sde(other), other, **specs["default"],
                                      **common)
        runs["against"] = o_params
    result = {"step": step, "sampler_steps": steps, "switch": args.switch, "sizes": {}}
    comparisons = []
    for size in [int(s) for s in args.sizes.split(",")]:
        hr = load_dataset("photo_corpus", split="test", image_size=size).eval_images(args.num, seed=0)
        low = pipeline.low_res(hr)
        cond = jnp.asarray(upsample(low, pipeline.scale))
        classes = content_classes(hr, args.defocus_std)
        flat = flat_mask(hr)

        def score(outs):
            lp = np.stack([np.asarray(metrics.lpips(o, hr), np.float64) for o in outs])
            ps = np.stack([np.asarray(metrics.psnr(o, hr), np.float64) for o in outs])
            gr = np.stack([grain(o, flat) for o in outs])
            return {"lpips": lp, "psnr": ps, "grain": gr}, {"lpips": round(float(lp.mean()), 4), "psnr": round(float(ps.mean()), 2),
                        "grain_flat": round(float(np.nanmean(gr)), 3),
                        **{f"lpips_{c}": round(float(lp[:, classes == c].mean()), 4) if (classes == c).any()
                           else None for c in ("smooth", "defocused", "textured")}}

        per_image, rows = {}, {}
        per_image["bicubic"], rows["bicubic"] = score([np.clip(np.asarray(cond), -1, 1)])
        for v in variants:
            if v == "untiled" and size <= mc.image_size:
                continue
            per_image[v], rows[v] = score([np.asarray(fns[v](runs[v], cond, jnp.asarray(low), jax.random.key(s)))
                                           for s in range(args.seeds)])
            print(f"  size {size}: {v} {rows[v]}", flush=True)  # partial results survive an interruption
        outputs = rows
        result["sizes"][str(size)] = {"num": args.num, "classes": {c: int((classes == c).sum())
                                                                   for c in ("smooth", "defocused", "textured")},
                                      "flat_share": round(float(flat.mean()), 3),
                                      "grain_flat_ground_truth": round(float(np.nanmean(grain(hr, flat))), 3),
                                      "rows": rows}
        for name in outputs:
            if name != "bicubic":
                comparisons.append({**compare(f"{name} ({size})", f"bicubic ({size})", "lpips",
                                              per_image[name]["lpips"], per_image["bicubic"]["lpips"]),
                                    "size": size})
            if name not in ("bicubic", "default", "against") and "default" in outputs:
                comparisons.append({**compare(f"{name} ({size})", f"default ({size})", "lpips",
                                              per_image[name]["lpips"], per_image["default"]["lpips"]),
                                    "size": size})
        if "against" in outputs:
            for metric in ("lpips", "psnr", "grain"):
                a, b = per_image["default"][metric], per_image["against"][metric]
                keep = ~np.isnan(a).any(0) & ~np.isnan(b).any(0)  # crops with flat pixels (grain)
                comparisons.append({**compare(f"{args.workdir} ({size})", f"{args.against} ({size})", metric,
                                              a[:, keep], b[:, keep]), "size": size})
    result["comparisons"] = comparisons
    print(json.dumps(result, indent=1))
    print(f"\nSR3 checkpoint {step}; {args.num} photo_corpus test crops per size, {args.seeds} seeds; grain = "
          "high-pass RMS (8-bit levels) on flat ground-truth pixels")
    print("\n| size (classes s/d/t) | method | LPIPS | LPIPS smooth / defocused / textured | PSNR | grain (truth) |")
    print("|---|---|---|---|---|---|")
    for size, r in result["sizes"].items():
        cl = r["classes"]
        for name, row in r["rows"].items():
            per_class = " / ".join("-" if row[f"lpips_{c}"] is None else f"{row[f'lpips_{c}']:.3f}"
                                   for c in ("smooth", "defocused", "textured"))
            print(f"| {size} ({cl['smooth']}/{cl['defocused']}/{cl['textured']}) | {name} | {row['lpips']:.3f} | "
                  f"{per_class} | {row['psnr']:.2f} | {row['grain_flat']:.2f} ({r['grain_flat_ground_truth']:.2f}) |")
    print_comparisons(comparisons)


if __name__ == "__main__":
    main()
