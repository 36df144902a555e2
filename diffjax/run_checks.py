"""The checks every run kind shares: workdir paths, counts, channels, the training section; resuming.

The lowest module of the run core (docs/ARCHITECTURE.md, "Layers"): the
trainers (:mod:`diffjax.run_training`, :mod:`diffjax.run_lsgm`,
:mod:`diffjax.run_segmentation`), :class:`diffjax.Run` and the ``sample.py``
writers all check with these, so each check and its message exists once.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np

from diffjax import distributed, workdir_io

__all__ = ["NONFINITE_MODES", "check_workdir_path", "check_workdir_writable", "check_num", "check_channels",
           "check_training_section", "restore_or_start", "lead_print"]

NONFINITE_MODES = ("stop", "skip")


def check_workdir_path(workdir) -> str:
    """``workdir`` as a path string, or a ValueError if it is not one (the first check of train and load)."""
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    workdir = os.fspath(workdir)
    # A bucket URL is written through etils.epath; one it cannot write (unknown scheme, file system
    # not installed) is refused here, before it could become a local folder named "gs:".
    workdir_io.check_url(workdir)
    return workdir


def check_num(num: int) -> None:
    """``sample.py --num``: at least one image."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")


def check_channels(pixels: np.ndarray, channels: int) -> None:
    """User images (``(N, H, W, C)``) must have the model's channel count."""
    if pixels.shape[-1] != channels:
        raise ValueError(f"images have {pixels.shape[-1]} channels; the model takes {channels}-channel images")


def restore_or_start(checkpointer, init_state, sharding):
    """The latest checkpoint's state restored onto ``sharding``, or ``init_state`` placed there if there is none.

    Every trainer resumes this way; a refused restore (another model's
    checkpoint) closes the checkpointer before the error propagates.
    """
    from diffjax.checkpoint import abstract_state

    if checkpointer.latest_step() is None:
        return jax.device_put(init_state, sharding)
    try:
        state = checkpointer.restore(abstract_state(lambda: init_state, sharding))
    except ValueError:
        checkpointer.close()
        raise
    if distributed.is_lead():
        logging.getLogger("diffjax.train").info("resumed from checkpoint step %d in %s", int(state.step),
                                                checkpointer.directory)
    return state


def check_workdir_writable(workdir: str) -> None:
    """Refuse a work directory that cannot be created or written, before anything is written.

    Raises:
      ValueError: naming the path that is in the way and what to do.
    """
    workdir_io.check_url(workdir)
    if workdir_io.url_scheme(workdir):
        return  # a bucket has no permission bits to read here: the first write names any refusal
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--workdir {workdir} cannot be created: {existing} is a file, not a directory; "
                         "choose another --workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir} is not writable ({existing} does not allow writing); "
                         "choose a writable --workdir or fix its permissions")


def check_training_section(tc: ml_collections.ConfigDict) -> None:
    """``config.training``'s counts are integers in range, ``ema_decay`` in [0, 1), ``nonfinite`` a known mode."""
    for key, minimum in (("num_steps", 1), ("batch_size", 1), ("log_every", 1), ("ckpt_every", 1),
                         ("keep_checkpoints", 1), ("sample_every", 0), ("num_grid_samples", 0)):
        if isinstance(tc[key], bool) or not isinstance(tc[key], (int, np.integer)):
            raise ValueError(f"config.training.{key} must be an integer, got {tc[key]!r} "
                             f"({type(tc[key]).__name__}); e.g. --config.training.{key}=100")
        if tc[key] < minimum:
            raise ValueError(f"config.training.{key} must be >= {minimum}, got {tc[key]}")
    if not isinstance(tc.ema_decay, (int, float)) or not 0.0 <= tc.ema_decay < 1.0:
        raise ValueError(f"config.training.ema_decay must lie in [0, 1), got {tc.ema_decay!r}; e.g. 0.999")
    if tc.nonfinite not in NONFINITE_MODES:
        raise ValueError(f"config.training.nonfinite must be one of {list(NONFINITE_MODES)}, got {tc.nonfinite!r}")


def lead_print(message: str) -> None:
    """Print on process 0 only."""
    if distributed.is_lead():
        print(message)
