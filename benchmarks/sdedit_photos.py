"""SDEdit photo demo: held-out photo crops -> stroke paintings -> edits, side by side.

    python train.py --config configs/translation_photos.py --workdir runs/photos_edit
    python benchmarks/sdedit_photos.py --workdir runs/photos_edit [--num 6] [--t0 0.5] [--out sdedit_photos.png]

Each row of the PNG is a held-out crop (the test split: photos training never
sees), its stroke painting (``diffjax.degradations.stroke_painting``) and the
SDEdit edit of the painting. Ends with a JSON line (SSIM / PSNR of the edits
and of the paintings to the photos).
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
    parser.add_argument("--num", type=int, default=6)
    parser.add_argument("--t0", type=float, default=0.5)
    parser.add_argument("--colors", type=int, default=6)
    parser.add_argument("--out", default="sdedit_photos.png")
    parser.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    args = parser.parse_args(argv)
    run = load_run(args.workdir, {"translation.t0": args.t0})
    size = run.image_shape[0]
    photos = load_dataset("photos", split="test", image_size=size).eval_images(args.num)  # [-1, 1]
    paintings = stroke_painting(photos, colors=args.colors)
    edits = run.translate((paintings + 1.0) / 2.0, method="sdedit") * 2.0 - 1.0
    rows = np.concatenate([np.concatenate([p, q, e], axis=1) for p, q, e in zip(photos, paintings, edits)], axis=0)
    pixels = np.round((np.clip(rows, -1, 1) + 1) * 127.5).astype(np.uint8)
    pixels = pixels.repeat(args.scale, 0).repeat(args.scale, 1)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(args.out)
    summary = {
        "num": args.num, "t0": args.t0, "step": run.step, "out": args.out,
        "ssim_edit": float(np.mean(metrics.ssim(edits, photos))),
        "ssim_painting": float(np.mean(metrics.ssim(paintings, photos))),
        "psnr_edit": float(np.mean(metrics.psnr(edits, photos))),
        "psnr_painting": float(np.mean(metrics.psnr(paintings, photos))),
    }
    print(f"columns: held-out photo | stroke painting | SDEdit (t0 {args.t0}); written to {args.out}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
