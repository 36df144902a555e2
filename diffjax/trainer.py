"""The one training loop of every run kind: a kind hands :func:`train_loop` a :class:`LoopTask`.

What the loop guarantees (restore-then-write, per-host batches, ``fold_in`` keys, the stop vote, the
non-finite guard, checkpoints, logs) is written down once, in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from diffjax import distributed
from diffjax import workdir_io
from diffjax.checkpoint import Checkpointer, StopRequest, check_model_config
from diffjax.logging_utils import MetricWriter, Throughput, save_grid
from diffjax.run_checks import check_training_section, check_workdir_writable, restore_or_start
from diffjax.sharding import (check_batch_divisible, data_sharding, host_local_to_global, make_mesh, per_device_bytes,
                              replicated, state_shardings)

__all__ = ["LoopTask", "LoopResult", "train_loop", "host_batches", "prepare_run", "orbax_checkpointer"]

log = logging.getLogger("diffjax.train")


def orbax_checkpointer(workdir: str, tc: ml_collections.ConfigDict) -> Checkpointer:
    """The default checkpoints: ``workdir/checkpoints/<step>`` (the last ``training.keep_checkpoints``)."""
    return Checkpointer(workdir, keep=tc.keep_checkpoints)


@dataclasses.dataclass(frozen=True)
class LoopTask:
    """What a run kind gives :func:`train_loop`; everything else is shared.

    Attributes:
      mesh: the data mesh (every device of every host).
      init_state: ``() -> state``, the step-0 state: a pytree dataclass with
        ``step``, ``nonfinite_steps`` and ``first_nonfinite_step`` (called once).
      train_step: the pure ``(state, batch, base_key) -> (state, metrics)``; the
        loop jits it (state donated). It folds ``state.step`` into ``base_key``
        and keeps the non-finite counters (:func:`diffjax.training.keep_finite`);
        ``metrics["loss"]`` is a scalar.
      batches: ``start -> iterator`` of this host's rows of the batches of train
        steps ``start + 1, start + 2, ...`` (closed at the end; see :func:`host_batches`).
      num_steps: the run's last step.
      batch_size: global rows per step (for images per second).
      write_files: called on process 0 once the state is restored or started
        (the run's config files), or ``None``.
      grid_fn: ``(state, key) -> images`` in ``[-1, 1]`` for
        ``samples/step_XXXXXX.png`` every ``training.sample_every`` steps, or ``None``.
      checkpointer: ``(workdir, config.training) -> checkpointer`` (``save``,
        ``restore``, ``latest_step``, ``wait``, ``close``, ``directory``), or
        ``None`` for a short stage that simply reruns.
      save_final: also checkpoint the last step (``False`` where the kind writes
        its finished weights itself).
      fsdp: split the state over the devices (:func:`diffjax.sharding.state_shardings`).
      desc: the progress bar's label.
      bar_metric: the metric shown in the progress bar.
      nonfinite_hint: the settings to try when a loss becomes NaN/inf.
    """

    mesh: Mesh
    init_state: Callable[[], Any]
    train_step: Callable
    batches: Callable[[int], Iterator]
    num_steps: int
    batch_size: int
    write_files: Callable[[], None] | None = None
    grid_fn: Callable | None = None
    checkpointer: Callable | None = orbax_checkpointer
    save_final: bool = True
    fsdp: bool = False
    desc: str = "train"
    bar_metric: str = "loss"
    nonfinite_hint: str = "a lower --config.optim.lr or --config.optim.grad_clip"


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What :func:`train_loop` ends with.

    Attributes:
      state: the final training state (on the mesh).
      metrics: the last metrics read (``{}`` if none).
      start: the step the loop started from (0, or the restored checkpoint's).
      stopped_early: a stop was requested (SIGTERM) and the loop left after a saved step.
      seconds: wall time of the loop.
    """

    state: Any
    metrics: dict
    start: int
    stopped_early: bool
    seconds: float

    @property
    def step(self) -> int:
        """The training state's step."""
        return int(self.state.step)


def prepare_run(config: ml_collections.ConfigDict, batch_size: int | None = None) -> Mesh:
    """The checks every trainer makes first (schema, ``training`` section, batch vs devices); the mesh."""
    from diffjax import builders
    from diffjax.run_config import get_base_config

    builders.validate_config(config, get_base_config())
    check_training_section(config.training)
    mesh = make_mesh()
    check_batch_divisible(config.training.batch_size if batch_size is None else batch_size, mesh)
    return mesh


def check_run_workdir(workdir: str, model_config: dict, defaults: dict | None = None) -> None:
    """Refuse a workdir holding another model, or one that cannot be written (nothing written yet)."""
    check_model_config(workdir, model_config, defaults)
    check_workdir_writable(workdir)


def host_batches(dataset, tc: ml_collections.ConfigDict, start: int, prepare: Callable | None = None) -> Iterator:
    """This host's rows of a :mod:`diffjax.data` dataset's batches (``tc.batch_size``, ``tc.seed``) from data step
    ``start`` (train step ``start + 1``) on, each passed through ``prepare(batch, data_step)`` if given."""
    it = dataset.iterator(tc.batch_size, start_step=start, seed=tc.seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
    try:
        for step, batch in enumerate(it, start):
            yield batch if prepare is None else prepare(batch, step)
    finally:
        it.close()


def _stop_on_nonfinite(state, seen: int, step: int, checkpointer, hint: str) -> None:
    """Raise if steps with a NaN/inf loss, gradient or update happened since ``seen`` were counted.

    Called where the loop reads its metrics anyway (no extra host sync) and before any save: those steps'
    updates were skipped on device, so no checkpoint ever holds their effect.
    """
    count = int(jax.device_get(state.nonfinite_steps))
    if count <= seen:
        return
    first = int(jax.device_get(state.first_nonfinite_step))
    last = None
    if checkpointer is not None:
        checkpointer.wait()  # so that latest_step() counts a save still being written
        last = checkpointer.latest_step()
    where = (f"the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None
             else "no checkpoint was saved yet")
    raise FloatingPointError(
        f"non-finite (NaN/inf) loss, gradient or parameters at step {first} "
        f"({count - seen} such step(s) up to step {step}, their updates skipped); "
        f"stopping without saving. {where}. Try {hint}, "
        "or --config.training.nonfinite=skip to skip such updates and go on."
    )


def train_loop(task: LoopTask, workdir: str, config: ml_collections.ConfigDict, *,
               stop: StopRequest | None = None) -> LoopResult:
    """Train ``task`` from ``workdir``'s latest checkpoint (or step 0) to ``task.num_steps``.

    Args:
      task: what the run kind supplies (:class:`LoopTask`).
      workdir: the run's directory (checked by the kind before this call).
      config: the run config; the loop reads ``config.training`` (``seed``,
        ``log_every``, ``ckpt_every``, ``sample_every``, ``num_grid_samples``,
        ``nonfinite``, ``progress_bar``, ``keep_checkpoints``) and ``config.sampling.seed``.
      stop: the preemption flag (default: a fresh one on SIGTERM).

    Returns:
      A :class:`LoopResult`.

    Raises:
      ValueError: a checkpoint that does not fit the kind's state.
      FloatingPointError: a non-finite step with ``training.nonfinite = "stop"``.
    """
    tc, mesh, n = config.training, task.mesh, task.num_steps
    lead = distributed.is_lead()
    if lead:
        workdir_io.makedirs(workdir)
    checkpointer = task.checkpointer(workdir, tc) if task.checkpointer is not None else None
    init_state = task.init_state()
    # Replicated, or split over the devices with fsdp (a checkpoint restores onto either).
    sharding = state_shardings(init_state, mesh, fsdp=task.fsdp)
    state = (restore_or_start(checkpointer, init_state, sharding) if checkpointer is not None
             else jax.device_put(init_state, sharding))
    del init_state
    if lead:
        log.info("training state: %.1f MB of parameters per device (%s)",
                 per_device_bytes(getattr(state, "params", state)) / 2**20, "fsdp" if task.fsdp else "replicated")
        # Written only once the restore worked: a refused resume leaves the run's files as they were.
        if task.write_files is not None:
            task.write_files()
    rep = replicated(mesh)
    train_step = jax.jit(task.train_step, in_shardings=(sharding, data_sharding(mesh), rep),
                         out_shardings=(sharding, rep), donate_argnums=0)
    base_key, grid_key = jax.random.key(tc.seed), jax.random.key(config.sampling.seed)
    grid_fn = task.grid_fn if tc.sample_every > 0 and tc.num_grid_samples > 0 else None

    start = int(state.step)
    nonfinite_seen = int(jax.device_get(state.nonfinite_steps))
    # Hosts agree on SIGTERM (any host's) so that all stop and save after the same step.
    stop_vote = distributed.StopVote(mesh)
    writer = MetricWriter(workdir)
    stop = (stop or StopRequest()).install()
    batches = task.batches(start)
    throughput = Throughput(start, n, task.batch_size)
    bar = tqdm(total=n, initial=start, disable=not (tc.progress_bar and lead), desc=task.desc)
    last, stopped_early, t0 = {}, False, time.perf_counter()
    try:
        for step in range(start + 1, n + 1):
            batch = host_local_to_global(next(batches), mesh)
            state, metrics = train_step(state, batch, base_key)
            bar.update(1)
            stop_now = stop_vote.vote(stop.requested)
            save_now = (checkpointer is not None and (step < n or task.save_final)
                        and (step % tc.ckpt_every == 0 or step == n or stop_now))
            if step % tc.log_every == 0 or step == n or save_now:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if tc.nonfinite == "stop":
                    _stop_on_nonfinite(state, nonfinite_seen, step, checkpointer, task.nonfinite_hint)
                if step % tc.log_every == 0 or step == n:
                    last.update(throughput.update(step))
                    writer.write_scalars(step, last)
                    bar.set_postfix({task.bar_metric: f"{last[task.bar_metric]:.4f}",
                                     "img_s": f"{last['images_per_sec']:.0f}"})
            if grid_fn is not None and step % tc.sample_every == 0:
                # Every process runs the (collective) sampling program; process 0 writes the grid.
                images = np.asarray(grid_fn(state, jax.random.fold_in(grid_key, step)))
                if lead:
                    path = os.path.join(workdir, "samples", f"step_{step:06d}.png")
                    writer.write_image(step, "samples", save_grid(path, images))
            if save_now:
                checkpointer.save(step, state)
                writer.flush()  # the log of every step a resume keeps (a bucket's log uploads now)
            if stop_now:
                if lead:
                    log.warning("stopped by SIGTERM after step %d; %s", step,
                                f"checkpoint saved in {checkpointer.directory}" if checkpointer is not None
                                else "this stage keeps no checkpoints: run it again")
                stopped_early = True
                break
    finally:
        bar.close()
        batches.close()
        stop.uninstall()
        if checkpointer is not None:
            checkpointer.close()
        writer.close()
    return LoopResult(state, last, start, stopped_early, time.perf_counter() - t0)
