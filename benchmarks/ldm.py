"""Latent diffusion against pixel-space SR3 and bicubic: x4 super-resolution, 16x16 -> 64x64 (docs/ldm.md).

Trains, in ``--out``:

1. the first stage, ``configs/autoencoder_photos.py`` (``--ae-steps``);
2. the LDM, ``configs/ldm_photos_sr4.py`` on that autoencoder (``--ldm-steps``);
3. pixel-space SR3, ``configs/sr3_photos_x4.py`` at 64x64 with the *same UNet*
   (base 32, multipliers 1, 2, 2, one block per level) (``--sr3-steps``), keeping a
   checkpoint every ``--sr3-steps / 10`` steps;

then super-resolves ``--num`` held-out-by-source ``photo_corpus`` test crops
(sources no training run sees) with bicubic, SR3 (at the end of its training,
and at the checkpoint whose training time is closest to the LDM's, "equal
wall-clock"), the LDM, and reports the autoencoder's own reconstruction of the
64x64 targets (the ceiling the LDM can reach). Both diffusion models sample with
their config's sampler (stochastic DPM-Solver++, 40 steps), one image per call.
Metrics against the ground truth: PSNR, SSIM, LPIPS (AlexNet); seconds per image
exclude compilation; training images/s is the run's steady logged throughput and
training seconds are ``steps * batch / images_per_sec`` (compilation excluded).

    nice python benchmarks/ldm.py --out outputs/benchmarks/ldm [--ae-steps 600 --ldm-steps 800 --sr3-steps 400 --num 24]

Writes ``results.json`` and ``table.md`` in ``--out`` and prints the table. Runs
already in ``--out`` (with their final checkpoint) are reused, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import diffjax as dj  # noqa: E402
from diffjax import builders, ldm, metrics  # noqa: E402
from diffjax.pipelines.sr3 import SR3Pipeline  # noqa: E402
from diffjax.run_config import load_config_file  # noqa: E402
from diffjax.runs import restore_ema_model  # noqa: E402
from diffjax.tasks.sr3 import upsample  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
UNET = {"model.base_channels": 32, "model.channel_mult": (1, 2, 2), "model.num_res_blocks": 1,
        "model.attn_resolutions": (), "model.dropout": 0.0}


def _steady(workdir: str, batch: int, steps: int) -> tuple[float, float]:
    """(training images/s, training seconds) from the run's logged throughput (the last half of the log)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if "images_per_sec" in line]
    ips = [r["images_per_sec"] for r in rows[len(rows) // 2:] if r.get("images_per_sec", 0) > 0]
    rate = float(np.median(ips)) if ips else float("nan")
    return rate, steps * batch / rate


def _train(spec: str, workdir: str, overrides: dict) -> float:
    done = os.path.join(workdir, "checkpoints", str(overrides["training.num_steps"]))
    if os.path.isdir(done):
        print(f"reusing {workdir}")
        return float("nan")
    start = time.perf_counter()
    dj.train(os.path.join(ROOT, spec), workdir, overrides=dict(overrides, **{"training.progress_bar": False}))
    return time.perf_counter() - start


def _scores(name: str, out: np.ndarray, hr: np.ndarray, **extra) -> dict:
    lp = np.concatenate([np.asarray(metrics.lpips(out[i:i + 16], hr[i:i + 16])) for i in range(0, len(hr), 16)])
    row = {"method": name, "psnr": float(np.mean(np.asarray(metrics.psnr(out, hr)))),
           "ssim": float(np.mean(np.asarray(metrics.ssim(out, hr)))), "lpips": float(np.mean(lp)), **extra}
    print(json.dumps(row))
    return row


def _timed(fn, lows, key):
    fn(lows[:1], jax.random.fold_in(key, 10_000))  # compile
    start = time.perf_counter()
    out = np.stack(fn(lows, key))
    return out, (time.perf_counter() - start) / len(lows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/benchmarks/ldm")
    p.add_argument("--ae-steps", type=int, default=600)
    p.add_argument("--ldm-steps", type=int, default=800)
    p.add_argument("--sr3-steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--num", type=int, default=24, help="held-out test crops")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ae_dir, ldm_dir, sr3_dir = (os.path.join(args.out, n) for n in ("ae", "ldm", "sr3"))
    common = {"training.batch_size": args.batch, "training.log_every": 25}

    wall = {"ae": _train("configs/autoencoder_photos.py", ae_dir,
                         dict(common, **{"training.num_steps": args.ae_steps,
                                         "training.ckpt_every": args.ae_steps}))}
    wall["ldm"] = _train("configs/ldm_photos_sr4.py", ldm_dir,
                         dict(common, **UNET, **{"training.num_steps": args.ldm_steps,
                                                 "training.ckpt_every": args.ldm_steps,
                                                 "autoencoder.workdir": ae_dir}))
    every = max(1, args.sr3_steps // 10)
    wall["sr3"] = _train("configs/sr3_photos_x4.py", sr3_dir,
                         dict(common, **UNET, **{"training.num_steps": args.sr3_steps, "data.image_size": 64,
                                                 "training.ckpt_every": every, "training.keep_checkpoints": 20}))
    rates = {"ae": _steady(ae_dir, args.batch, args.ae_steps), "ldm": _steady(ldm_dir, args.batch, args.ldm_steps),
             "sr3": _steady(sr3_dir, args.batch, args.sr3_steps)}

    config = load_config_file(os.path.join(ROOT, "configs/sr3_photos_x4.py"))
    config.data.image_size = 64
    hr = builders.build_dataset(config, "test").eval_images(args.num, seed=0)
    lows = SR3Pipeline(scale=4).low_res(hr)
    key = jax.random.key(0)
    rows = [_scores("bicubic", np.clip(np.asarray(upsample(lows, 4)), -1, 1), hr)]

    ae_run = dj.load_run(ae_dir)
    ceiling = np.stack(ldm.reconstruct_arrays(ae_run, (hr + 1) * 127.5, None, key=None, seed=0, sampler=None,
                                              kind=None))
    ae_metrics = json.load(open(os.path.join(ae_dir, "metrics.json")))
    rows.append(_scores("autoencoder reconstruction (LDM ceiling)", np.clip(ceiling, -1, 1), hr,
                        train_images_per_sec=rates["ae"][0], train_seconds=rates["ae"][1], steps=args.ae_steps,
                        end_of_training_log=ae_metrics))

    ldm_run = dj.load_run(ldm_dir)
    out, spi = _timed(lambda x, k: ldm._super_resolve(ldm_run, list(x), k, None), lows, key)
    rows.append(_scores("LDM (f=4 latent, DPM-Solver++ SDE 40)", out, hr, seconds_per_image=spi,
                        train_images_per_sec=rates["ldm"][0], train_seconds=rates["ldm"][1], steps=args.ldm_steps))

    sr3_run = dj.load_run(sr3_dir)
    out, spi_sr3 = _timed(lambda x, k: sr3_run._super_resolve(list(x), key=k), lows, key)
    rows.append(_scores("SR3 pixel space (DPM-Solver++ SDE 40, projection each)", out, hr,
                        seconds_per_image=spi_sr3, train_images_per_sec=rates["sr3"][0],
                        train_seconds=rates["sr3"][1], steps=args.sr3_steps))
    # SR3 at the checkpoint closest to the LDM's training time.
    equal_step = int(np.clip(round(rates["ldm"][1] * rates["sr3"][0] / args.batch / every) * every, every,
                             args.sr3_steps))
    sr3_run.params = restore_ema_model(sr3_run.config, sr3_dir, sr3_run.mesh, step=equal_step)[1]
    out, _ = _timed(lambda x, k: sr3_run._super_resolve(list(x), key=k), lows, key)
    rows.append(_scores(f"SR3 at the LDM's training time (step {equal_step})", out, hr, seconds_per_image=spi_sr3,
                        train_seconds=equal_step * args.batch / rates["sr3"][0], steps=equal_step))

    def fmt(v, spec):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)

    lines = ["| method | PSNR | SSIM | LPIPS | s / image | train img/s | train s | steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.4f} | "
                     f"{fmt(r.get('seconds_per_image'), '.3f')} | {fmt(r.get('train_images_per_sec'), '.1f')} | "
                     f"{fmt(r.get('train_seconds'), '.0f')} | {r.get('steps', '')} |")
    table = "\n".join(lines)
    by = {r["method"].split(" ")[0] + ("@equal" if "training time" in r["method"] else ""): r for r in rows}
    targets = {
        "ldm_beats_bicubic_lpips": by["LDM"]["lpips"] < by["bicubic"]["lpips"],
        "ldm_sampling_speedup_vs_sr3": spi_sr3 / spi,
        "ldm_4x_faster_sampling": spi_sr3 / spi >= 4.0,
        "ldm_lpips_no_worse_than_sr3_at_equal_wall_clock": by["LDM"]["lpips"] <= by["SR3@equal"]["lpips"],
    }
    result = {"args": vars(args), "rows": rows, "targets": targets, "wall_seconds_incl_compile": wall,
              "devices": str(jax.devices())}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(json.dumps(targets))


if __name__ == "__main__":
    main()
