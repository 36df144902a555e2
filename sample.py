"""Sample from a trained run: ``python sample.py --workdir DIR [--num N] [--output DIR] [--input DIR] [--config.a.b=v]``.

A thin command line over :func:`diffjax.runs.sample_from_workdir` (docs/runs.md): the run's task picks a
writer of :mod:`diffjax.run_files`; ``--config.sampling.*`` overrides apply. Multi-host: one process per
host with ``--coordinator_address``, ``--num_processes``, ``--process_id`` (or the ``JAX_*`` variables), as
for ``train.py``; only process 0 writes. A mistake in what was given ends with one ``error: ...`` line and
exit status 1 (``--debug`` or ``DIFFJAX_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import sys

from diffjax import builders, distributed, errors
from diffjax.run_config import CONFIG_FILE, load_run_config, split_config_flag  # noqa: F401  (re-exported for scripts)
from diffjax.runs import (RESTORE_TASKS, TASKS, load_model_config, restore_ema_model,  # noqa: F401  (re-exported)
                          sample_from_folder, sample_from_workdir)


def _sample_folder(workdir: str, argv: list[str]) -> None:
    """A diffusers folder has no diffjax config to override: --num, --output and --seed only."""
    import argparse

    parser = argparse.ArgumentParser(prog="sample.py", description="sample a diffusers / converted workdir")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--output", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default=None)  # low-resolution images (LDMSuperResolutionPipeline folders)
    args, rest = parser.parse_known_args(argv[1:])
    if rest:
        raise errors.UserError(f"{workdir} is a diffusers folder: sample.py takes --num, --output and --seed for it "
                               f"(--input for a super-resolution pipeline), not {' '.join(rest)}")
    sample_from_folder(workdir, output=args.output, num=args.num, seed=args.seed, input_dir=args.input)


def cli(argv: list[str]) -> None:
    """Parse flags against the config stored in ``--workdir`` and sample."""
    from absl import app, flags
    from absl import logging as absl_logging
    from ml_collections import config_flags

    workdir = split_config_flag(argv, "workdir")[0]
    if workdir is None:
        raise errors.UserError("sample.py needs --workdir DIR (the directory of a train.py run)")
    from diffjax.interop.diffusers_run import is_diffusers_folder

    if is_diffusers_folder(workdir):  # python -m diffjax.convert's workdir, or any diffusers folder
        return _sample_folder(workdir, argv)
    base = load_run_config(workdir)
    builders.check_override_keys(argv, base)
    # The stored config is the default, so --config.sampling.* overrides type-check against it.
    config_flag = config_flags.DEFINE_config_dict("config", base, "the run's config (overridable)", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory of a train.py run")
    num_flag = flags.DEFINE_integer("num", None, "number of samples (default config.sampling.num_samples)")
    output_flag = flags.DEFINE_string("output", None, "output folder (default WORKDIR/generated)")
    input_flag = flags.DEFINE_string("input", None, "input folder, for restoration tasks")
    join = distributed.define_flags()  # --coordinator_address, --num_processes, --process_id

    def main(_):
        absl_logging.set_verbosity(absl_logging.WARNING)
        # Before any array exists: every process restores the checkpoint
        # collectively and runs the same sampling program; process 0 writes.
        join()
        sample_from_workdir(config_flag.value, workdir, output=output_flag.value, num=num_flag.value,
                            input_dir=input_flag.value)

    app.run(main, argv)


if __name__ == "__main__":
    from diffjax.cli_help import exit_if_help

    exit_if_help(sys.argv, "sample")  # works without --workdir: tasks, flags, samplers
    # Bad input is the user's to fix: one "error: ..." line, no traceback (--debug shows it).
    errors.run_cli(cli, sys.argv)
