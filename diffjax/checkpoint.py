"""Checkpoints: the only module that imports Orbax.

Layout of a run's work directory::

    WORKDIR/checkpoints/<step>/...   Orbax checkpoints (the last few are kept)
    WORKDIR/model_config.json       the network's hyper-parameters

Saves are asynchronous (training continues while the arrays are written).
Restores go through abstract targets built with ``jax.eval_shape`` and carrying
the *current* mesh's shardings, so a checkpoint written on 8 devices restores
on 1 and the other way round.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from jax.sharding import Sharding

from diffjax import workdir_io
from diffjax.training import TrainState
from diffjax.typing import PyTree

__all__ = [
    "Checkpointer",
    "abstract_state",
    "model_config_path",
    "write_model_config",
    "check_model_config",
    "restore_latest",
    "StopRequest",
]

MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "checkpoints_unreadable"
log = logging.getLogger("diffjax.checkpoint")


def _first_line(err: BaseException) -> str:
    """The first line of an error (Orbax's run to a hundred lines), at most 300 characters."""
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def abstract_state(init_fn: Callable[[], PyTree], sharding: Sharding | PyTree) -> PyTree:
    """Shapes and dtypes of ``init_fn()`` (nothing computed), each placed on ``sharding``.

    A checkpoint restores onto any mesh and layout given here, whatever the one
    it was saved from (an FSDP run restores replicated on one device).

    Args:
      init_fn: builds the state to restore into (e.g. a fresh :class:`TrainState`).
      sharding: where every restored array should live: one sharding for all
        (e.g. replicated on the mesh) or a pytree of them shaped like the state
        (:func:`diffjax.sharding.state_shardings`).

    Returns:
      A pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set.
    """
    shapes = jax.eval_shape(init_fn)
    if isinstance(sharding, Sharding):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, sharding)


class _OlderLayout(ValueError):
    """A checkpoint whose training state lacks fields this version's state has."""


class Checkpointer:
    """Keeps the last ``keep`` training states of a run under ``workdir/checkpoints``.

    Args:
      workdir: the run's work directory.
      keep: number of checkpoints to keep (older ones are deleted).
      async_save: write in a background thread while training goes on.
    """

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.directory = os.path.join(workdir_io.absolute(workdir), CHECKPOINT_DIR)  # Orbax takes URLs too
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )
        self._unreadable: set[int] = set()  # steps restore() skipped as damaged

    def _move_unreadable(self, step: int) -> None:
        """Move a damaged step aside (kept for inspection) so the run can write that step again."""
        self._unreadable.discard(step)
        if jax.process_index() == 0:
            aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
            workdir_io.makedirs(aside)
            target = os.path.join(aside, str(step))
            suffix = 0
            while workdir_io.exists(target):
                suffix += 1
                target = os.path.join(aside, f"{step}.{suffix}")
            workdir_io.rename(os.path.join(self.directory, str(step)), target)
            log.warning("moved the unreadable checkpoint step %d to %s", step, target)
        self._manager.reload()

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or ``None`` if there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every kept checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: TrainState) -> bool:
        """Start writing ``state`` as checkpoint ``step`` (returns at once when async).

        Returns:
          Whether a save was started (``False`` if that step already exists).
        """
        if step in self._unreadable:
            self._move_unreadable(step)
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

    def restore(self, target: PyTree, step: int | None = None) -> TrainState:
        """Read a checkpoint into the structure, dtypes and shardings of ``target``.

        With ``step=None`` the newest *intact* checkpoint is used: a step that
        fails to read (a truncated or damaged file) is skipped with a one-line
        warning naming it, and the next older one is tried. During training the
        skipped step is moved to ``WORKDIR/checkpoints_unreadable/`` when the run
        comes to save that step again (never deleted).

        Args:
          target: abstract state from :func:`abstract_state` (or concrete arrays).
          step: which checkpoint; default the newest intact one.

        Returns:
          The restored state, laid out as ``target`` says.

        Raises:
          ValueError: if there is no checkpoint, the one asked for does not
            match ``target``, or no kept step can be restored (listing them).
        """
        if step is not None:
            return self._restore_step(target, step)
        steps = self.all_steps()
        if not steps:
            raise ValueError(f"no checkpoint to restore in {self.directory}")
        failures = []
        for candidate in reversed(steps):
            try:
                state = self._restore_step(target, candidate)
            except Exception as err:  # noqa: BLE001  (Orbax/TensorStore raise many types for a damaged file)
                failures.append((candidate, err))
                continue
            for bad, err in failures:
                log.warning("checkpoint step %d in %s cannot be read, skipped: %s; using step %d", bad,
                            self.directory, _first_line(err), candidate)
                self._unreadable.add(bad)
            return state
        if isinstance(failures[0][1], _OlderLayout) or (len(failures) == 1 and isinstance(failures[0][1], ValueError)):
            raise failures[0][1]
        raise ValueError(
            f"no checkpoint in {self.directory} can be restored: steps {steps} all fail (damaged files, or "
            f"another model or optimizer than this run builds); the newest, step {failures[0][0]}: "
            f"{_first_line(failures[0][1])}. Use a new --workdir, or restore the checkpoints from a copy"
        ) from failures[0][1]

    def _restore_step(self, target: PyTree, step: int) -> TrainState:
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as err:  # noqa: BLE001  (reported on one line, see restore)
            missing = self._missing_fields(target, step)
            if missing:
                raise _OlderLayout(
                    f"checkpoint {step} in {self.directory} was written by an older diffjax: its training state has no "
                    f"{missing}, which this version's state holds, so it cannot be restored here. Sample or resume it "
                    "with the diffjax version that wrote it, or train again into a new --workdir") from err
            older = [s for s in self.all_steps() if s < step]
            fallback = (
                f"To resume from the previous checkpoint {older[-1]}, move {os.path.join(self.directory, str(step))} "
                "out of the way; otherwise use a new --workdir."
                if older
                else "Use a new --workdir."
            )
            raise ValueError(
                f"checkpoint {step} in {self.directory} cannot be restored into the state this run builds "
                f"(it does not match: a different model, optimizer or corrupt files): {_first_line(err)}. {fallback}"
            ) from err
        return restored.state

    def _missing_fields(self, target: PyTree, step: int) -> list[str]:
        """The top-level fields of ``target`` that checkpoint ``step`` lacks (readable after a restore attempt)."""
        try:
            stored = set(self._manager.item_metadata(step)["state"].tree)
        except Exception:  # noqa: BLE001  (no readable metadata: not a question of layout)
            return []
        paths = jax.tree_util.tree_flatten_with_path(target)[0]
        names = {getattr(path[0], "name", getattr(path[0], "key", None)) for path, _ in paths if path}
        return sorted(str(name) for name in names - stored if name is not None)

    def wait(self) -> None:
        """Block until every started save has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def restore_latest(workdir: str, init_fn: Callable[[], PyTree], sharding: Sharding, step: int | None = None) -> PyTree:
    """Checkpoint ``step`` (default: the newest intact one) of ``workdir`` read into ``init_fn()``'s structure.

    Raises:
      ValueError: no checkpoint (train first), or one that does not fit (see :meth:`Checkpointer.restore`).
    """
    checkpointer = Checkpointer(workdir, keep=1, async_save=False)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"no checkpoint in {checkpointer.directory}: train first with train.py")
        return checkpointer.restore(abstract_state(init_fn, sharding), step=step)
    finally:
        checkpointer.close()


# -- the model's hyper-parameters next to its checkpoints --------------------


def model_config_path(workdir: str) -> str:
    """Where the model config of a run is stored."""
    return os.path.join(workdir, MODEL_CONFIG_FILE)


def _normalise(obj: Any) -> Any:
    # JSON has no tuples: compare what would be written.
    return json.loads(json.dumps(obj, sort_keys=True))


def write_model_config(workdir: str, model_config: dict) -> None:
    """Store the model's hyper-parameters as JSON in the work directory."""
    # Whole or not at all: a crash never leaves half a file.
    workdir_io.write_text(model_config_path(workdir), json.dumps(_normalise(model_config), indent=2, sort_keys=True))


