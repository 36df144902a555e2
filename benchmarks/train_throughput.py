"""Training and forward throughput of the benchmark UNet on the local devices.

The network: channels (64, 128, 128) (base 64, mult (1, 2, 2)), 2 residual
blocks per level, attention at 16x16, 32x32 RGB, batch 32, float32.

Prints the parameter count, FLOPs per image from XLA's cost analysis (of a CPU
compilation, on any device: see ``flops_per_call``), images/s
for a full Adam training step (eps-MSE loss, value_and_grad, jitted, state
donated) and for a forward pass, and the fraction of this machine's measured
float32 matmul rate that each reaches. Ends with one JSON line; the main figure
(training and forward images/s) goes to ``--figure``
(default ``outputs/benchmarks/train_throughput.png``).

Run: .venv/bin/python benchmarks/train_throughput.py [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diffjax.nn import UNet, UNetConfig, num_parameters
from diffjax.plots import plot_bars


def flops_of(compiled) -> float:
    """Total FLOPs XLA's cost analysis reports for a compiled program."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device program
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def flops_per_call(fn, *args) -> float:
    """FLOPs of one call of ``fn(*args)``, counted by XLA's cost analysis on the CPU backend.

    On GPU the cost analysis leaves out work done in library calls (cuDNN
    convolutions, cuBLAS products): on an H100 it reported 0.155 GFLOP per image
    for this UNet's forward pass against 3.01 on the CPU. The program is the same,
    so the count always comes from a CPU compilation.
    """
    cpu = jax.devices("cpu")[0]
    return flops_of(jax.jit(fn).lower(*jax.device_put(args, cpu)).compile())


def median_seconds(fn, args_fn, repeats: int) -> float:
    """Median wall time of ``fn(*args_fn())`` over ``repeats`` blocked calls."""
    times = []
    for _ in range(repeats):
        args = args_fn()
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul rate of the default device, in GFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    seconds = median_seconds(dot, lambda: (a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--figure", default="outputs/benchmarks/train_throughput.png", help="PNG of images/s")
    args = parser.parse_args()

    cfg = UNetConfig(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2),
                     num_res_blocks=2, attn_resolutions=(16,), dtype=args.dtype)
    # An rbg key: initialisation compiles far faster than with threefry on CPU.
    model = UNet(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adam(2e-4)
    opt_state = optimizer.init(params)
    batch = args.batch

    def loss_fn(params, rest, x0, key):
        t_key, n_key = jax.random.split(key)
        t = jax.random.uniform(t_key, (x0.shape[0],), minval=1e-3, maxval=1.0)
        eps = jax.random.normal(n_key, x0.shape)
        # A cosine VP schedule: alpha^2 + sigma^2 = 1.
        alpha = jnp.cos(0.5 * jnp.pi * t)[:, None, None, None]
        sigma = jnp.sin(0.5 * jnp.pi * t)[:, None, None, None]
        net = nnx.merge(graphdef, params, rest)
        pred = net(alpha * x0 + sigma * eps, t)
        return jnp.mean((pred - eps) ** 2)

    def train_step(params, opt_state, rest, x0, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, x0, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def forward(params, rest, x, t):
        return nnx.merge(graphdef, params, rest)(x, t)

    x0 = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    t = jnp.full((batch,), 0.5)
    key = jax.random.key(2)

    train_jit = jax.jit(train_step, donate_argnums=(0, 1))
    fwd_jit = jax.jit(forward)
    train_flops = flops_per_call(train_step, params, opt_state, rest, x0, key) / batch
    fwd_flops = flops_per_call(forward, params, rest, x0, t) / batch

    state = {"params": params, "opt": opt_state}
    step = [0]

    def run_train():
        state["params"], state["opt"], loss = train_jit(
            state["params"], state["opt"], rest, x0, jax.random.fold_in(key, step[0]))
        step[0] += 1
        return loss

    for _ in range(2):  # warm-up: compile and first-touch memory
        jax.block_until_ready(run_train())
    train_s = median_seconds(run_train, lambda: (), args.repeats)
    jax.block_until_ready(fwd_jit(state["params"], rest, x0, t))
    fwd_s = median_seconds(fwd_jit, lambda: (state["params"], rest, x0, t), args.repeats)

    peak = matmul_gflops()
    train_ips, fwd_ips = batch / train_s, batch / fwd_s
    train_gflops = train_flops * train_ips / 1e9
    fwd_gflops = fwd_flops * fwd_ips / 1e9
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rows = [
        ("device", jax.devices()[0].device_kind),
        ("parameters", f"{num_parameters(model):,}"),
        ("forward GFLOP / image", f"{fwd_flops / 1e9:.3f}"),
        ("train step GFLOP / image", f"{train_flops / 1e9:.3f}"),
        ("training images/s", f"{train_ips:.1f}"),
        ("forward images/s", f"{fwd_ips:.1f}"),
        ("matmul GFLOP/s (f32, 2048^2)", f"{peak:.1f}"),
        ("training fraction of matmul rate", f"{train_gflops / peak:.2f}"),
        ("forward fraction of matmul rate", f"{fwd_gflops / peak:.2f}"),
        ("load average (1 min)", f"{load:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    figure = plot_bars({"training step": train_ips, "forward pass": fwd_ips}, args.figure, ylabel="images / s",
                       title=f"UNet 32x32x3, batch {batch}, {args.dtype}, {jax.devices()[0].device_kind}")
    print(f"figure: {figure}")
    print(json.dumps({
        "figure": figure,
        "train_img_per_s": round(train_ips, 2),
        "forward_img_per_s": round(fwd_ips, 2),
        "params": num_parameters(model),
        "forward_gflop_per_img": round(fwd_flops / 1e9, 4),
        "train_gflop_per_img": round(train_flops / 1e9, 4),
        "matmul_gflop_per_s": round(peak, 1),
        "train_matmul_fraction": round(train_gflops / peak, 3),
        "forward_matmul_fraction": round(fwd_gflops / peak, 3),
        "batch": batch,
        "dtype": args.dtype,
        "load_avg_1min": round(load, 2),
    }))


if __name__ == "__main__":
    main()
