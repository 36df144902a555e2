"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"`` over every device.

The batch is split along its first axis. Parameters, EMA and optimizer state
are replicated, or with :func:`state_shardings` ``(fsdp=True)`` split over the
same ``"data"`` axis (ZeRO-3 / FSDP: XLA gathers each weight where it is used
and reduce-scatters its gradient; docs/training.md). The
same code runs on one CPU, on fake host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on one accelerator
and on several hosts after ``jax.distributed.initialize()``: each host feeds
only its own slice of the global batch and :func:`host_local_to_global`
stitches the slices into one global array.
"""

from __future__ import annotations

import math

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
    "fsdp_spec",
    "state_shardings",
    "per_device_bytes",
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


def fsdp_spec(shape: tuple[int, ...], num_devices: int, min_size: int = 1024) -> PartitionSpec:
    """Where one array is cut under FSDP: its largest axis that ``num_devices`` divides.

    Arrays smaller than ``min_size`` elements (biases, norm scales, step counters)
    or with no such axis stay replicated: cutting them saves nothing worth a
    collective.

    Args:
      shape: the array's shape.
      num_devices: size of the ``"data"`` axis.
      min_size: arrays with fewer elements stay whole.

    Returns:
      A ``PartitionSpec`` naming ``"data"`` on at most one axis.
    """
    size = int(np.prod(shape)) if shape else 1
    if num_devices <= 1 or size < min_size:
        return PartitionSpec()
    candidates = [i for i, d in enumerate(shape) if d % num_devices == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda i: (shape[i], -i))
    return PartitionSpec(*([None] * axis + [DATA_AXIS]))


def state_shardings(state: PyTree, mesh: Mesh, *, fsdp: bool = False) -> PyTree:
    """A sharding for every leaf of a training state (arrays or ``ShapeDtypeStruct``s).

    Args:
      state: the pytree to place (e.g. a ``TrainState`` or its ``jax.eval_shape``).
      mesh: the data mesh.
      fsdp: split large arrays over ``"data"`` (:func:`fsdp_spec`); else replicate all.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``state``.
    """
    if not fsdp:
        return jax.tree.map(lambda _: replicated(mesh), state)
    n = mesh.shape[DATA_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(getattr(x, "shape", np.shape(x))), n)), state)


def per_device_bytes(tree: PyTree) -> int:
    """Bytes of ``tree`` held by one device: each array's shard shape under its sharding.

    Computed from the sharding alone: reading ``addressable_shards`` fails in JAX for a
    process that owns a single device of a multi-process mesh ("input arrays must have
    one shard each"), the one-device-per-host layout of GPU clusters.
    """
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            total += np.asarray(leaf).nbytes
        else:  # key arrays too: their dtype's itemsize counts the key data
            total += math.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total
