"""How well a conditional run's network predicts the clean image at each noise level.

For held-out photo crops ``x0`` and a grid of times ``t``, noise ``x_t = alpha x0 + sigma z``,
ask the trained network (whatever it predicts: eps, x0 or v) for its implied
``x0_hat`` and report the mean squared error, with bicubic upsampling's error as
the reference. It shows why the CPU-sized SR3 and Palette configs predict v:
an eps-network's ``x0_hat = (x_t - sigma eps_hat) / alpha`` multiplies its
error by ``sigma / alpha`` (up to ~150 on the VP schedule at t = 1).

    python benchmarks/x0_error.py --workdir runs/sr3_x4 [--num 32]

Prints a markdown table and ends with one JSON line. SR3 runs only (the
condition is the bicubic upsampling of the low-resolution crop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffjax import builders  # noqa: E402
from diffjax.parametrization import convert  # noqa: E402
from diffjax.tasks.sr3 import conditional_score_fn, upsample  # noqa: E402
from diffjax.training import model_from_state  # noqa: E402

TIMES = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/sr3_x4")
    parser.add_argument("--num", type=int, default=32, help="held-out crops")
    args = parser.parse_args()

    from diffjax.sharding import make_mesh
    from sample import load_run_config, restore_ema_model

    config = load_run_config(args.workdir)
    if config.task.name != "sr3":
        raise SystemExit(f"{args.workdir} is a {config.task.name!r} run; this script measures SR3 runs")
    pipeline = builders.build_pipeline(config)
    hr = builders.build_dataset(config, "test").eval_images(args.num, seed=0)
    cond = jnp.asarray(upsample(pipeline.low_res(hr), pipeline.scale))
    graphdef, params, model_state, _, step = restore_ema_model(config, args.workdir, make_mesh())
    sde = builders.build_sde(config)
    model = model_from_state(graphdef, params, model_state)
    score = conditional_score_fn(lambda x, c, cnd: model(x, c, cond=cnd), sde,
                                 prediction=config.model.prediction, time_input=config.loss.time_input)

    @jax.jit
    def x0_mse(t, key):
        t_vec = jnp.full((len(hr),), t)
        alpha, sigma = sde.alpha_sigma(t_vec)
        x_t = alpha[:, None, None, None] * hr + sigma[:, None, None, None] * jax.random.normal(key, hr.shape)
        x0_hat = convert(score(x_t, t_vec, cond), source="score", target="x0", x=x_t, t=t_vec, sde=sde)
        return jnp.mean((x0_hat - hr) ** 2), alpha[0], sigma[0]

    bicubic = float(np.mean((np.clip(np.asarray(cond), -1, 1) - hr) ** 2))
    rows = []
    for i, t in enumerate(TIMES):
        mse, alpha, sigma = x0_mse(jnp.float32(t), jax.random.key(i))
        rows.append({"t": t, "alpha": float(alpha), "sigma_over_alpha": float(sigma / alpha), "x0_mse": float(mse)})

    print(f"\n{args.workdir}: prediction {config.model.prediction!r}, checkpoint step {step}, "
          f"{len(hr)} held-out crops; bicubic x0 MSE {bicubic:.4f}\n")
    print("| t | alpha | sigma / alpha | x0 MSE |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['t']} | {r['alpha']:.4f} | {r['sigma_over_alpha']:.1f} | {r['x0_mse']:.4f} |")
    print(json.dumps({"benchmark": "x0_error", "workdir": args.workdir, "prediction": config.model.prediction,
                      "step": step, "bicubic_mse": bicubic, "rows": rows}))


if __name__ == "__main__":
    main()
