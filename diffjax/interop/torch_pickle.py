"""Read PyTorch ``.pt`` / ``.pth`` checkpoints into NumPy without running their pickles.

``torch.save`` (PyTorch >= 1.6) writes a zip archive::

    <name>/data.pkl      a pickle of the saved object; every tensor is a call to
                         ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
                         whose ``storage`` is a persistent id ``("storage", torch.FloatStorage,
                         key, location, numel)``
    <name>/data/<key>    the raw bytes of each storage
    <name>/byteorder     ``little`` or ``big``

An ordinary unpickler would import and call whatever the pickle names, so a
checkpoint from an untrusted source can run arbitrary code. This reader's
unpickler resolves only the handful of globals a tensor checkpoint needs
(``collections.OrderedDict``, the tensor rebuild functions, the storage types)
and maps each to a local stand-in that builds NumPy arrays; any other global
(``os.system``, ``builtins.eval``, a model class, ...) raises
:class:`UnsafeCheckpointError` naming it, before anything is called. The idea
is the same as PyTorch's own ``weights_only=True`` loader, with a narrower list.

The legacy (pre-1.6, non-zip) format and TorchScript archives are refused with
a message saying how to convert them.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["UnsafeCheckpointError", "load_torch_pickle", "read_torch_checkpoint", "flatten_arrays"]


class UnsafeCheckpointError(ValueError):
    """A checkpoint needs something other than tensors and plain containers to load."""


# torch storage class name -> NumPy dtype of one element.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}

# The first bytes of a legacy torch.save file: a pickled magic number (pickle protocol 2).
_PICKLE_START = b"\x80"


class _StorageType:
    """Stand-in for ``torch.<X>Storage`` inside the pickle: it only carries a dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied."""
    del requires_grad, metadata  # autograd flags and tensor metadata have no NumPy meaning
    if backward_hooks:
        raise UnsafeCheckpointError("a tensor in the checkpoint carries backward hooks; refusing to load them")
    if not isinstance(storage, np.ndarray):
        raise UnsafeCheckpointError(f"a tensor's storage must come from the archive, got {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in (*size, *stride, storage_offset)):
        raise UnsafeCheckpointError(f"malformed tensor record: offset {storage_offset!r}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise UnsafeCheckpointError(
            f"tensor of size {size}, stride {stride}, offset {storage_offset} reads element {last} "
            f"of a storage holding {storage.size}")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view, order="C")  # own the memory, C-contiguous


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter`` (an ``nn.Parameter`` saved as such)."""
    del requires_grad
    if backward_hooks:
        raise UnsafeCheckpointError("a parameter in the checkpoint carries backward hooks; refusing to load them")
    return data


def _allowed_global(module: str, name: str):
    """The stand-in for an allowed global, or ``None``."""
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
        return _rebuild_parameter
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
        return _StorageType(name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, read_record, byteorder: str):
        super().__init__(io.BytesIO(data))
        self._read_record = read_record
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):  # noqa: D102 - the single gate for every global
        found = _allowed_global(module, name)
        if found is None:
            raise UnsafeCheckpointError(
                f"the checkpoint's pickle asks for the global {module}.{name}; only tensors, "
                "dicts, lists and numbers are loaded (a checkpoint that needs code to load is refused)")
        return found

    def persistent_load(self, pid):  # noqa: D102
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafeCheckpointError(f"unexpected persistent id in the checkpoint: {pid!r:.200}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            raw = self._read_record(f"data/{key}")
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            if len(raw) < numel * dtype.itemsize:
                raise UnsafeCheckpointError(
                    f"storage {key} holds {len(raw)} bytes, {numel} x {dtype.itemsize} expected")
            array = np.frombuffer(raw, dtype, count=numel)
            self._storages[key] = array.astype(storage_type.dtype, copy=False)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype:  # one storage viewed as two dtypes (rare; untyped storages)
            storage = storage.view(np.uint8).view(storage_type.dtype)
        return storage


def _open_archive(path: str) -> tuple[zipfile.ZipFile, str]:
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        if head.startswith(_PICKLE_START):
            raise UnsafeCheckpointError(
                f"{path} is in PyTorch's legacy (pre-1.6) serialisation format, which is not read: "
                "load it once with torch and save it again with torch.save (zip format) or as safetensors")
        raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle; starts {head!r})")
    archive = zipfile.ZipFile(path)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        names = archive.namelist()
        if any(n.endswith("/constants.pkl") for n in names):
            raise UnsafeCheckpointError(f"{path} is a TorchScript archive (holds code); save its state_dict() instead")
        raise ValueError(f"{path}: expected one <name>/data.pkl in the archive, found {len(pickles)} "
                         f"(entries: {names[:8]})")
    return archive, pickles[0][: -len("data.pkl")]


def load_torch_pickle(path: str) -> Any:
    """Load a ``torch.save`` zip checkpoint, tensors as NumPy arrays, without running code.

    Args:
      path: a file written by ``torch.save`` with PyTorch >= 1.6.

    Returns:
      The saved object with every tensor replaced by a C-contiguous ``np.ndarray``
      of the same dtype (``bfloat16`` as ``ml_dtypes.bfloat16``): usually a dict.

    Raises:
      UnsafeCheckpointError: the pickle names any global other than those of a
        tensor checkpoint (the message names it); the file is in the legacy
        format or is a TorchScript archive.
      ValueError: the file is not a torch checkpoint.
    """
    archive, prefix = _open_archive(path)
    with archive:
        names = set(archive.namelist())

        def read_record(name: str) -> bytes:
            if prefix + name not in names:
                raise UnsafeCheckpointError(f"the checkpoint refers to record {name!r}, missing from {path}")
            return archive.read(prefix + name)

        byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: byteorder record must be 'little' or 'big', got {byteorder!r}")
        return _RestrictedUnpickler(archive.read(prefix + "data.pkl"), read_record, byteorder).load()


def flatten_arrays(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten nested dicts of arrays to ``{"a.b.c": array}``; non-array leaves are dropped.

    Args:
      tree: a dict (possibly nested) as returned by :func:`load_torch_pickle`.
      prefix: prepended to every key.

    Returns:
      A flat dict of the arrays, keys joined with ``"."``, in the tree's order.
    """
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, np.ndarray):
        return {prefix.rstrip("."): tree}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_arrays(value, f"{prefix}{key}."))
    return out


def read_torch_checkpoint(path: str, key: str | None = None) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint's tensors as a flat ``{name: np.ndarray}`` state dict.

    Args:
      path: a ``.pt`` / ``.pth`` / ``.ckpt`` file written by ``torch.save``.
      key: where the state dict sits in the saved object, e.g. ``"state_dict"``
        for Lightning checkpoints (``None``: the saved object itself, or its
        ``"state_dict"`` entry when the object is a dict holding one).

    Returns:
      ``{name: array}``; names of nested dicts are joined with ``"."``, and
      non-tensor entries (step counters, hyper-parameters) are left out.

    Raises:
      UnsafeCheckpointError, ValueError: see :func:`load_torch_pickle`; ``key``
        missing; no tensors found.
    """
    tree = load_torch_pickle(path)
    if key is None and isinstance(tree, dict) and isinstance(tree.get("state_dict"), dict):
        key = "state_dict"
    if key is not None:
        if not isinstance(tree, dict) or key not in tree:
            found = list(tree)[:10] if isinstance(tree, dict) else type(tree).__name__
            raise ValueError(f"{path}: no entry {key!r} in the checkpoint (top level: {found})")
        tree = tree[key]
    state = flatten_arrays(tree)
    if not state:
        raise ValueError(f"{path}: no tensors found in the checkpoint")
    return state
