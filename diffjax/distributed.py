"""Multi-host start-up and the cross-host stop vote.

:func:`initialize` joins this process to a ``jax.distributed`` job before any
array is created:

* explicit ``coordinator_address`` / ``num_processes`` / ``process_id`` (the
  ``train.py`` flags), or the environment variables ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``: used as given;
* otherwise, on a Cloud TPU VM or under SLURM / Open MPI: ``jax.distributed.initialize()``
  with no arguments, which reads the cluster's own description;
* otherwise: a single process, nothing to do.

On CPU the cross-process collectives go through gloo.

:class:`StopVote` turns each host's local SIGTERM flag into one decision all
hosts share, so every host stops (and saves, collectively) after the same step.
"""

from __future__ import annotations

import logging
import os
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

__all__ = ["StopVote", "cluster_environment", "initialize", "is_lead"]

log = logging.getLogger("diffjax.distributed")

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _on_tpu_vm() -> bool:
    # JAX's own probe (PCI ids of TPU chips); it is private, so any failure means "no".
    try:
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:  # noqa: BLE001 - an unknown jax layout is simply "not a TPU VM"
        return False


def cluster_environment() -> str | None:
    """The managed cluster this process runs in, whose description JAX reads itself.

    Returns:
      ``"tpu"``, ``"slurm"``, ``"ompi"`` or ``None`` (a plain machine).
    """
    if "OMPI_MCA_orte_hnp_uri" in os.environ:
        return "ompi"
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return "slurm"
    if _on_tpu_vm():
        return "tpu"
    return None


def _int_or_none(name: str, value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process JAX job if one is described; call before creating any array.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator (default
        ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: processes in the job (default ``$JAX_NUM_PROCESSES``).
      process_id: this process's index in ``[0, num_processes)`` (default ``$JAX_PROCESS_ID``).

    Returns:
      Whether ``jax.distributed`` was initialised (``False``: a single process).

    Raises:
      ValueError: when only some of the three settings are given, or they are
        out of range.
    """
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = _int_or_none("num_processes", num_processes if num_processes is not None
                         else os.environ.get(ENV_NUM_PROCESSES))
    index = _int_or_none("process_id", process_id if process_id is not None else os.environ.get(ENV_PROCESS_ID))
    given = {"--coordinator_address": address, "--num_processes": count, "--process_id": index}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(
                f"multi-process training needs all of --coordinator_address, --num_processes and "
                f"--process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing {missing}"
            )
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, "
                             f"got num_processes={count}, process_id={index}")
        if ":" not in address:
            raise ValueError(f"coordinator_address must be host:port (e.g. 10.0.0.1:1234), got {address!r}")
        if count == 1:
            return False
        _use_gloo_on_cpu()
        jax.distributed.initialize(address, num_processes=count, process_id=index)
    elif (env := cluster_environment()) is not None:
        _use_gloo_on_cpu()
        log.info("initialising jax.distributed from the %s environment", env)
        jax.distributed.initialize()
    else:
        return False
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def define_flags():
    """Define the absl flags ``--coordinator_address``, ``--num_processes`` and ``--process_id`` (``train.py``, ``sample.py``).

    Returns:
      ``join()``: :func:`initialize` with the parsed flags; call it before any array exists.
    """
    from absl import flags

    coordinator = flags.DEFINE_string("coordinator_address", None,
                                      "multi-host: host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    num_processes = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    process_id = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
    return lambda: initialize(coordinator.value, num_processes.value, process_id.value)


def is_lead() -> bool:
    """Whether this process writes files and logs: process 0 of a job (always true on one host)."""
    return jax.process_index() == 0


def _use_gloo_on_cpu() -> None:
    # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


class StopVote:
    """All hosts agree on "stop now" from their local flags, one step late, without a stall.

    Each call to :meth:`vote` submits this host's flag for the current step to a
    tiny on-device max over all hosts, and returns the result of the *previous*
    step's vote, whose inputs are all in by then. Every host therefore sees the
    same sequence of decisions and leaves the loop after the same step; the
    only wait is for the previous step, which keeps one step in flight. With a
    single process the local flag is returned at once.

    Args:
      mesh: the data mesh of the run (every device of every host).
    """

    def __init__(self, mesh: Mesh):
        from diffjax.sharding import data_sharding, replicated

        self._multi = jax.process_count() > 1
        self._pending: deque = deque()
        if self._multi:
            self._mesh = mesh
            self._sharding = data_sharding(mesh)
            self._local = len(mesh.local_devices)
            self._reduce = jax.jit(lambda flags: jnp.max(flags), out_shardings=replicated(mesh))

    def vote(self, local_flag: bool) -> bool:
        """Submit this host's flag for this step; return the agreed decision.

        Args:
          local_flag: whether this host wants to stop (e.g. it got SIGTERM).

        Returns:
          Whether any host asked to stop (single process: ``local_flag``; several:
          the vote of the previous call, ``False`` on the first call).
        """
        if not self._multi:
            return bool(local_flag)
        flags = np.full((self._local,), int(bool(local_flag)), np.int32)
        global_flags = jax.make_array_from_process_local_data(self._sharding, flags, (self._mesh.devices.size,))
        self._pending.append(self._reduce(global_flags))
        if len(self._pending) < 2:
            return False
        decided = self._pending.popleft()
        return bool(np.asarray(decided.addressable_data(0)))
