"""Can FD-AlexNet tell apart what it should at the main job's 16x16 digits?

The main job (``configs/ddpm_digits.py``) reports FD-AlexNet of its samples against
held-out digits next to the real-versus-real floor. This script scores sets that
*should* score worse than real digits, with the main job's feature pipeline
(16x16 digits in [-1, 1], resized to 224, AlexNet conv5 pooled) and the same set
size on both sides, over several disjoint draws of the compared set:

* training digits (the floor);
* training digits blurred (Gaussian, sigma 0.5 and 1 pixel);
* training digits with Gaussian noise (sd 0.3);
* one class only (all 0s);
* pure noise (uniform in [-1, 1]).

    python benchmarks/fd_sensitivity.py              # 128 images per set, 3 draws
    python benchmarks/fd_sensitivity.py --num 64 --draws 2   # the figures in docs/training.md
    python benchmarks/fd_sensitivity.py --quick      # 32 images, 2 draws

Prints a markdown table (mean and spread over draws, and the ratio to the floor)
and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders  # noqa: E402
from diffjax.metrics import alexnet_moments, frechet_distance  # noqa: E402


def moments(images):
    return alexnet_moments(images, batch_size=len(images))


def blur(images, sigma):
    return np.stack([gaussian_filter(im, sigma=(sigma, sigma, 0)) for im in images]).astype(np.float32)


def of_classes(dataset, classes, n, draw):
    """``n`` training digits whose labels are in ``classes``, from batches of one seed per draw."""
    out, step = [], 0
    while sum(len(o) for o in out) < n:
        batch = dataset.batch(step, 256, seed=1000 + draw)
        out.append(batch["image"][np.isin(batch["label"], classes)])
        step += 1
    return np.concatenate(out)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=128, help="images per set (the held-out split has 297)")
    parser.add_argument("--draws", type=int, default=3, help="disjoint draws of each compared set")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.num, args.draws = 32, 2

    from train import load_config_file

    config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                           "ddpm_digits.py"))
    train = builders.build_dataset(config, "train")
    held_out = builders.build_dataset(config, "test").eval_images(args.num, seed=0)
    ref = moments(held_out)
    rng = np.random.default_rng(0)

    def sets(draw):
        real = train.eval_images(args.num, seed=draw)
        noise = rng.standard_normal(real.shape).astype(np.float32)
        return {
            "training digits (floor)": real,
            "blurred, sigma 0.5 px": blur(real, 0.5),
            "blurred, sigma 1 px": blur(real, 1.0),
            "noise sd 0.3 added": np.clip(real + 0.3 * noise, -1, 1),
            "one class only (0)": of_classes(train, [0], args.num, draw),
            "uniform noise": rng.uniform(-1, 1, real.shape).astype(np.float32),
        }

    results: dict[str, list[float]] = {}
    for draw in range(args.draws):
        for name, images in sets(draw).items():
            results.setdefault(name, []).append(frechet_distance(*moments(images), *ref))
        print(f"draw {draw}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items()), flush=True)

    floor = float(np.mean(results["training digits (floor)"]))
    print(f"\nFD-AlexNet against {args.num} held-out 16x16 digits, {args.num} images per set, "
          f"{args.draws} draws (mean ± std over draws)\n")
    print("| compared set | FD-AlexNet | / floor |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f} | "
              f"{np.mean(values) / floor:.1f}x |")
    print(json.dumps({"benchmark": "fd_sensitivity", "num": args.num, "draws": args.draws, "fd": results}))


if __name__ == "__main__":
    main()
