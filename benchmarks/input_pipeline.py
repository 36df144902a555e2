"""Streaming input pipeline: decode rate, peak host memory and time to the first batch vs folder size.

Writes a folder of JPEGs of mixed sizes (``--min-px`` to ``--max-px`` per side) once
(``--cache``), then, for each folder size in ``--files`` and each output size in
``--sizes``, runs a fresh Python process that loads the folder as
``load_dataset("folder", image_size=S, crop="random")`` and draws ``--batches``
batches of ``--batch`` images through the training iterator (grain, threads, prefetch). Each run reports:

* ``load_s``: ``load_dataset`` (libraries already imported): the folder listed, and for a
  folder of at most 512 images every header read; a larger folder's headers are read by a
  thread beside training instead;
* ``first_batch_s``: from the iterator's creation to the first batch in hand;
* ``first_step_s``: the two together, the time a run waits before its first step;
* ``check_s``: from the start of loading until the background check of every file has
  ended (``null`` for folders checked at load);
* ``images_per_s``: decoded, scaled and cropped images per second after the first batch;
* ``peak_rss_mb``: the process's peak resident memory (``ru_maxrss``), which must
  not grow with the number of files (an eager loader would hold N x S x S x 3 bytes:
  ``eager_mb`` for comparison).

Ends with a markdown table and one JSON line.

Run: PYTHONPATH=. .venv/bin/python benchmarks/input_pipeline.py [--files 1000 10000] [--sizes 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_folder(path: str, n: int, low: int, high: int, seed: int = 0) -> None:
    """``n`` JPEGs of sides drawn in ``[low, high]`` (adds only the files still missing)."""
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(low, high + 1, 2))
        name = os.path.join(path, f"img{i:06d}.jpg")
        if os.path.exists(name):
            continue
        tint = rng.uniform(0.2, 1.0, 3)
        image = np.linspace(0, 255, w)[None, :, None] * tint + rng.normal(0, 25, (h, w, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(name, quality=90)


def measure(folder: str, size: int, batch: int, batches: int) -> dict:
    """One run in this process (called in a fresh subprocess by :func:`main`)."""
    import resource

    import grain  # noqa: F401 - imported by every training process anyway (with Orbax): not timed

    from diffjax.data import load_dataset

    start = time.perf_counter()
    ds = load_dataset("folder", data_dir=folder, image_size=size, channels=3, eval_fraction=0, crop="random")
    loaded = time.perf_counter()
    it = ds.iterator(batch, seed=0)
    next(it)
    first = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - first)
    it.close()
    check = getattr(ds, "file_check", None)
    check_s = None
    if check is not None:
        check.wait()
        check_s = round(time.perf_counter() - start, 2)  # an upper bound: the check may have ended earlier
        check.raise_if_failed()
    return {"files": ds.num_examples, "size": size, "load_s": round(loaded - start, 2),
            "first_batch_s": round(first - loaded, 2), "first_step_s": round(first - start, 2), "check_s": check_s,
            "images_per_s": round(rate, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "eager_mb": round(ds.num_examples * size * size * 3 / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--min-px", type=int, default=80)
    parser.add_argument("--max-px", type=int, default=400)
    parser.add_argument("--cache", default="/tmp/diffjax_input_pipeline")
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch, args.batches)))
        return
    rows = []
    for n in args.files:
        folder = os.path.join(args.cache, f"{n}_{args.min_px}_{args.max_px}")
        write_folder(folder, n, args.min_px, args.max_px)
        for size in args.sizes:
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            out = subprocess.run([sys.executable, __file__, "--one", folder, str(size), "--batch", str(args.batch),
                                  "--batches", str(args.batches)], env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    print("| files | image_size | images/s | load (s) | first batch (s) | first step (s) | peak RSS (MB) "
          "| an in-memory uint8 array would hold (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['files']:,} | {r['size']} | {r['images_per_s']:.0f} | {r['load_s']} | {r['first_batch_s']} "
              f"| {r['first_step_s']} | {r['peak_rss_mb']:.0f} | {r['eager_mb']:,.0f} |")
    print(json.dumps({"batch": args.batch, "batches": args.batches, "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
