"""Plug-and-play "make it a bag": an unconditional Fashion-MNIST model plus a classifier.

The first experiment of Graikos et al. (plug-and-play priors): conditional
generation with an unconditional diffusion model as the prior and a clean-image
classifier's ``-log p(bag | x)`` as the constraint
(:func:`diffjax.tasks.plug_and_play` with :func:`diffjax.tasks.pnp.classifier_constraint`).
Train an unconditional model of all ten classes first (the translation score
config with every class; about 10 minutes on 2 idle cores), then::

    python train.py --config configs/translation_fashion_mnist.py:score --workdir runs/fmnist_all \\
        "--config.data.classes=()"
    python benchmarks/pnp_bag.py --workdir runs/fmnist_all [--num 64] [--target 8] [--out pnp_bag.png]

Three ways of asking for a bag are compared on ``--num`` images each:

* ``unconditional``: the model's own samples (the share of bags is the base rate);
* ``classifier only``: the same optimisation without the prior
  (``prior_weight=0``), which finds images the guiding classifier calls a bag;
* ``plug-and-play``: prior plus classifier.

Both optimisations start from the unconditional samples (``--init samples``, at
``--t_max`` 0.5) or from noise (``--init noise``).

The *guide* is a one-hidden-layer MLP (scikit-learn, evaluated in JAX so that
it is differentiable); the *judge* that scores the outputs is an independent
multinomial logistic regression fitted on other training images and never used
for guidance (as in ``benchmarks/translation.py``). Realism is FD-AlexNet
against as many held-out test-split bags. Prints a table, writes a PNG (one row
per method) and ends with one JSON line. ``--smoke`` shrinks it to seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from translation import fit_clean_classifier, held_out  # noqa: E402

from diffjax import metrics  # noqa: E402
from diffjax.data import load_dataset  # noqa: E402
from diffjax.data.pipeline import to_unit_range  # noqa: E402
from diffjax.runs import load_run  # noqa: E402
from diffjax.parametrization import to_eps  # noqa: E402
from diffjax.tasks.pnp import classifier_constraint, plug_and_play  # noqa: E402

CLASS_NAMES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot")


def fit_guide(config, num_train: int, hidden: int, seed: int = 1):
    """A one-hidden-layer ReLU MLP on clean training images; returns ``log_prob_fn`` and test accuracy.

    Fitted on a different draw of training images than the judge (``seed``), and
    evaluated in JAX from the fitted weights so that its gradient exists.
    """
    from sklearn.neural_network import MLPClassifier

    train = load_dataset(config.data.name, split="train", image_size=config.data.image_size, seed=seed)
    index = np.random.default_rng(seed).permutation(train.num_examples)[:num_train]
    images, labels = to_unit_range(train._images[index]), train.labels()[index]
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=60, random_state=seed)
    clf.fit(images.reshape(len(images), -1), labels)
    test = load_dataset(config.data.name, split="test", image_size=config.data.image_size, seed=seed)
    test_images, test_labels = to_unit_range(test._images[:2000]), test.labels()[:2000]
    accuracy = float(np.mean(clf.predict(test_images.reshape(len(test_images), -1)) == test_labels))
    (w0, w1), (b0, b1) = [jnp.asarray(w) for w in clf.coefs_], [jnp.asarray(b) for b in clf.intercepts_]

    def log_prob_fn(x):
        hidden_units = jax.nn.relu(x.reshape(x.shape[0], -1) @ w0 + b0)
        return jax.nn.log_softmax(hidden_units @ w1 + b1)

    return log_prob_fn, accuracy


def make_eps_fn(run):
    """The run's network as ``eps_fn(x_t, t)``, what plug_and_play takes."""
    score_fn = run.score_fn

    def eps_fn(x_t, t):
        return to_eps(score_fn(x_t, t), "score", x_t, t, run.sde)

    return eps_fn


