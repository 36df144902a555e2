"""SDEdit and EGSDE on held-out Fashion-MNIST sneakers -> ankle boots (data training never saw).

For a target-domain score run and a domain-classifier run of
``configs/translation_fashion_mnist.py``::

    python train.py --config configs/translation_fashion_mnist.py:score --workdir runs/boots
    python train.py --config configs/translation_fashion_mnist.py:classifier --workdir runs/boots_cls
    python benchmarks/translation.py --score_workdir runs/boots --classifier_workdir runs/boots_cls \\
        [--num 64] [--t0s 0.3,0.4,0.5,0.6] [--plot translation.png]

every method (SDEdit, EGSDE) translates the same ``--num`` test-split sneakers
at each ``t0``, and is scored on

* realism: ``target_share``, the share of outputs that an *independent*
  classifier (multinomial logistic regression on clean training images of all
  ten classes, fitted here, never used for guidance) calls an ankle boot; and
  ``fd_alexnet``, FD-AlexNet of the outputs against as many held-out test-split
  ankle boots;
* faithfulness: SSIM and PSNR of each output to its source.

Prints a markdown table, writes a PNG plot of realism (target share) against
faithfulness (SSIM), one curve per method, and ends with one JSON line.
``--smoke`` shrinks everything to seconds (for the test suite).
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

from diffjax import metrics
from diffjax.data import load_dataset
from diffjax.data.pipeline import to_unit_range
from diffjax.run_config import load_run_config
from diffjax.runs import load_run


def fit_clean_classifier(config, num_train: int, seed: int = 0):
    """Logistic regression on clean training images of every class (the realism judge)."""
    from sklearn.linear_model import LogisticRegression

    train = load_dataset(config.data.name, split="train", image_size=config.data.image_size, seed=seed)
    rng = np.random.default_rng(seed)
    index = rng.permutation(train.num_examples)[:num_train]
    images, labels = to_unit_range(train._images[index]), train.labels()[index]
    clf = LogisticRegression(max_iter=300, C=0.05)
    clf.fit(images.reshape(len(images), -1), labels)
    test = load_dataset(config.data.name, split="test", image_size=config.data.image_size, seed=seed)
    test_images, test_labels = to_unit_range(test._images[:2000]), test.labels()[:2000]
    accuracy = float(np.mean(clf.predict(test_images.reshape(len(test_images), -1)) == test_labels))
    return clf, accuracy


def held_out(config, cls: int, num: int, seed: int = 0) -> np.ndarray:
    """``num`` test-split images of class ``cls``, in [-1, 1]."""
    test = load_dataset(config.data.name, split="test", image_size=config.data.image_size, seed=seed)
    labels = test.labels()
    index = np.flatnonzero(labels == cls)[:num]
    if len(index) < num:
        raise ValueError(f"only {len(index)} test images of class {cls}")
    return to_unit_range(test._images[index])


def _label(row: dict) -> str:
    if row["method"] == "sdedit":
        return "SDEdit"
    return f"EGSDE (lambda_s {row['lambda_s']:g}, lambda_i {row['lambda_i']:g})"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for curve in dict.fromkeys(_label(r) for r in rows):
        pts = sorted((r for r in rows if _label(r) == curve), key=lambda r: r["t0"])
        marker = "o" if pts[0]["method"] == "sdedit" else "s"
        ax.plot([r["ssim"] for r in pts], [r["target_share"] for r in pts], marker=marker, label=curve)
        for r in pts:
            ax.annotate(f"{r['t0']:g}", (r["ssim"], r["target_share"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("faithfulness: SSIM to the source")
    ax.set_ylabel("realism: share called 'ankle boot'")
    ax.set_title("sneaker -> ankle boot (labels: t0)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score_workdir", required=True)
    parser.add_argument("--classifier_workdir", required=True)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--t0s", default="0.3,0.4,0.5,0.6")
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (0 = the run's config.sampling.steps)")
    parser.add_argument("--num_train_judge", type=int, default=10000)
    parser.add_argument("--egsde_weights", default="",
                        help="EGSDE weights to run, comma-separated lambda_s:lambda_i pairs (default: the run's config.translation)")
    parser.add_argument("--plot", default="translation.png")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args(argv)
    t0s = [float(v) for v in args.t0s.split(",")]
    if args.smoke:
        args.num, args.num_train_judge, t0s = 4, 500, t0s[:2]

    overrides = {"sampling.batch_size": args.num}
    if args.steps:
        overrides["sampling.steps"] = args.steps
    run = load_run(args.score_workdir, overrides)
    config = run.config
    source_cls, target_cls = 7, 9
    domains = tuple(load_run_config(args.classifier_workdir).data.classes)
    if len(domains) == 2:  # the classifier's (source, target)
        source_cls, target_cls = domains
    judge, judge_accuracy = fit_clean_classifier(config, args.num_train_judge)
    sources = held_out(config, source_cls, args.num)
    targets = held_out(config, target_cls, args.num)
    source_share = float(np.mean(judge.predict(sources.reshape(len(sources), -1)) == target_cls))
    fd_resize = 64  # AlexNet on 64x64 upsamplings: enough for 32x32 items, 12x cheaper than 224

    tr = config.translation
    pairs = [tuple(float(v) for v in pair.split(":")) for pair in filter(None, args.egsde_weights.split(","))]
    variants = [("sdedit", None)] + [("egsde", pair) for pair in pairs or [(float(tr.lambda_s), float(tr.lambda_i))]]
    rows = []
    for method, weights in variants:
        classifier = run._translation_classifier(method, args.classifier_workdir)
        if weights is not None:
            tr.lambda_s, tr.lambda_i = weights
        for t0 in t0s:
            run.config.translation.t0 = t0
            start = time.time()
            out = run._translate(sources, method, classifier, key=jax.random.key(0))
            seconds = (time.time() - start) / len(sources)
            rows.append({
                "method": method,
                "t0": t0,
                "lambda_s": None if weights is None else weights[0],
                "lambda_i": None if weights is None else weights[1],
                "target_share": float(np.mean(judge.predict(out.reshape(len(out), -1)) == target_cls)),
                "fd_alexnet": metrics.frechet_alexnet_distance(out, targets, resize_to=fd_resize),
                "ssim": float(np.mean(metrics.ssim(out, sources))),
                "psnr": float(np.mean(metrics.psnr(out, sources))),
                "sec_per_image": seconds,
            })
            print(json.dumps(rows[-1]), flush=True)

    print(f"\nscore run {args.score_workdir} (step {run.step}), classifier {args.classifier_workdir}; "
          f"{args.num} test-split sources (class {source_cls} -> {target_cls}); sampler {config.sampling.sampler}, "
          f"{config.sampling.steps} steps, eta {config.sampling.eta}")
    print(f"judge: logistic regression on {args.num_train_judge} clean training images, test accuracy "
          f"{judge_accuracy:.3f}; it calls {source_share:.3f} of the untouched sources 'target'")
    print("\n| method | t0 | target share | FD-AlexNet | SSIM | PSNR (dB) | s / image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {_label(r)} | {r['t0']:g} | {r['target_share']:.3f} | {r['fd_alexnet']:.2f} | "
              f"{r['ssim']:.3f} | {r['psnr']:.2f} | {r['sec_per_image']:.3f} |")
    plot(rows, args.plot)
    print(f"\nplot: {args.plot}")
    summary = {"rows": rows, "judge_accuracy": judge_accuracy, "source_target_share": source_share,
               "num": args.num, "score_step": run.step, "plot": args.plot}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
