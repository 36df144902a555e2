"""Train a diffusion model: ``python train.py --config configs/X.py[:arg] --workdir DIR [--config.a.b=v]``.

``--config`` takes a path or the name of a bundled config (``--config ddpm_digits:smoke`` works from any
directory once installed). A thin command line over :func:`diffjax.run_kinds.train_and_evaluate` (from Python,
:func:`diffjax.train`); multi-host flags as in docs/multihost.md. A mistake in what was given ends with one
``error: ...`` line and exit status 1 (``--debug`` or ``DIFFJAX_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import logging

from diffjax import builders, distributed, errors
from diffjax.run_config import CONFIG_FILE, load_config_file, split_config_flag, write_run_config  # noqa: F401
from diffjax.run_kinds import train_and_evaluate  # noqa: F401
from diffjax.run_training import NONFINITE_MODES, check_workdir_writable, evaluate  # noqa: F401
from diffjax.run_training import TrainingSetup as _Run  # noqa: F401  (tests build one)

log = logging.getLogger("diffjax.train")


def main(argv):
    del argv
    # Our own progress lines at INFO; library chatter (Orbax's per-save logs) only from WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    log.setLevel(logging.INFO)
    # Before any array exists: join the multi-host job (flags, env vars or TPU/SLURM auto-detection).
    _JOIN()
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if distributed.is_lead():
        log.info("done: %s", summary)


def _load_command_line_config(argv: list[str]):
    """The ``--config`` spec loaded (path or bundled name), its overrides checked, and argv without it."""
    spec, rest = split_config_flag(argv)
    if spec is None:
        raise errors.UserError("train.py needs --config configs/X.py[:arg] (or a bundled name such as "
                               "ddpm_digits:smoke) and --workdir DIR")
    config = load_config_file(spec)
    # Fail on unknown --config.* keys with a clear message, before absl parses them.
    builders.check_override_keys(rest, config)
    return config, rest


if __name__ == "__main__":
    import sys

    from diffjax.cli_help import exit_if_help

    exit_if_help(sys.argv, "train")  # configs and keys, before absl (whose help lists flags only)
    from absl import app, flags
    from absl import logging as absl_logging
    from ml_collections import config_flags

    # Bad input is the user's to fix: one "error: ..." line, no traceback (--debug shows it).
    _BASE, _ARGV = errors.run_cli(_load_command_line_config, sys.argv)
    # The loaded config is the flag's default, so --config.a.b=v overrides type-check against it.
    # (sys_argv: the overrides are read from the command line without the --config spec.)
    _CONFIG = config_flags.DEFINE_config_dict("config", _BASE, "config file, e.g. configs/ddpm_digits.py[:smoke]",
                                              lock_config=True, sys_argv=_ARGV)
    _WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")
    _JOIN = distributed.define_flags()  # --coordinator_address, --num_processes, --process_id
    flags.mark_flags_as_required(["workdir"])
    errors.run_cli(app.run, main, _ARGV)
