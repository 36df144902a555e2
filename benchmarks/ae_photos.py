"""The photo autoencoder (LDM first stage) on crops of sources its training never reads.

For one or more trained ``configs/autoencoder_photos.py`` runs (``--workdirs``) this
measures, on ``photo_corpus`` ``test`` crops (scikit-learn's and jigzo-data's photos,
docs/data.md) at each ``--sizes``:

* PSNR and LPIPS (AlexNet) of the reconstruction (posterior mean, as ``sample.py``
  and the LDM use), each with a 95% bootstrap interval over crops;
* the **mean colour error per channel** (reconstruction minus original, in 8-bit
  levels), over all pixels and over the *green* pixels only (hue 75-165 degrees,
  saturation > 0.25, value > 0.15): a colour shift shows as a signed offset;
* a **grid score**: the power spectrum of the reconstruction error on the lattice of
  the decoder's period ``f`` (frequencies ``(a H/f, b W/f)``, DC excluded), divided by
  the mean power at every other frequency. A pattern repeating every ``f`` pixels
  puts its energy exactly there; an error without one scores about 1 or less (natural
  errors are low-pass). Scored for the posterior mean and for a posterior draw;
* the **green shift** per crop: the length of the mean RGB error vector over the
  crop's green pixels (8-bit levels; crops with under ``MIN_GREEN`` green pixels are
  left out), with its interval over crops.

With several runs, each later run is compared with the first on the same crops: the
paired difference of PSNR, LPIPS, grid score and green shift, with its 95% bootstrap
interval over crops (e.g. before / after a change of the training data).

It also compares the **colour coverage** of training and test crops: the share of
coloured pixels in each 30-degree hue bin, and the share of green pixels.

    python benchmarks/ae_photos.py --workdirs runs/ae_photos [--num 32] [--sizes 64,128]

Prints one JSON object and markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import diffjax as dj  # noqa: E402
from diffjax import ldm, metrics  # noqa: E402
from diffjax.data.corpus import PhotoCorpus, texture_labels  # noqa: E402
from diffjax.training import model_from_state  # noqa: E402

GREEN_HUE = (75.0, 165.0)  # degrees
MIN_GREEN = 50  # green pixels a crop needs for its green shift to be scored
HUE_BINS = 12


def hsv(images: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in ``[-1, 1]`` -> HSV with hue in degrees, saturation and value in [0, 1]."""
    from matplotlib.colors import rgb_to_hsv

    out = rgb_to_hsv(np.clip((np.asarray(images, np.float64) + 1) / 2, 0, 1))
    out[..., 0] *= 360.0
    return out


def coloured_mask(images: np.ndarray) -> np.ndarray:
    """Pixels with a hue worth naming: saturation > 0.25 and value > 0.15."""
    h = hsv(images)
    return (h[..., 1] > 0.25) & (h[..., 2] > 0.15)


def green_mask(images: np.ndarray) -> np.ndarray:
    """Coloured pixels whose hue is green (75-165 degrees)."""
    h = hsv(images)
    return coloured_mask(images) & (h[..., 0] >= GREEN_HUE[0]) & (h[..., 0] < GREEN_HUE[1])