def grid(rows: list[np.ndarray], path: str, scale: int) -> None:
    """One row of images per method, ``[-1, 1]`` in, an upscaled 8-bit PNG out."""
    pixels = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    pixels = np.round((np.clip(pixels, -1, 1) + 1) * 127.5).astype(np.uint8)
    pixels = pixels.repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="an unconditional Fashion-MNIST run")
    parser.add_argument("--num", type=int, default=64, help="images per method")
    parser.add_argument("--target", type=int, default=8, help="the class asked for (8 = bag)")
    parser.add_argument("--steps", type=int, default=200, help="plug-and-play steps")
    parser.add_argument("--lr", type=float, default=0.5, help="step size at t_max (scaled by sigma_t^2 / sigma_max^2)")
    parser.add_argument("--lr_floor", type=float, default=0.05,
                        help="smallest share of --lr late in the schedule (keeps the classifier's pull)")
    parser.add_argument("--weight", type=float, default=10.0, help="weight of -log p(target | x)")
    parser.add_argument("--t_max", type=float, default=0.5)
    parser.add_argument("--init", choices=("samples", "noise"), default="samples",
                        help="start from the model's own samples (keeps them diverse) or from N(0, I)")
    parser.add_argument("--t_min", type=float, default=0.02)
    parser.add_argument("--num_train_guide", type=int, default=20000)
    parser.add_argument("--num_train_judge", type=int, default=10000)
    parser.add_argument("--hidden", type=int, default=256, help="hidden units of the guiding MLP")
    parser.add_argument("--show", type=int, default=10, help="images per row of the PNG")
    parser.add_argument("--out", default="pnp_bag.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run (tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num, args.steps, args.num_train_guide, args.num_train_judge, args.hidden = 4, 3, 300, 300, 16
    if not 0 <= args.target < 10:
        raise ValueError(f"--target must be a Fashion-MNIST class 0..9, got {args.target}")
    if args.num < 2 or args.steps < 1:
        raise ValueError(f"--num must be >= 2 and --steps >= 1, got {args.num} and {args.steps}")

    run = load_run(args.workdir)
    config = run.config
    if (run.task != "generate" or config.data.name != "fashion_mnist" or tuple(config.data.classes)
            or config.data.use_labels):
        raise ValueError(f"{args.workdir} must be an unconditional Fashion-MNIST run of every class (task "
                         f"{run.task!r}, data {config.data.name!r}, classes {tuple(config.data.classes)}, "
                         f"use_labels {config.data.use_labels})")
    guide, guide_accuracy = fit_guide(config, args.num_train_guide, args.hidden)
    judge, judge_accuracy = fit_clean_classifier(config, args.num_train_judge)
    targets = held_out(config, args.target, args.num)

    shape = (args.num,) + tuple(run.image_shape)
    key = jax.random.key(args.seed)
    unconditional = run.generate(args.num, key=args.seed) * 2.0 - 1.0
    # From noise every chain is pulled to the same mode of the heavily smoothed prior at
    # high t (measured: 15-16 of 16 chains the same shirt); from the model's own samples at a
    # moderate t_max the chains stay as diverse as the samples.
    x_init = (jnp.asarray(unconditional) if args.init == "samples"
              else jax.random.normal(jax.random.fold_in(key, 1), shape))
    t = np.linspace(args.t_max, args.t_min, args.steps)
    sigma2 = np.asarray(run.sde.alpha_sigma(jnp.asarray(t))[1]) ** 2
    # A step of lr * sigma_t^2 on the score residual is a partial denoising step at that
    # level (the prior's natural scale); the floor keeps the classifier moving at low t.
    rates = args.lr * np.maximum(sigma2 / sigma2[0], args.lr_floor)
    constraint = classifier_constraint(guide, args.target, weight=args.weight)
    eps_fn = make_eps_fn(run)

    @jax.jit
    def optimise(x0, k, prior_weight):
        return plug_and_play(eps_fn, run.sde, constraint, x0, key=k, steps=args.steps, learning_rate=rates,
                             t_schedule=jnp.asarray(t), prior_weight=prior_weight)

    outputs, seconds = {}, {}
    start = time.perf_counter()
    outputs["unconditional"] = run.generate(args.num, key=args.seed) * 2.0 - 1.0  # timed (compiled above)
    seconds["unconditional"] = time.perf_counter() - start
    for name, prior_weight in (("classifier only", 0.0), ("plug-and-play", 1.0)):
        jax.block_until_ready(optimise(x_init, key, prior_weight))  # compile (and warm up) outside the timing
        start = time.perf_counter()
        outputs[name] = np.asarray(jnp.clip(optimise(x_init, key, prior_weight), -1.0, 1.0))
        seconds[name] = time.perf_counter() - start

    rows = []
    for name, images in outputs.items():
        flat = np.asarray(images).reshape(len(images), -1)
        rows.append({
            "method": name,
            "guide_share": float(np.mean(np.argmax(np.asarray(guide(jnp.asarray(images))), -1) == args.target)),
            "judge_share": float(np.mean(judge.predict(flat) == args.target)),
            "fd_alexnet": metrics.frechet_alexnet_distance(images, targets),
            "seconds_per_image": seconds[name] / args.num,
        })
    grid([outputs[name][: args.show] for name in outputs] + [targets[: args.show]], args.out, scale=2)

    print(f"\nrun {args.workdir} (step {run.step}); target {args.target} ({CLASS_NAMES[args.target]}); "
          f"guide MLP test accuracy {guide_accuracy:.3f}, judge test accuracy {judge_accuracy:.3f}; "
          f"{args.num} images per method, {args.steps} steps\n")
    print("| method | guide share | judge share | FD-AlexNet vs held-out | s / image |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['guide_share']:.3f} | {r['judge_share']:.3f} | {r['fd_alexnet']:.2f} "
              f"| {r['seconds_per_image']:.3f} |")
    print(f"\nrows of {args.out}: " + " | ".join(list(outputs) + ["held-out " + CLASS_NAMES[args.target]]))
    summary = {"settings": vars(args), "step": run.step, "guide_accuracy": guide_accuracy,
               "judge_accuracy": judge_accuracy, "rows": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
