"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"`` over every device.

Parameters are replicated and the batch is split along its first axis. The
same code runs on one CPU, on fake host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on one accelerator
and on several hosts after ``jax.distributed.initialize()``: each host feeds
only its own slice of the global batch and :func:`host_local_to_global`
stitches the slices into one global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffjax.typing import PyTree

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "data_sharding",
    "replicated",
    "check_batch_divisible",
    "host_local_to_global",
]

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``"data"`` over all devices of all hosts.

    Args:
      devices: devices to use; default ``jax.devices()`` (every host's devices).

    Returns:
      A :class:`jax.sharding.Mesh` with the single axis ``"data"``.
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across the ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
    """Raise ``ValueError`` unless the global batch splits evenly over the mesh.

    Args:
      global_batch_size: examples per step over all devices.
      mesh: the data mesh.

    Raises:
      ValueError: naming both numbers and the nearest valid batch sizes.
    """
    n = mesh.devices.size
    if global_batch_size < 1 or global_batch_size % n:
        lower = max(n, (global_batch_size // n) * n)
        upper = lower + n if lower <= global_batch_size else lower
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the number of devices {n}; "
            f"set --config.training.batch_size to a multiple of {n} (e.g. {lower} or {upper})"
        )


def host_local_to_global(batch: PyTree, mesh: Mesh) -> PyTree:
    """Turn this host's slice of a batch into global arrays sharded along ``"data"``.

    Every leaf's leading axis is this process's share of the global batch
    (``global_batch / jax.process_count()`` rows). On one host this is simply
    a device put with the data sharding.

    Args:
      batch: pytree of host arrays (numpy), each with a leading batch axis.
      mesh: the data mesh.

    Returns:
      The same pytree of global ``jax.Array``s, batch axis sharded over ``"data"``.

    Raises:
      ValueError: if the global batch is not divisible by the device count.
    """
    sharding = data_sharding(mesh)
    leaves = jax.tree.leaves(batch)
    if leaves:
        check_batch_divisible(int(np.shape(leaves[0])[0]) * jax.process_count(), mesh)

    def to_global(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(to_global, batch)
