"""Images/s and MFU of the training step of ``configs/paper_bf16.py`` under each layout.

Builds the config's run (``TrainingSetup``: network, optimizer, data), places the
state replicated or FSDP-split (``--fsdp``), jits the real training step
(``make_train_step`` with ``--grad-accum``, ``--remat``, ``--dtype``) and times
``--steps`` steps after one warm-up step on synthetic batches of the data's
shape. FLOPs per step come from XLA's cost analysis of the compiled step; MFU
is achieved FLOP/s over ``--peak-tflops`` per device (default: the H100 SXM
dense peak of the compute dtype, 989 bf16 / 67 float32 TFLOP/s). Prints one JSON line.

Run: PYTHONPATH=. python benchmarks/scale_step.py --dtype bfloat16 --fsdp --batch 32
     PYTHONPATH=. python benchmarks/scale_step.py --smoke --steps 2     # CPU check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEAK_TFLOPS = {"bfloat16": 989.0, "float32": 67.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--remat", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--smoke", action="store_true", help="the config's smoke size (CPU)")
    args = parser.parse_args()

    import jax
    import numpy as np

    from configs.paper_bf16 import get_config
    from diffjax.run_training import TrainingSetup
    from diffjax.sharding import data_sharding, per_device_bytes, replicated, state_shardings
    from diffjax.training import make_train_step

    c = get_config("smoke" if args.smoke else None)
    c.data.name = "photos" if not args.smoke else c.data.name  # synthetic-free source of the right shape
    c.model.dtype, c.model.remat, c.sharding.fsdp = args.dtype, bool(args.remat), args.fsdp
    c.training.batch_size, c.training.grad_accum = args.batch, args.grad_accum
    run = TrainingSetup(c)
    state = run.take_initial_state()
    shardings = state_shardings(state, run.mesh, fsdp=args.fsdp)
    state = jax.device_put(state, shardings)
    rep, data = replicated(run.mesh), data_sharding(run.mesh)
    step = jax.jit(make_train_step(run.graphdef, run.loss_fn, run.optimizer, 0.9999, grad_accum=args.grad_accum),
                   in_shardings=(shardings, data, rep), out_shardings=(shardings, rep), donate_argnums=0)
    rng = np.random.default_rng(0)
    batch = jax.device_put({"image": rng.uniform(-1, 1, (args.batch,) + run.dataset.image_shape).astype(np.float32)},
                           data)
    key = jax.random.key(0)
    compiled = step.lower(state, batch, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))  # per device program
    state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    peak = (args.peak_tflops or PEAK_TFLOPS[args.dtype]) * 1e12
    memory = compiled.memory_analysis()
    print(json.dumps({
        "device": str(jax.devices()[0].device_kind), "devices": jax.device_count(), "image_size": run.dataset.image_shape[0],
        "dtype": args.dtype, "fsdp": args.fsdp, "remat": bool(args.remat), "grad_accum": args.grad_accum,
        "batch": args.batch, "step_s": round(seconds, 4), "images_per_s": round(args.batch / seconds, 1),
        "flops_per_step_per_device": flops, "mfu": round(flops / seconds / peak, 4),
        "param_bytes_per_device": per_device_bytes(state.params),
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None), "loss": float(metrics["loss"]),
    }))


if __name__ == "__main__":
    main()