def colour_coverage(images: np.ndarray) -> dict:
    """Share of all pixels that are coloured in each 30-degree hue bin, green share, mean saturation."""
    h = hsv(images)
    col = coloured_mask(images)
    bins = np.histogram(h[..., 0][col], bins=HUE_BINS, range=(0, 360))[0] / col.size
    return {"hue_bins_deg": [int(b) for b in np.arange(0, 360, 360 // HUE_BINS)],
            "coloured_share_per_bin": [round(float(b), 4) for b in bins],
            "coloured_share": round(float(col.mean()), 4),
            "green_share": round(float(green_mask(images).mean()), 4),
            "mean_saturation": round(float(h[..., 1].mean()), 4)}


def grid_score(error: np.ndarray, period: int) -> np.ndarray:
    """Per image: mean error power on the period-``period`` lattice over the mean power elsewhere.

    Args:
      error: ``(N, H, W, C)`` reconstruction error; ``H`` and ``W`` divisible by ``period``.
      period: the decoder's spatial period (its downsampling factor ``f``).

    Returns:
      ``(N,)`` ratios (about 1 or less without a periodic pattern).
    """
    e = np.asarray(error, np.float64)
    e = e - e.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(e, axes=(1, 2))) ** 2).sum(-1)
    n, h, w = power.shape
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    lattice = (u % (h // period) == 0) & (v % (w // period) == 0)
    other = ~lattice
    lattice[0, 0] = other[0, 0] = False
    return power[:, lattice].mean(1) / power[:, other].mean(1)


def channel_error(recon: np.ndarray, images: np.ndarray, mask: np.ndarray | None = None) -> list[float]:
    """Mean signed error per channel (R, G, B) in 8-bit levels, over ``mask`` pixels (all if None)."""
    d = (np.asarray(recon, np.float64) - images) * 127.5
    if mask is not None:
        if not mask.any():
            return [float("nan")] * 3
        d = d[mask]
    return [round(float(x), 2) for x in d.reshape(-1, 3).mean(0)]


def green_shift(recon: np.ndarray, images: np.ndarray, green: np.ndarray) -> np.ndarray:
    """Per crop: length of the mean RGB error vector over its green pixels (8-bit levels; NaN under MIN_GREEN)."""
    d = (np.asarray(recon, np.float64) - images) * 127.5
    count = green.sum((1, 2))
    mean = (d * green[..., None]).sum((1, 2)) / np.maximum(count, 1)[:, None]
    return np.where(count >= MIN_GREEN, np.linalg.norm(mean, axis=-1), np.nan)


def interval(values) -> list[float]:
    """95% bootstrap interval of the mean over crops (NaN crops left out)."""
    values = np.asarray(values, np.float64)
    ci = metrics.bootstrap_ci(values[~np.isnan(values)])
    return [round(ci["low"], 4), round(ci["high"], 4)]


PAIRED = {"psnr": "higher", "lpips": "lower", "grid_score_mean": "lower", "green_shift": "lower"}


def paired(first: dict, later: dict) -> dict:
    """``later - first`` per metric of PAIRED over the crops both score, with its 95% bootstrap interval."""
    out = {}
    for name, better in PAIRED.items():
        a, b = np.asarray(later[name], np.float64), np.asarray(first[name], np.float64)
        keep = ~(np.isnan(a) | np.isnan(b))
        ci = metrics.bootstrap_ci(a[keep], b[keep])
        out[name] = {"diff": round(ci["mean"], 4), "ci": [round(ci["low"], 4), round(ci["high"], 4)],
                     "crops": int(keep.sum()), "better": better}
    return out


def reconstructions(run, images: np.ndarray, key) -> tuple[np.ndarray, np.ndarray]:
    """Posterior-mean reconstructions (as ``sample.py``) and posterior-draw ones, clipped to [-1, 1]."""
    mean = np.stack(ldm.reconstruct_arrays(run, (images + 1) * 127.5, None, key=None, seed=0, sampler=None,
                                           kind=None))
    drawn = jax.jit(lambda params, x, k: model_from_state(run._graphdef, params, run._model_state)(
        x, noise_key=k)["recon"])
    draws = np.concatenate([np.asarray(drawn(run.params, images[i:i + 8], jax.random.fold_in(key, i)))
                            for i in range(0, len(images), 8)])
    return mean, np.clip(draws, -1.0, 1.0)


def evaluate(run, images: np.ndarray, key) -> dict:
    """Every figure of the module docstring for one run on one set of crops."""
    f = run.model_config.factor
    mean, draw = reconstructions(run, images, key)
    ps = np.asarray(metrics.psnr(images, mean))
    lp = np.concatenate([np.asarray(metrics.lpips(images[i:i + 16], mean[i:i + 16]))
                         for i in range(0, len(images), 16)])
    grid_mean, grid_draw = grid_score(mean - images, f), grid_score(draw - images, f)
    green = green_mask(images)
    textured = texture_labels(images)
    shift = green_shift(mean, images, green)
    per_crop = {"psnr": ps, "lpips": lp, "grid_score_mean": grid_mean, "green_shift": shift}
    return per_crop, {
        "num": len(images), "textured": int(textured.sum()),
        "psnr": round(float(ps.mean()), 3), "psnr_ci": interval(ps),
        "lpips": round(float(lp.mean()), 4), "lpips_ci": interval(lp),
        "lpips_smooth": round(float(lp[~textured].mean()), 4) if (~textured).any() else None,
        "lpips_textured": round(float(lp[textured].mean()), 4) if textured.any() else None,
        "rgb_error_all": channel_error(mean, images),
        "rgb_error_green": channel_error(mean, images, green),
        "green_pixels": int(green.sum()),
        "green_shift": round(float(np.nanmean(shift)), 3) if (~np.isnan(shift)).any() else None,
        "green_shift_ci": interval(shift) if (~np.isnan(shift)).sum() > 1 else None,
        "green_shift_crops": int((~np.isnan(shift)).sum()),
        "rgb_abs_error_all": [round(float(x), 2) for x in (np.abs(mean - images) * 127.5).reshape(-1, 3).mean(0)],
        "grid_score_mean": round(float(grid_mean.mean()), 3), "grid_score_mean_ci": interval(grid_mean),
        "grid_score_draw": round(float(grid_draw.mean()), 3), "grid_score_draw_ci": interval(grid_draw),
        "grid_score_bicubic_x4": round(float(grid_score(_bicubic_x4(images) - images, f).mean()), 3),
    }


def _bicubic_x4(images: np.ndarray) -> np.ndarray:
    """The images down and up by 4 (the reference a grid-free smooth error gives)."""
    from diffjax.tasks.sr3 import downsample, upsample

    return np.clip(np.asarray(upsample(downsample(images, 4), 4)), -1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdirs", required=True, help="comma-separated autoencoder runs")
    p.add_argument("--num", type=int, default=32, help="test crops per size")
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--coverage-num", type=int, default=256, help="crops per split for the colour coverage")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    result = {"coverage": {split: colour_coverage(PhotoCorpus(split, 64).eval_images(args.coverage_num, seed=1))
                           for split in ("train", "test")}, "runs": {}}
    crops = {s: PhotoCorpus("test", s).eval_images(args.num, seed=0) for s in sizes}
    per_crop, workdirs = {}, args.workdirs.split(",")
    for workdir in workdirs:
        run = dj.load_run(workdir)
        result["runs"][workdir] = {"step": int(run.step)}
        for s in sizes:
            per_crop[workdir, s], result["runs"][workdir][str(s)] = evaluate(run, crops[s], jax.random.key(s))
    result["paired"] = {f"{w} - {workdirs[0]}": {str(s): paired(per_crop[workdirs[0], s], per_crop[w, s])
                                                  for s in sizes} for w in workdirs[1:]}
    print(json.dumps(result, indent=1))

    print("\n| split | coloured share | green share | mean saturation | coloured share per 30-degree hue bin (0, 30, ..., 330) |")
    print("|---|---|---|---|---|")
    for split, c in result["coverage"].items():
        print(f"| {split} | {c['coloured_share']:.3f} | {c['green_share']:.4f} | {c['mean_saturation']:.3f} | "
              + " ".join(f"{b:.3f}" for b in c["coloured_share_per_bin"]) + " |")
    print("\n| run (step) | crop | PSNR [95% CI] | LPIPS [95% CI] | RGB error all (8-bit) | RGB error green "
          "(pixels) | grid score mean / draw / bicubic |")
    print("|---|---|---|---|---|---|---|")
    for workdir, r in result["runs"].items():
        for s in sizes:
            e = r[str(s)]
            print(f"| {workdir} ({r['step']}) | {s} | {e['psnr']:.2f} [{e['psnr_ci'][0]:.2f}, {e['psnr_ci'][1]:.2f}] | "
                  f"{e['lpips']:.3f} [{e['lpips_ci'][0]:.3f}, {e['lpips_ci'][1]:.3f}] | "
                  f"{e['rgb_error_all']} | {e['rgb_error_green']} ({e['green_pixels']}) | "
                  f"{e['grid_score_mean']:.2f} / {e['grid_score_draw']:.2f} / {e['grid_score_bicubic_x4']:.2f} |")
    if result["paired"]:
        print("\n| runs | crop | metric (better) | difference [95% CI over crops] | crops |")
        print("|---|---|---|---|---|")
    for label, per_size in result["paired"].items():
        for s, rows in per_size.items():
            for name, r in rows.items():
                print(f"| {label} | {s} | {name} ({r['better']}) | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, "
                      f"{r['ci'][1]:+.3f}] | {r['crops']} |")


if __name__ == "__main__":
    main()
