"""Training and forward throughput of the benchmark UNet on the local devices.

The default network (``--size bench``): channels (64, 128, 128) (base 64, mult
(1, 2, 2)), 2 residual blocks per level, attention at 16x16, 32x32 RGB, batch
32, float32. Prints the parameter count, FLOPs per image from XLA's cost
analysis (of a CPU compilation, on any device: see ``flops_per_call``),
images/s for a full Adam training step (eps-MSE loss, value_and_grad, jitted,
state donated) and for a forward pass, and the fraction of this machine's
measured float32 matmul rate that each reaches. Ends with one JSON line.

``--size ddpmpp64`` / ``ddpmpp256`` are DDPM++-sized networks (base 128; see
SIZES) at 64x64 and 256x256; ``--size tiny`` is a smoke-test size. For those
the FLOPs are counted from the program's jaxpr (convolutions and matmuls, the
MFU convention; no CPU compilation of a large network), and the report adds:

* MFU: achieved matmul-class FLOP/s over the *measured* matmul peak of the same
  run in the same compute dtype (``--dtype bfloat16`` computes in bfloat16
  with float32 master weights; bfloat16 has float32's exponent range, so no
  loss scaling is needed);
* sampling throughput: images/s of ``--sample-nfe`` (default 20) steps of
  ``UniPC`` through the network, and the sampling loop's per-step overhead
  against a bare ``lax.scan`` of as many network calls.

The main figure (training and forward images/s) goes to ``--figure``
(default ``outputs/benchmarks/train_throughput.png``).

Run: .venv/bin/python benchmarks/train_throughput.py [--batch 32] [--repeats 5]
     .venv/bin/python benchmarks/train_throughput.py --size ddpmpp64 --dtype bfloat16 --batch 128
     .venv/bin/python benchmarks/train_throughput.py --size tiny --batch 2 --repeats 1   # CPU smoke
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
import numpy as np
import optax
from flax import nnx

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diffjax.nn import UNet, UNetConfig, num_parameters
from diffjax.plots import plot_bars

# name -> (UNetConfig fields, image size). "bench" is the reference network of
# docs/unet.md; the DDPM++ sizes follow the paper's continuous-time DDPM++
# (base 128, mult (1, 2, 2, 2), attention at 16x16).
SIZES = {
    "bench": dict(image_size=32, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),
    "ddpmpp64": dict(image_size=64, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                     attn_resolutions=(16,)),
    "ddpmpp256": dict(image_size=256, base_channels=128, channel_mult=(1, 1, 2, 2, 2, 2), num_res_blocks=2,
                      attn_resolutions=(16,)),
    "tiny": dict(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)),
}


def jaxpr_flops(fn, *args) -> float:
    """Matmul-class FLOPs (convolutions and dot products) of one call, counted from its jaxpr.

    2 x multiply-adds of every ``conv_general_dilated`` and ``dot_general``,
    including those inside ``scan`` / ``custom_vjp`` / ``pjit`` bodies (times
    the scan length). Elementwise work is left out, as MFU conventionally does.
    """
    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            out = eqn.outvars[0].aval.shape if eqn.outvars else ()
            if name == "dot_general":
                (lc, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += 2.0 * np.prod(out) * np.prod([lhs[i] for i in lc])
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                # Output elements x (kernel window x input channels per group).
                total += 2.0 * np.prod(out) * np.prod(rhs) / rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            times = eqn.params.get("length", 1) if name == "scan" else 1
            for p in eqn.params.values():
                for sub in p if isinstance(p, (list, tuple)) else [p]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += times * count(inner)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


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


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
    """Measured matmul rate of the default device in ``dtype``, in GFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    seconds = median_seconds(dot, lambda: (a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def sampling_throughput(graphdef, params, rest, x, nfe: int, repeats: int) -> dict:
    """Images/s of ``nfe`` UniPC steps through the network, and the loop's per-step overhead.

    The overhead compares the sampler with ``nfe`` network calls chained in one
    ``lax.scan`` (no sampler arithmetic), both jitted and timed the same way.
    """
    import diffjax as dj

    sde = dj.VPSDE()
    batch = x.shape[0]

    def eps_fn(params, x, t):
        return nnx.merge(graphdef, params, rest)(x, t).astype(x.dtype)

    def score_fn(params):
        def fn(x, t):
            _, sigma = sde.alpha_sigma(t)
            return -eps_fn(params, x, t) / sigma[:, None, None, None]
        return fn

    sampler = dj.samplers.UniPC(nfe)
    sample = jax.jit(lambda params, x: dj.sample(score_fn(params), sde, x, key=jax.random.key(0), sampler=sampler)[0])

    @jax.jit
    def bare(params, x):
        t = jnp.full((batch,), 0.5, x.dtype)
        return jax.lax.scan(lambda y, _: (eps_fn(params, y, t), None), x, None, length=nfe)[0]

    jax.block_until_ready(sample(params, x))
    jax.block_until_ready(bare(params, x))
    # Interleaved, so both see the same load.
    t_sample, t_bare = [], []
    for _ in range(repeats):
        t_sample.append(median_seconds(sample, lambda: (params, x), 1))
        t_bare.append(median_seconds(bare, lambda: (params, x), 1))
    t_sample, t_bare = min(t_sample), min(t_bare)
    return {"nfe": nfe, "sample_img_per_s": batch / t_sample, "bare_img_per_s": batch / t_bare,
            "loop_overhead": t_sample / t_bare - 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--figure", default="outputs/benchmarks/train_throughput.png", help="PNG of images/s")
    parser.add_argument("--size", default="bench", choices=tuple(SIZES))
    parser.add_argument("--attention", default="einsum", choices=("einsum", "dot_product"),
                        help="UNetConfig.attention_impl")
    parser.add_argument("--kernel-grad", default="xla", choices=("xla", "patches", "auto"),
                        help="UNetConfig.conv_kernel_grad")
    parser.add_argument("--sample-nfe", type=int, default=20, help="sampling throughput at this NFE (0 = skip); "
                        "not run for --size bench")
    parser.add_argument("--matmul-n", type=int, default=0, help="matmul size of the peak measurement "
                        "(default 2048 on CPU, 8192 elsewhere)")
    args = parser.parse_args()
    if args.batch < 1 or args.repeats < 1 or args.sample_nfe < 0:
        parser.error(f"--batch and --repeats must be >= 1 and --sample-nfe >= 0, got {args.batch}, "
                     f"{args.repeats}, {args.sample_nfe}")

    shape = SIZES[args.size]
    size = shape["image_size"]
    cfg = UNetConfig(in_channels=3, dtype=args.dtype, param_dtype="float32", attention_impl=args.attention,
                     conv_kernel_grad=args.kernel_grad, **shape)
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

    x0 = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    t = jnp.full((batch,), 0.5)
    key = jax.random.key(2)

    train_jit = jax.jit(train_step, donate_argnums=(0, 1))
    fwd_jit = jax.jit(forward)
    if args.size == "bench":  # the figures in docs/unet.md: XLA's CPU cost analysis
        train_flops = flops_per_call(train_step, params, opt_state, rest, x0, key) / batch
        fwd_flops = flops_per_call(forward, params, rest, x0, t) / batch
    else:
        train_flops = jaxpr_flops(train_step, params, opt_state, rest, x0, key) / batch
        fwd_flops = jaxpr_flops(forward, params, rest, x0, t) / batch

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

    on_cpu = jax.devices()[0].platform == "cpu"
    matmul_n = args.matmul_n or (2048 if on_cpu else 8192)
    peak = matmul_gflops(matmul_n, dtype=jnp.float32 if args.dtype == "float32" else jnp.bfloat16)
    train_ips, fwd_ips = batch / train_s, batch / fwd_s
    train_gflops = train_flops * train_ips / 1e9
    fwd_gflops = fwd_flops * fwd_ips / 1e9
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sampling = None
    if args.sample_nfe and args.size != "bench":
        sampling = sampling_throughput(graphdef, state["params"], rest, x0, args.sample_nfe, args.repeats)

    rows = [
        ("device", jax.devices()[0].device_kind),
        ("size", f"{args.size} ({size}x{size}, attention {args.attention}, kernel grad {args.kernel_grad})"),
        ("parameters", f"{num_parameters(model):,}"),
        ("forward GFLOP / image", f"{fwd_flops / 1e9:.3f}"),
        ("train step GFLOP / image", f"{train_flops / 1e9:.3f}"),
        ("training images/s", f"{train_ips:.1f}"),
        ("forward images/s", f"{fwd_ips:.1f}"),
        (f"matmul GFLOP/s ({args.dtype}, {matmul_n}^2)", f"{peak:.1f}"),
        ("training fraction of matmul rate (MFU)", f"{train_gflops / peak:.3f}"),
        ("forward fraction of matmul rate", f"{fwd_gflops / peak:.3f}"),
        ("load average (1 min)", f"{load:.2f}"),
    ]
    if sampling:
        rows += [
            (f"sampling images/s (UniPC, {sampling['nfe']} NFE)", f"{sampling['sample_img_per_s']:.2f}"),
            (f"bare network images/s ({sampling['nfe']} calls)", f"{sampling['bare_img_per_s']:.2f}"),
            ("sampling loop overhead per step", f"{100 * sampling['loop_overhead']:.1f}%"),
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
        "train_matmul_fraction": round(train_gflops / peak, 4),
        "forward_matmul_fraction": round(fwd_gflops / peak, 4),
        "batch": batch,
        "dtype": args.dtype,
        "size": args.size,
        "attention": args.attention,
        "kernel_grad": args.kernel_grad,
        "sampling": sampling,
        "load_avg_1min": round(load, 2),
    }))


if __name__ == "__main__":
    main()
