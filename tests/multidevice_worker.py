"""Subprocess worker for tests/test_multidevice_training.py.

Runs a tiny training job on however many (fake) devices XLA_FLAGS gives it and
writes the final parameters to ``--out`` (npz), or prints the error and exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stop-after-first-step", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import jax
    import numpy as np

    from train import train_and_evaluate
    from train_fixtures import flat_params, restore_state, tiny_config

    from diffjax.checkpoint import StopRequest

    config = tiny_config(num_steps=args.steps, batch_size=args.batch)
    stop = StopRequest()
    if args.stop_after_first_step:
        stop.request()
    try:
        summary = train_and_evaluate(config, args.workdir, stop=stop)
    except ValueError as err:
        print(f"ValueError: {err}", file=sys.stderr)
        sys.exit(3)
    if args.out:
        state = restore_state(args.workdir, config)
        np.savez(args.out, **flat_params(state.params))
    print(json.dumps({"devices": jax.device_count(), "step": summary["step"]}))


if __name__ == "__main__":
    main()