def check_model_config(workdir: str, model_config: dict, defaults: dict | None = None) -> None:
    """Refuse a work directory whose checkpoints belong to a different model.

    Does nothing if the directory has no stored model config yet.

    Args:
      workdir: the run's directory.
      model_config: the model's hyper-parameters now.
      defaults: the default of each field; a field the stored file lacks (a run
        written before the field existed) counts as its default, so adding a field
        to the model config does not orphan older runs.

    Raises:
      ValueError: listing every field that differs, and what to do.
    """
    path = model_config_path(workdir)
    if not workdir_io.exists(path):
        return
    stored = json.loads(workdir_io.read_text(path))
    wanted = _normalise(model_config)
    for key, value in _normalise(defaults or {}).items():
        if key in wanted and key not in stored:
            stored[key] = value
    if stored == wanted:
        return
    keys = sorted(set(stored) | set(wanted))
    diffs = [
        f"  {k}: checkpoint has {stored.get(k, '<missing>')!r}, this config has {wanted.get(k, '<missing>')!r}"
        for k in keys
        if stored.get(k, "<missing>") != wanted.get(k, "<missing>")
    ]
    raise ValueError(
        f"{workdir} holds checkpoints of a different model ({path}):\n"
        + "\n".join(diffs)
        + "\nUse a new --workdir for this model, or the old model config to resume."
    )


# -- preemption ---------------------------------------------------------------


class StopRequest:
    """Turns SIGTERM (preemption, ``kill``) into a flag the training loop polls.

    The loop finishes its current step, saves a checkpoint and exits cleanly
    instead of dying mid-write.
    """

    def __init__(self):
        self._event = threading.Event()
        self._previous = None

    def install(self) -> "StopRequest":
        """Install the SIGTERM handler (only possible from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the previous SIGTERM handler."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint after the current step, then exiting")
        self._event.set()

    def request(self) -> None:
        """Ask the loop to stop (what the signal handler does)."""
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was requested, by SIGTERM or by :meth:`request`."""
        return self._event.is_set()
