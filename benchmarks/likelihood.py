"""Negative log-likelihood in bits per dimension of a trained run on its dataset's test split.

    python benchmarks/likelihood.py --workdir RUN [--num 512] [--batch 64] [--exact]

* LSGM runs (``task.name = "lsgm"``, also the VAE alone with ``lsgm.prior=normal``):
  the variational bound ``-log p(x | z) + log q(z | x) - log p(z)`` with one latent
  per image, the decoder's discretised logistic over the 8-bit pixels and the latent
  prior's probability-flow ODE likelihood (Hutchinson's trace, or exact with
  ``--exact``; the Normal prior in closed form). An upper bound on the discrete NLL.
* Pixel diffusion runs (``task.name = "generate"``): the probability-flow ODE
  likelihood of uniformly dequantised images, ``diffjax.bits_per_dim`` with the
  8-bit convention, also an upper bound on the discrete NLL.

Both use the first ``--num`` images of the test split in a seeded order
(``dataset.eval_images(num, seed)``; ``--num 0`` = the whole split) and print the
mean with its standard error over images, then one JSON line whose top-level
key ``test_bpd`` is the mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import diffjax as dj  # noqa: E402
from diffjax import builders  # noqa: E402
from diffjax.run_config import load_run_config  # noqa: E402


def test_images(config, num: int, seed: int) -> np.ndarray:
    """``num`` test-split images in ``[-1, 1]`` (``0`` = all), in the dataset's seeded evaluation order."""
    dataset = builders.build_dataset(config, "test")
    n = dataset.num_examples if num <= 0 else min(num, dataset.num_examples)
    return dataset.eval_images(n, seed=seed)


def _batched(fn, images: np.ndarray, batch: int, key) -> np.ndarray:
    """``fn(x, key)`` over batches (the last one padded, its padding dropped)."""
    out = []
    for i, start in enumerate(range(0, len(images), batch)):
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        out.append(np.asarray(fn(jnp.asarray(padded), jax.random.fold_in(key, i)))[:len(chunk)])
    return np.concatenate(out)


def lsgm_bpd(workdir: str, images: np.ndarray, *, batch: int, seed: int, exact: bool = False,
             rtol: float = 1e-5) -> np.ndarray:
    """Per-image bound in bits/dim of an LSGM (or VAE-alone) run."""
    from diffjax.run_lsgm import load_lsgm, lsgm_bound_fn

    model, vae_params, prior_params, _, _ = load_lsgm(workdir)
    bound = jax.jit(lsgm_bound_fn(model, exact_divergence=exact, rtol=rtol, atol=rtol))
    return _batched(lambda x, k: bound(vae_params, prior_params, x, k), images, batch, jax.random.key(seed))


def pixel_bpd(workdir: str, images: np.ndarray, *, batch: int, seed: int, exact: bool = False,
              rtol: float = 1e-5) -> np.ndarray:
    """Per-image bits/dim of a pixel diffusion run: ODE likelihood of uniformly dequantised pixels."""
    run = dj.load_run(workdir)
    score_fn, sde = run.score_fn, run.sde
    dims = math.prod(images.shape[1:])

    @jax.jit
    def bpd(x, key):
        u_key, p_key = jax.random.split(key)
        # Pixel k in {0..255} -> u = k + U[0, 1) -> y = -1 + 2 u / 256 (diffjax.bits_per_dim's convention).
        k = jnp.round((x + 1.0) * 127.5)
        y = -1.0 + 2.0 * (k + jax.random.uniform(u_key, x.shape)) / 256.0
        logp, _ = dj.log_likelihood(lambda z, t: score_fn(z, t), sde, y, key=p_key, exact_divergence=exact,
                                   rtol=rtol, atol=rtol)
        return dj.bits_per_dim(logp, dims)

    return _batched(bpd, images, batch, jax.random.key(seed))


def evaluate(workdir: str, *, num: int = 512, batch: int = 64, seed: int = 0, exact: bool = False,
             rtol: float = 1e-5, save: str = "") -> dict:
    """The test bound of the run in ``workdir``: ``{"test_bpd", "test_bpd_se", "num_images", "kind", "seconds"}``.

    With ``save`` the per-image values go to that ``.npy`` file (same images and
    order for every run of one dataset and seed, so two runs can be compared pairwise).

    Raises:
      ValueError: a workdir that is not a trained run, or a task with no likelihood here.
    """
    config = load_run_config(workdir)
    task = config.task.name
    if task not in ("lsgm", "generate"):
        raise ValueError(f"{workdir}: likelihoods are computed for 'lsgm' and 'generate' runs, not {task!r}")
    images = test_images(config, num, seed)
    start = time.perf_counter()
    if task == "lsgm":
        kind = "lsgm_bound" if config.lsgm.prior == "sde" else "vae_bound"
        values = lsgm_bpd(workdir, images, batch=batch, seed=seed, exact=exact, rtol=rtol)
    else:
        kind = "pixel_ode_dequantized"
        values = pixel_bpd(workdir, images, batch=batch, seed=seed, exact=exact, rtol=rtol)
    values = np.asarray(values, np.float64)
    if save:
        np.save(save, values)
    return {"test_bpd": float(values.mean()), "test_bpd_se": float(values.std(ddof=1) / math.sqrt(len(values)))
            if len(values) > 1 else float("nan"), "num_images": int(len(values)), "kind": kind,
            "exact_divergence": bool(exact), "rtol": rtol, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> dict:
    """Command line: print the figure and end with a JSON line holding ``test_bpd``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a trained run (train.py --workdir)")
    p.add_argument("--num", type=int, default=512, help="test images (0 = the whole test split)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact", action="store_true", help="exact divergence in the ODE (slow for pixels)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE tolerance (rtol = atol)")
    p.add_argument("--save", default="", help="write the per-image bits/dim to this .npy file")
    args = p.parse_args(argv)
    if not os.path.isdir(args.workdir):
        p.error(f"--workdir {args.workdir} does not exist")
    out = evaluate(args.workdir, num=args.num, batch=args.batch, seed=args.seed, exact=args.exact, rtol=args.rtol,
                   save=args.save)
    print(f"{out['kind']}: {out['test_bpd']:.4f} +- {out['test_bpd_se']:.4f} bits/dim "
          f"on {out['num_images']} test images ({out['seconds']} s)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
