"""Seconds per image and peak memory: the same UNet2DModel and DDIM steps in diffjax (jit) and diffusers (eager).

    python benchmarks/diffusers_speed.py --torch-python /path/to/python-with-torch-and-diffusers \
        [--archs ddpm-cifar10-32,ddpm-celebahq-256] [--steps 10,2] [--batch 4,1]

Each side runs in its own process (random weights, the published architecture
from diffjax.interop.published_configs), so peak resident memory (ru_maxrss) is
that side's own. diffjax: one compiled dj.sample with DDIM on diffusers'
leading timesteps, timed after a warm-up call (compile time reported apart).
diffusers: DDIMScheduler + UNet2DModel loop under torch.no_grad(), timed after
one warm-up step. Prints one JSON line per run and a table: wall seconds and
CPU seconds (all threads) per image, peak RSS, and the 1-minute load average
at the end of the run (on a shared CPU wall time mostly measures the other jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _cpu_s():
    """CPU seconds of this process, all threads: on a shared machine this is what the work cost, apart from
    how much of the CPU the other jobs left it."""
    t = os.times()
    return t.user + t.system


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_jax(arch, steps, batch):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import diffjax as dj
    from diffjax.interop import schedule_from_diffusers
    from diffjax.interop.published_configs import PUBLISHED_UNETS
    from diffjax.nn.diffusers_unet import DiffusersUNet2D
    from diffjax.parametrization import model_score_fn

    config = PUBLISHED_UNETS[arch]
    model = DiffusersUNet2D(config, rngs=nnx.Rngs(0))
    schedule = schedule_from_diffusers({"_class_name": "DDIMScheduler"}, "DDIMPipeline", steps=steps)
    graphdef, params = nnx.split(model)

    @jax.jit
    def generate(params, x):
        net = nnx.merge(graphdef, params)
        score_fn = model_score_fn(net, schedule.sde, prediction="eps", time_input="index")
        return dj.sample(score_fn, schedule.sde, x, key=jax.random.key(0), sampler=schedule.sampler)[0]

    size = config["sample_size"]
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    t0 = time.perf_counter()
    generate(params, x).block_until_ready()
    first = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), _cpu_s()
    generate(params, x).block_until_ready()
    sec, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return {"side": "diffjax (jit)", "compile_and_first_s": round(first, 2), "seconds": sec, "cpu_seconds": cpu}


def run_torch(arch, steps, batch):
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    import importlib.util

    # Plain data: load the file alone, so this side needs no JAX.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "diffjax", "interop", "published_configs.py")
    spec = importlib.util.spec_from_file_location("published_configs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    PUBLISHED_UNETS = module.PUBLISHED_UNETS

    config = PUBLISHED_UNETS[arch]
    model = UNet2DModel(**config).eval()
    sched = DDIMScheduler()
    size = config["sample_size"]
    x0 = torch.randn(batch, 3, size, size)

    def loop(n):
        sched.set_timesteps(steps)
        x = x0.clone()
        with torch.no_grad():
            for t in sched.timesteps[:n]:
                x = sched.step(model(x, t).sample, t, x).prev_sample
        return x

    loop(1)  # warm-up
    t0, c0 = time.perf_counter(), _cpu_s()
    loop(steps)
    return {"side": "diffusers (PyTorch eager)", "seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_s() - c0,
            "torch_threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="ddpm-cifar10-32,ddpm-celebahq-256")
    p.add_argument("--steps", default="10,2", help="DDIM steps per architecture")
    p.add_argument("--batch", default="4,1", help="batch size per architecture")
    p.add_argument("--torch-python", default=None, help="a Python with torch + diffusers (omit: diffjax side only)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    archs, steps, batches = args.archs.split(","), [int(s) for s in args.steps.split(",")], \
        [int(b) for b in args.batch.split(",")]
    if args.worker:
        side, arch, n, b = args.worker.split(":")
        out = (run_jax if side == "jax" else run_torch)(arch, int(n), int(b))
        out.update(arch=arch, steps=int(n), batch=int(b), peak_rss_mib=round(_peak_mib(), 1),
                   seconds_per_image=out["seconds"] / int(b),
                   cpu_seconds_per_image=out["cpu_seconds"] / int(b), load_average=os.getloadavg()[0])
        print("RESULT " + json.dumps(out))
        return
    rows = []
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for arch, n, b in zip(archs, steps, batches):
        for side, python in (("jax", sys.executable), ("torch", args.torch_python)):
            if python is None:
                continue
            res = subprocess.run([python, os.path.abspath(__file__), "--worker", f"{side}:{arch}:{n}:{b}"],
                                 capture_output=True, text=True, env=env)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(res.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{side} worker failed on {arch}")
            row = json.loads(line[0][7:])
            print(json.dumps(row))
            rows.append(row)
    print("\n| architecture | side | DDIM steps | batch | s / image | CPU s / image | peak RSS (MiB) | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['side']} | {r['steps']} | {r['batch']} | {r['seconds_per_image']:.2f} | "
              f"{r['cpu_seconds_per_image']:.2f} | {r['peak_rss_mib']:.0f} | {r['load_average']:.1f} |")


if __name__ == "__main__":
    main()
