"""Host-side cost of the degradations that Palette training draws for every row.

Times each mask generator (ms per mask, at 32x32 and 256x256) and each Palette
task's ``prepare_batch`` (images/s on one core, batch 64 of 32x32 photo crops,
after the dataset has produced the batch). This host work runs in the training
loop's thread, so it bounds the training rate on a fast accelerator.

    python benchmarks/host_degradation.py [--repeats 200]

Prints a markdown table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders, degradations  # noqa: E402

MASKS = {
    "free_form": degradations.free_form_mask,
    "box": degradations.box_mask,
    "irregular": degradations.irregular_mask,
    "thin": degradations.thin_mask,
    "thick": degradations.thick_mask,
}
TASKS = ("palette_inpainting", "palette_uncropping", "palette_colorization", "palette_jpeg")


def mask_ms(generate, shape, repeats: int) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(repeats):
        generate(shape, rng)
    return (time.perf_counter() - start) / repeats * 1e3


def prepare_batch_rate(name: str, batch: int, repeats: int) -> float:
    from train import load_config_file

    config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", f"{name}.py"))
    dataset, pipeline = builders.build_dataset(config, "train"), builders.build_pipeline(config)
    images = dataset.batch(0, batch)
    rows = np.arange(batch)
    start = time.perf_counter()
    for step in range(repeats):
        pipeline.prepare_batch(images, step=step, seed=0, rows=rows)
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="masks timed per generator and size")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    masks = {name: {f"{s}x{s}": mask_ms(fn, (s, s), args.repeats) for s in (32, 256)} for name, fn in MASKS.items()}
    rates = {name: prepare_batch_rate(name, args.batch, max(1, args.repeats // 10)) for name in TASKS}

    print("| mask | ms at 32x32 | ms at 256x256 |\n|---|---|---|")
    for name, row in masks.items():
        print(f"| {name} | {row['32x32']:.3f} | {row['256x256']:.3f} |")
    print(f"\n| task | prepare_batch images/s (batch {args.batch}, 32x32, one core) |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} |")
    print(json.dumps({"benchmark": "host_degradation", "mask_ms": masks, "prepare_batch_img_per_s": rates,
                      "batch": args.batch, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
