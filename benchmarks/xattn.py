"""Class-conditional Fashion-MNIST: labels by the label embedding against labels as cross-attention tokens.

Trains ``configs/ddpm_fashion_mnist.py:labels`` and ``:xattn`` (the same UNet, shrunk by
the flags below, the same data order and seed) one after the other for ``--steps`` steps,
then reports for each: parameters, training steps/s (the median logged rate, the first log interval,
which holds the compilation, left out), the training loss (mean of the last quarter of the
logged losses) and, on held-out test images with fixed noise and a fixed grid of times, the
denoising loss (eps MSE) with the true labels, with the null label and with wrong labels
(each image given the next class). ``wrong - true`` is how much the network uses the label.

    python benchmarks/xattn.py --steps 300 --batch 32 --workdir /tmp/xattn_bench

Prints a markdown table and ends with one JSON line. Runs on the offline Fashion-MNIST
(``DIFFJAX_FASHION_MNIST_DIR`` or the Debian package's files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import diffjax as dj  # noqa: E402
from diffjax import builders  # noqa: E402
from diffjax.run_config import apply_overrides, load_config_file  # noqa: E402


def config_for(variant: str, args):
    overrides = {
        "model.base_channels": args.channels, "model.channel_mult": (1, 2, 2), "model.num_res_blocks": 1,
        "model.attn_resolutions": (16,), "model.dropout": 0.0,
        "optim.lr": 5e-4, "optim.warmup_steps": 50,
        "training.num_steps": args.steps, "training.batch_size": args.batch, "training.log_every": 25,
        "training.ckpt_every": args.steps, "training.sample_every": 0, "training.ema_decay": 0.99,
        "training.progress_bar": False, "eval.enabled": False,
    }
    if variant == "xattn":
        overrides["model.context_dim"] = args.context_dim
    return apply_overrides(load_config_file(os.path.join(ROOT, "configs", f"ddpm_fashion_mnist.py:{variant}")),
                           overrides)


def heldout_losses(run, images, labels, num_classes: int) -> dict:
    """eps MSE of the run's EMA network on ``images`` with true, null and wrong labels."""
    sde = run.sde
    n = len(images)
    # One stratified time per image and fixed noise: the three losses see the same x_t.
    t = sde.eps + (sde.T - sde.eps) * (np.arange(n) + 0.5) / n
    z = jax.random.normal(jax.random.key(0), images.shape)

    @jax.jit
    def loss_of(images, z, lab):  # arrays as arguments: closed-over constants make XLA fold convolutions
        tt = jnp.asarray(t, jnp.float32)
        mean, std = sde.marginal_prob(images, tt)
        x_t = mean + std[:, None, None, None] * z
        eps_hat = -std[:, None, None, None] * run.score_fn(x_t, tt, labels=lab)
        return jnp.mean(jnp.square(eps_hat - z))

    loss = lambda lab: loss_of(images, z, lab)
    true = jnp.asarray(labels, jnp.int32)
    return {
        "heldout_true": float(loss(true)),
        "heldout_null": float(loss(jnp.full_like(true, num_classes))),
        "heldout_wrong": float(loss((true + 1) % num_classes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32, help="base_channels of both networks")
    parser.add_argument("--context_dim", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=256, help="held-out test images")
    parser.add_argument("--workdir", default="/tmp/xattn_bench")
    parser.add_argument("--variants", default="labels,xattn")
    args = parser.parse_args()

    rows = []
    for variant in args.variants.split(","):
        config = config_for(variant, args)
        workdir = os.path.join(args.workdir, variant)
        dj.train(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            logged = [json.loads(line) for line in f]
        logged = [r for r in logged if "loss" in r]
        rates = [r["images_per_sec"] / args.batch for r in logged[1:] if "images_per_sec" in r]
        tail = logged[-max(len(logged) // 4, 1):]
        run = dj.load_run(workdir)
        test = builders.build_dataset(config, "test")
        batch = test.batch(0, args.heldout, seed=1)
        row = {
            "variant": variant,
            "params": int(sum(np.size(p) for p in jax.tree.leaves(run.params))),
            "steps_per_sec": float(np.median(rates)) if rates else float("nan"),
            "train_loss": float(np.mean([r["loss"] for r in tail])),
            **heldout_losses(run, jnp.asarray(batch["image"]), batch["label"], test.num_classes),
        }
        rows.append(row)

    print(f"\n{args.steps} steps, batch {args.batch}, base_channels {args.channels}\n")
    print("| labels via | params | steps/s | train loss | held-out true | null | wrong | wrong - true |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['steps_per_sec']:.2f} | {r['train_loss']:.4f} | "
              f"{r['heldout_true']:.4f} | {r['heldout_null']:.4f} | {r['heldout_wrong']:.4f} | "
              f"{r['heldout_wrong'] - r['heldout_true']:.4f} |")
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
