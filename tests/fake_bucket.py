"""A ``gs://`` bucket in memory, for tests of URL workdirs without network.

etils.epath routes ``gs://`` (with TensorFlow absent) to fsspec's ``"gcs"``
file system. :func:`fake_gcs` registers fsspec's in-memory file system under
that name for the duration of a test, so every write that really goes through
epath lands in a dict (``FakeGCS.store``), and anything that bypasses epath with
``os`` / ``open`` would instead create a local ``gs:`` folder, which the tests
look for. Orbax's array writes go through TensorStore's own GCS driver, which
this fake does not reach.
"""

from __future__ import annotations

import contextlib

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem


class FakeGCS(MemoryFileSystem):
    """fsspec's memory file system, answering to ``gs://`` and ``gcs://`` with a store of its own."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return super()._strip_protocol(path)


@contextlib.contextmanager
def fake_gcs():
    """Route ``gs://`` through :class:`FakeGCS` (an empty one), restoring fsspec and epath afterwards."""
    from fsspec.registry import _registry

    saved = {name: _registry.get(name) for name in ("gs", "gcs")}
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the file system per name
    try:
        yield FakeGCS.store
    finally:
        for name, cls in saved.items():
            if cls is None:
                _registry.pop(name, None)
            else:
                _registry[name] = cls
        epath_backend.fsspec_backend._get_filesystem.cache_clear()
        FakeGCS.store.clear()
