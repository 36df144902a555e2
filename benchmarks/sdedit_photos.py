"""SDEdit photo demo: held-out photo crops -> stroke paintings -> edits, side by side.

    python train.py --config configs/translation_photos.py --workdir runs/photos_edit
    python benchmarks/sdedit_photos.py --workdir runs/photos_edit [--num 64] [--t0 0.1,0.2,0.3] [--out sdedit_photos.png]

Each row of the PNG is a held-out crop (the test split: photos training never
sees), its stroke painting (``diffjax.degradations.stroke_painting``) and the
SDEdit edit of the painting at each ``--t0`` (comma-separated: the paper's
realism / faithfulness trade-off, one column per level). Prints a table of
realism (FD-AlexNet against other held-out crops) and faithfulness (SSIM / PSNR
to the photo, SSIM to the painting) for the paintings and the edits at each
level, and ends with a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import metrics
from diffjax.data import load_dataset
from diffjax.degradations import stroke_painting
from diffjax.runs import load_run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=64, help="held-out crops edited and scored")
    parser.add_argument("--show", type=int, default=8, help="rows of the PNG")
    parser.add_argument("--t0", default="0.1,0.2,0.3", help="comma-separated noise levels, one column each")
    parser.add_argument("--colors", type=int, default=6)
    parser.add_argument("--out", default="sdedit_photos.png")
    parser.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    args = parser.parse_args(argv)
    levels = [float(v) for v in args.t0.split(",")]
    run = load_run(args.workdir)
    size = run.image_shape[0]
    # 2 x num held-out crops: the first num are painted and edited, the rest are the
    # reference set of real photos for FD-AlexNet (realism).
    held_out = load_dataset("photos", split="test", image_size=size).eval_images(2 * args.num)  # [-1, 1]
    photos, reference = held_out[: args.num], held_out[args.num:]
    paintings = stroke_painting(photos, colors=args.colors)
    edits = [run.translate((paintings + 1.0) / 2.0, method="sdedit", t0=t0) * 2.0 - 1.0 for t0 in levels]
    columns = [photos[: args.show], paintings[: args.show], *(e[: args.show] for e in edits)]
    rows = np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns)], axis=0)
    pixels = np.round((np.clip(rows, -1, 1) + 1) * 127.5).astype(np.uint8)
    pixels = pixels.repeat(args.scale, 0).repeat(args.scale, 1)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(args.out)
    summary = {
        "num": args.num, "step": run.step, "out": args.out,
        "ssim_painting": float(np.mean(metrics.ssim(paintings, photos))),
        "psnr_painting": float(np.mean(metrics.psnr(paintings, photos))),
        "fd_painting": metrics.frechet_alexnet_distance(paintings, reference),
        "fd_photos": metrics.frechet_alexnet_distance(photos, reference),
        "edits": [{"t0": t0, "fd_alexnet": metrics.frechet_alexnet_distance(e, reference),
                   "ssim": float(np.mean(metrics.ssim(e, photos))),
                   "psnr": float(np.mean(metrics.psnr(e, photos))),
                   "ssim_to_painting": float(np.mean(metrics.ssim(e, paintings)))} for t0, e in zip(levels, edits)],
    }
    print(f"columns: held-out photo | stroke painting | SDEdit at t0 = {', '.join(map(str, levels))}; "
          f"written to {args.out}")
    print(f"\n{args.num} held-out crops; FD-AlexNet against {args.num} other held-out crops (realism), "
          f"SSIM / PSNR to the photo and SSIM to the painting (faithfulness)\n")
    print("| input | FD-AlexNet | SSIM to photo | PSNR to photo | SSIM to painting |")
    print("|---|---|---|---|---|")
    print(f"| held-out photos themselves | {summary['fd_photos']:.2f} | 1 | inf | "
          f"{summary['ssim_painting']:.3f} |")
    print(f"| stroke painting | {summary['fd_painting']:.2f} | {summary['ssim_painting']:.3f} | "
          f"{summary['psnr_painting']:.2f} | 1 |")
    for e in summary["edits"]:
        print(f"| SDEdit, t0 = {e['t0']:g} | {e['fd_alexnet']:.2f} | {e['ssim']:.3f} | {e['psnr']:.2f} | "
              f"{e['ssim_to_painting']:.3f} |")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
