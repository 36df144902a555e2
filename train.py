"""Train a diffusion model: ``python train.py --config configs/X.py[:arg] --workdir DIR [--config.a.b=v]``.

A thin command line over :func:`diffjax.run_training.train_and_evaluate` (what
a run writes, its resume order and multi-host behaviour are described there;
from Python, :func:`diffjax.train` does the same).

Multi-host: ``--coordinator_address``, ``--num_processes``, ``--process_id`` (or
``JAX_COORDINATOR_ADDRESS`` etc.; automatic on TPU VMs, SLURM, Open MPI) join a
``jax.distributed`` job (:mod:`diffjax.distributed`) before anything else runs.

A mistake in what was given (config, flags, data) ends with one ``error: ...``
line and exit status 1; ``--debug`` or ``DIFFJAX_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import logging

from diffjax import builders, distributed, errors
from diffjax.run_config import CONFIG_FILE, load_config_file, write_run_config  # noqa: F401  (re-exported)
from diffjax.run_training import NONFINITE_MODES, check_workdir_writable, evaluate, train_and_evaluate  # noqa: F401
from diffjax.run_training import TrainingSetup as _Run  # noqa: F401  (tests build one)

log = logging.getLogger("diffjax.train")


def main(argv):
    del argv
    # Our own progress lines at INFO; library chatter (Orbax's per-save logs) only from WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    log.setLevel(logging.INFO)
    # Before any array exists: join the multi-host job (flags, env vars or TPU/SLURM auto-detection).
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if distributed.is_lead():
        log.info("done: %s", summary)


def _check_command_line(argv: list[str]) -> None:
    """Fail on unknown ``--config.*`` keys with a clear message, before absl parses them."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    if spec is not None:
        builders.check_override_keys(argv, load_config_file(spec))


if __name__ == "__main__":
    import sys

    from absl import app, flags
    from absl import logging as absl_logging
    from ml_collections import config_flags

    # Bad input is the user's to fix: one "error: ..." line, no traceback (--debug shows it).
    errors.run_cli(_check_command_line, sys.argv)

    _CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/ddpm_digits.py[:smoke]",
                                              lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")
    _COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                       "multi-host: host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    _NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    _PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
    flags.mark_flags_as_required(["config", "workdir"])
    errors.run_cli(app.run, main)
