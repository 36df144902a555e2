"""The CPU training gap, layer by layer: how to compute the UNet's convolution gradients.

For every distinct convolution of the benchmark UNet (the network of
``benchmarks/train_throughput.py``: channels (64, 128, 128), 32x32, batch 32,
float32), found by tracing its forward pass, it times in one process:

* the forward convolution (NHWC / HWIO, what the UNet runs);
* the kernel gradient as XLA computes it (the transposed convolution);
* the kernel gradient as ``lax.conv_general_dilated_patches`` + one
  ``dot_general`` (:func:`diffjax.nn.layers.patches_kernel_grad`);
* XLA's kernel gradient and forward convolution in NCHW / OIHW;
* XLA's input gradient.

Then whole training steps of the UNet with ``UNetConfig(conv_kernel_grad=...)``
set to "xla" and "patches", at several batch sizes; with ``--flags`` each XLA
flag setting (the thunk runtime, XNNPACK, oneDNN, single-threaded Eigen, ...)
is run in its own process, since XLA reads its flags once.

    python benchmarks/conv_grad.py                  # layers + training steps
    python benchmarks/conv_grad.py --flags          # + one process per XLA flag setting
    python benchmarks/conv_grad.py --quick          # smoke: 8x8 images, tiny net

Prints markdown tables and ends with one JSON line. Every time is the fastest of
``--repeats`` calls after a warm-up (a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from diffjax.nn import UNet, UNetConfig  # noqa: E402
from diffjax.nn.layers import patches_kernel_grad  # noqa: E402

# XLA flag settings compared with --flags (each in a fresh process).
FLAG_SETTINGS = {
    "default": "",
    "thunk runtime off": "--xla_cpu_use_thunk_runtime=false",
    "xnnpack on": "--xla_cpu_use_xnnpack=true",
    "onednn on": "--xla_cpu_use_onednn=true",
    "eigen single-thread": "--xla_cpu_multi_thread_eigen=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
}


def fastest(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def unet_config(quick: bool, kernel_grad: str = "xla") -> UNetConfig:
    if quick:
        return UNetConfig(image_size=8, in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(4,), conv_kernel_grad=kernel_grad)
    return UNetConfig(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                      attn_resolutions=(16,), conv_kernel_grad=kernel_grad)


def conv_shapes(cfg: UNetConfig, batch: int) -> collections.Counter:
    """(input shape, kernel shape, strides) of every convolution in the forward pass, with counts."""
    model = UNet(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    x = jnp.zeros((batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    jaxpr = jax.make_jaxpr(lambda x: model(x, jnp.zeros((batch,))))(x)
    shapes = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
                shapes[(tuple(lhs), tuple(rhs), tuple(eqn.params["window_strides"]))] += 1
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
                walk(sub)
            for p in eqn.params.values():
                if hasattr(p, "jaxpr"):
                    walk(p.jaxpr)

    walk(jaxpr.jaxpr)
    return shapes


def layer_table(cfg: UNetConfig, batch: int, repeats: int) -> list[dict]:
    rows = []
    print(f"# Per-layer convolution times, batch {batch}, ms (fastest of {repeats})\n")
    print("| input NHWC | kernel HWIO | stride | count | forward | kernel grad XLA | kernel grad patches "
          "| forward NCHW | kernel grad XLA NCHW | input grad XLA | best kernel grad |")
    print("|" + "---|" * 11)
    for (lhs, rhs, strides), count in sorted(conv_shapes(cfg, batch).items(), key=lambda kv: -np.prod(kv[0][0])):
        kx, kw, kg = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, lhs)
        w = jax.random.normal(kw, rhs) * 0.05
        conv = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
        y = conv(x, w)
        g = jax.random.normal(kg, y.shape)
        fwd = jax.jit(conv)
        wgrad_xla = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
        wgrad_patches = jax.jit(lambda x, g: patches_kernel_grad(x, g, rhs[:2], strides, "SAME"))
        dgrad_xla = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
        conv_nchw = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))  # noqa: E731
        x_n, w_n, g_n = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), g.transpose(0, 3, 1, 2)
        fwd_nchw = jax.jit(conv_nchw)
        wgrad_nchw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv_nchw(x, w), w)[1](g)[0])
        # Same numbers first (a benchmark of a wrong kernel would be worthless).
        np.testing.assert_allclose(wgrad_patches(x, g), wgrad_xla(x, w, g), rtol=2e-3, atol=2e-3 * float(jnp.abs(wgrad_xla(x, w, g)).max()))
        r = {
            "input": lhs, "kernel": rhs, "strides": strides, "count": count,
            "forward_ms": 1e3 * fastest(fwd, x, w, repeats=repeats),
            "wgrad_xla_ms": 1e3 * fastest(wgrad_xla, x, w, g, repeats=repeats),
            "wgrad_patches_ms": 1e3 * fastest(wgrad_patches, x, g, repeats=repeats),
            "forward_nchw_ms": 1e3 * fastest(fwd_nchw, x_n, w_n, repeats=repeats),
            "wgrad_xla_nchw_ms": 1e3 * fastest(wgrad_nchw, x_n, w_n, g_n, repeats=repeats),
            "dgrad_xla_ms": 1e3 * fastest(dgrad_xla, x, w, g, repeats=repeats),
        }
        r["best_wgrad"] = min(("xla", "patches", "xla NCHW"), key=lambda k: r[{"xla": "wgrad_xla_ms", "patches": "wgrad_patches_ms", "xla NCHW": "wgrad_xla_nchw_ms"}[k]])
        rows.append(r)
        print(f"| {lhs} | {rhs} | {strides[0]} | {count} | {r['forward_ms']:.2f} | {r['wgrad_xla_ms']:.2f} | "
              f"{r['wgrad_patches_ms']:.2f} | {r['forward_nchw_ms']:.2f} | {r['wgrad_xla_nchw_ms']:.2f} | "
              f"{r['dgrad_xla_ms']:.2f} | {r['best_wgrad']} |", flush=True)
    total = {k: sum(r[k] * r["count"] for r in rows) for k in
             ("forward_ms", "wgrad_xla_ms", "wgrad_patches_ms", "forward_nchw_ms", "wgrad_xla_nchw_ms", "dgrad_xla_ms")}
    total["best_per_layer_wgrad_ms"] = sum(min(r["wgrad_xla_ms"], r["wgrad_patches_ms"]) * r["count"] for r in rows)
    print("\nSums over the network (time x count), ms: " + ", ".join(f"{k} {v:.1f}" for k, v in total.items()))
    return rows, total


def train_images_per_s(cfg: UNetConfig, batch: int, repeats: int) -> float:
    """Images/s of a full jitted Adam step (eps-MSE, value_and_grad, state donated)."""
    model = UNet(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(2e-4)
    opt_state = opt.init(params)

    def loss_fn(params, x0, key):
        t = jax.random.uniform(key, (x0.shape[0],), minval=1e-3, maxval=1.0)
        eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
        a, s = jnp.cos(0.5 * jnp.pi * t)[:, None, None, None], jnp.sin(0.5 * jnp.pi * t)[:, None, None, None]
        return jnp.mean((nnx.merge(graphdef, params, rest)(a * x0 + s * eps, t) - eps) ** 2)

    @jax.jit
    def step(params, opt_state, x0, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x0, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x0 = jax.random.normal(jax.random.key(1), (batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    state = [params, opt_state]

    def run(i):
        state[0], state[1], loss = step(state[0], state[1], x0, jax.random.key(i))
        return loss

    jax.block_until_ready(run(0))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(i + 1))
        best = min(best, time.perf_counter() - start)
    return batch / best


def train_table(quick: bool, batches, repeats: int) -> dict:
    print(f"\n# Training steps, images/s (fastest of {repeats}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})\n")
    print("| batch | conv_kernel_grad=xla | conv_kernel_grad=patches | conv_kernel_grad=auto |")
    print("|---|---|---|---|")
    out = {}
    for b in batches:
        row = {k: train_images_per_s(unet_config(quick, k), b, repeats) for k in ("xla", "patches", "auto")}
        out[str(b)] = row
        print(f"| {b} | {row['xla']:.2f} | {row['patches']:.2f} | {row['auto']:.2f} |", flush=True)
    return out


def flags_table(quick: bool, batch: int, repeats: int) -> dict:
    """Training images/s (xla kernel gradients) under each XLA flag setting, one process each."""
    print(f"\n# XLA flag settings, training images/s at batch {batch} (one process each)\n")
    print("| setting | XLA_FLAGS | images/s |")
    print("|---|---|---|")
    out = {}
    for name, flags in FLAG_SETTINGS.items():
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        cmd = [sys.executable, os.path.abspath(__file__), "--train-only", "--batches", str(batch),
               "--repeats", str(repeats), "--kernel-grads", "xla"] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        try:
            ips = json.loads(proc.stdout.strip().splitlines()[-1])["train"][str(batch)]["xla"]
        except (IndexError, KeyError, json.JSONDecodeError):
            ips = None
        out[name] = {"xla_flags": flags, "images_per_s": ips,
                     "error": None if ips else (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
        print(f"| {name} | `{flags}` | {'failed: ' + out[name]['error'] if ips is None else f'{ips:.2f}'} |", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny UNet at 8x8 (smoke test)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes for the training steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flags", action="store_true", help="also one process per XLA flag setting")
    parser.add_argument("--train-only", action="store_true", help="only the training-step table")
    parser.add_argument("--kernel-grads", default="xla,patches,auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in (args.batches or ("4" if args.quick else "16,32,64")).split(",")]
    if args.repeats < 1 or min(batches) < 1:
        parser.error(f"--repeats and every batch must be >= 1, got {args.repeats} and {batches}")
    result = {"benchmark": "conv_grad", "quick": args.quick, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "jax": jax.__version__, "device": jax.devices()[0].device_kind,
              "load_avg_1min": os.getloadavg()[0]}
    if args.train_only:
        kinds = args.kernel_grads.split(",")
        result["train"] = {str(b): {k: train_images_per_s(unet_config(args.quick, k), b, args.repeats) for k in kinds}
                           for b in batches}
        print(json.dumps(result))
        return
    cfg = unet_config(args.quick)
    result["layers"], result["layer_sums_ms"] = layer_table(cfg, 32 if not args.quick else 4, args.repeats)
    result["train"] = train_table(args.quick, batches, args.repeats)
    if args.flags:
        result["flags"] = flags_table(args.quick, 32 if not args.quick else 4, args.repeats)
    result["load_avg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(result, default=list))


if __name__ == "__main__":
    main()
