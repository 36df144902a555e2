"""Subprocess worker for the multi-host, preemption and bad-input tests.

One process of a (possibly multi-process) training job on the fake CPU devices
``XLA_FLAGS`` gives it: joins the job through ``diffjax.distributed.initialize``
(gloo collectives, coordinator on 127.0.0.1), trains the tiny test config,
and optionally writes the final parameters (``--out``, npz, process 0) and
samples with ``sample.py``'s entry point (``--sample-dir``, single process).
Errors print ``<Type>: <message>`` and exit 3.
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
    parser.add_argument("--ckpt-every", type=int, default=None)
    # The multi-host flags of train.py and sample.py, so one launcher starts all three.
    parser.add_argument("--coordinator_address", default=None)
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument("--stop-after-first-step", action="store_true")
    # A stop request (as from SIGTERM) on this process only: the stop vote must stop every process.
    parser.add_argument("--stop-on-process", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--sample-dir", default=None)
    # "lsgm": the LSGM smoke config cut to --steps / --batch (--out: its EMA parameters);
    # "ddep": DDeP pretraining on 8x8 scenes (its finished weights are the run's segmentation.npz).
    parser.add_argument("--task", default="generate", choices=("generate", "lsgm", "ddep"))
    parser.add_argument("--folder", default=None, help="train on this image folder (8x8 RGB crops) instead of digits")
    args = parser.parse_args()

    if os.environ.get(SLOW_SAVE_ENV):
        _stall_before_commit(int(os.environ[SLOW_SAVE_ENV]))

    from diffjax import distributed

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

    import jax
    import numpy as np
    from train_fixtures import restore_state, tiny_config

    from diffjax.checkpoint import StopRequest
    from train import train_and_evaluate

    config = tiny_config(num_steps=args.steps, batch_size=args.batch)
    if args.task == "lsgm":
        from configs.lsgm_fashion_mnist import get_config

        config = get_config("smoke")
        config.training.num_steps, config.training.batch_size = args.steps, args.batch
        config.training.ckpt_every, config.training.log_every = args.steps, 1
        config.training.sample_every, config.training.progress_bar, config.eval.enabled = 0, False, False
    if args.task == "ddep":
        from configs.segmentation_ddep import get_config

        config = get_config("pretrain_smoke")
        config.data.image_size, config.model.channel_mult = 8, (1,)
        config.training.num_steps, config.training.batch_size = args.steps, args.batch
        config.training.ckpt_every, config.training.log_every, config.training.progress_bar = args.steps, 1, False
    if args.ckpt_every:
        config.training.ckpt_every = args.ckpt_every
    if args.folder:
        config.data.name, config.data.data_dir, config.data.eval_fraction = "folder", args.folder, 0.0
        config.data.channels, config.data.crop = 3, "random"
    stop = StopRequest()
    if args.stop_after_first_step or (args.stop_on_process is not None and args.stop_on_process == args.process_id):
        stop.request()
    try:
        summary = train_and_evaluate(config, args.workdir, stop=stop)
    except (ValueError, FloatingPointError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(3)
    if args.out:
        # Every process takes part in the restore; process 0 writes the file.
        if args.task == "lsgm":  # the EMAs: a function of every step's parameters
            from diffjax.run_lsgm import load_lsgm

            params = flat_params_global(load_lsgm(args.workdir, config)[1:3])
        else:
            params = flat_params_global(restore_state(args.workdir, config).params)
        params = {k: np.asarray(jax.device_get(v)) for k, v in params.items()}
        if jax.process_index() == 0:
            np.savez(args.out, **params)
    result = {"devices": jax.device_count(), "processes": jax.process_count(), "step": summary["step"]}
    if args.sample_dir:
        from sample import load_run_config, sample_from_workdir

        run_config = load_run_config(args.workdir)
        run_config.sampling.steps = 2
        result["sample"] = sample_from_workdir(run_config, args.workdir, output=args.sample_dir, num=2)
    print(json.dumps(result))


SLOW_SAVE_ENV = "DIFFJAX_TEST_STALL_SAVE_OF_STEP"
STALL_MARKER = "stalled_save_{step}"


def _stall_before_commit(step: int) -> None:
    """Make the save of checkpoint ``step`` hang after its files are written, before Orbax's rename.

    A marker file in the checkpoint directory tells the test that the process
    is now stuck mid-save, the moment to SIGKILL it.
    """
    import time

    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        final = os.fspath(self.get_final())
        if os.path.basename(final) == str(step):
            with open(os.path.join(os.path.dirname(final), STALL_MARKER.format(step=step)), "w") as f:  # noqa: ASYNC230
                f.write(os.fspath(self.get()))
            time.sleep(600)  # noqa: ASYNC251 - blocking on purpose: the save must not finish
        return await original(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def flat_params_global(tree) -> dict:
    """Leaves keyed by path; replicated arrays are read from this host's copy."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): leaf.addressable_data(0) for path, leaf in leaves}


if __name__ == "__main__":
    main()
