"""Subprocess worker for tests/test_scale_training.py (device count is fixed when jax starts).

Modes:
  accum   gradient accumulation vs one batch on the devices (prints JSON of the largest difference);
  train   a tiny run (``--fsdp``, ``--grad-accum``), final parameters to ``--out`` (npz) and
          per-device parameter bytes as JSON;
  restore restore a run's latest checkpoint replicated on this process's devices, parameters to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]


def scale_config(num_steps: int, fsdp: bool, grad_accum: int, base_channels: int = 32):
    """The tiny digits run, widened so that FSDP has kernels worth splitting (base 32)."""
    from train_fixtures import tiny_config

    c = tiny_config(num_steps=num_steps, batch_size=16)
    c.model.base_channels = base_channels
    c.sharding.fsdp = fsdp
    c.training.grad_accum = grad_accum
    return c


def accum(k: int, base_channels: int = 32, batch_size: int = 32) -> dict:
    """One step with ``grad_accum=k`` and one without, on a deterministic loss: same state."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from diffjax.run_training import TrainingSetup
    from diffjax.sharding import data_sharding, replicated
    from diffjax.training import make_train_step

    run = TrainingSetup(scale_config(1, False, 1, base_channels))
    state = run.take_initial_state()
    # Move the zero-initialised output layer off zero so every gradient is non-trivial.
    state = state.replace(params=jax.tree.map(
        lambda p: p + 0.02 * jax.random.normal(jax.random.key(7), p.shape, p.dtype), state.params))

    def loss_fn(apply_fn, x0, key, mask=None):  # no randomness: the split cannot change it
        c = jnp.mean(x0, axis=(1, 2, 3)) * 0.5 + 0.5
        per_example = jnp.mean((apply_fn(x0 * 0.7, c) - x0) ** 2, axis=(1, 2, 3))
        return jnp.mean(per_example), {"per_example": per_example, "mean_c": jnp.mean(c)}

    # Plain SGD: the update is proportional to the gradient, so any gradient difference shows.
    optimizer = optax.sgd(0.5)
    state = state.replace(opt_state=optimizer.init(state.params))
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (batch_size,) + run.dataset.image_shape).astype(np.float32)}
    rep, data = replicated(run.mesh), data_sharding(run.mesh)
    outs = []
    for kk in (1, k):
        step = jax.jit(make_train_step(run.graphdef, loss_fn, optimizer, 0.9, grad_accum=kk),
                       in_shardings=(rep, data, rep), out_shardings=(rep, rep))
        outs.append(step(jax.device_put(state, rep), jax.device_put(batch, data), jax.random.key(0)))
    (s1, m1), (sk, mk) = outs
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(sk)))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(s1.params),
                                                                jax.tree.leaves(state.params)))
    return {"devices": jax.device_count(), "max_state_diff": diff, "max_update": moved,
            "loss": [float(m1["loss"]), float(mk["loss"])], "grad_norm": [float(m1["grad_norm"]), float(mk["grad_norm"])],
            "mean_c": [float(m1["mean_c"]), float(mk["mean_c"])]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("accum", "train", "restore"))
    parser.add_argument("--workdir", default="")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=32, help="accum: the UNet's width")
    parser.add_argument("--batch", type=int, default=32, help="accum: rows of the one batch")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import jax
    import numpy as np

    from train_fixtures import flat_params, restore_state

    if args.mode == "accum":
        print(json.dumps(accum(args.grad_accum, args.base_channels, args.batch)))
        return
    config = scale_config(args.steps, args.fsdp, args.grad_accum)
    if args.mode == "train":
        from diffjax.run_training import TrainingSetup
        from diffjax.sharding import per_device_bytes, state_shardings
        from train import train_and_evaluate

        summary = train_and_evaluate(config, args.workdir)
        # Bytes one device holds of the parameters under this run's layout.
        run = TrainingSetup(config)
        init = run.take_initial_state()
        placed = jax.device_put(init.params, state_shardings(init.params, run.mesh, fsdp=args.fsdp))
        out = {"devices": jax.device_count(), "step": summary["step"], "param_bytes": per_device_bytes(placed),
               "opt_bytes": per_device_bytes(jax.device_put(
                   init.opt_state, state_shardings(init.opt_state, run.mesh, fsdp=args.fsdp)))}
    else:
        out = {"devices": jax.device_count()}
    state = restore_state(args.workdir, config)
    np.savez(args.out, **flat_params(state.params), **{"ema" + k: v for k, v in flat_params(state.ema_params).items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
