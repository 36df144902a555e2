"""Reads and writes of a run's files, for local folders and bucket URLs alike.

Every file a run keeps in its workdir (``config.json``, ``model_config.json``,
``metrics.jsonl``, sample grids, state ``.npz`` files, fingerprints) goes
through this module, which uses :mod:`etils.epath` (the path library Orbax
uses for the checkpoints themselves). A workdir may therefore be a local path
or a ``gs://`` / ``s3://`` URL wherever that file system is installed
(``gcsfs`` / ``s3fs`` for fsspec, or TensorFlow's ``tf.io.gfile``).

* **Local paths behave exactly as before.** They keep the plain ``os`` calls:
  a file is written under a temporary name in its folder and renamed over the
  final name (atomic on POSIX), so a killed run never leaves half a file; the
  bytes written are the same.
* **URLs** are written as one object per file (an object store makes an
  object visible only once its upload completes, which is the same guarantee).
  An appended log (``metrics.jsonl``) is rewritten whole on each flush, since
  objects cannot be appended to.
* A URL whose scheme epath does not route, or whose file system package is not
  installed, is refused up front naming the package to install, before
  anything is written (a URL must never become a local folder named ``gs:``).
"""

from __future__ import annotations

import io
import os
import re
import time

from etils import epath

__all__ = ["url_scheme", "check_url", "absolute", "exists", "isdir", "makedirs", "listdir", "remove", "rename",
           "open_binary", "read_text", "read_bytes", "write_text", "write_bytes", "scratch_path", "save_npz", "load_npz", "AppendLog", "file_names"]

#: fsspec package behind each URL scheme epath routes (TensorFlow's gfile serves gs:// as well).
SCHEME_PACKAGES = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}
_FSSPEC_NAMES = {"gs": "gcs", "s3": "s3", "az": "az", "hf": "hf"}
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(path) -> str | None:
    """``"gs"`` for ``gs://b/x`` (any ``scheme://``), ``None`` for a local path."""
    match = _URL.match(os.fspath(path))
    return match.group(1) if match else None


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def check_url(path) -> None:
    """Refuse a URL that epath cannot write: an unknown scheme or a missing file-system package.

    Local paths pass. Nothing is imported beyond the file-system package's class lookup.

    Raises:
      ValueError: naming the scheme and what to install (e.g. ``pip install gcsfs``), or, for
        ``file://`` and other schemes, what to pass instead.
    """
    scheme = url_scheme(path)
    if scheme is None:
        return
    if scheme not in SCHEME_PACKAGES:
        raise ValueError(f"workdir {os.fspath(path)!r} is a {scheme}:// URL, which is not supported: a workdir is a "
                         f"file-system path or a {', '.join(s + '://' for s in SCHEME_PACKAGES)} URL"
                         + (" (for file:// pass the path itself)" if scheme == "file" else ""))
    if scheme == "gs" and _tensorflow_installed():
        return  # epath routes gs:// through tf.io.gfile when TensorFlow is installed
    import fsspec

    try:
        fsspec.get_filesystem_class(_FSSPEC_NAMES[scheme])
    except (ImportError, ValueError):
        package = SCHEME_PACKAGES[scheme]
        raise ValueError(f"workdir {os.fspath(path)!r} is a {scheme}:// URL, but its file system is not installed: "
                         f"pip install {package}" + (" (or tensorflow)" if scheme == "gs" else "")
                         + ", or mount the bucket and pass the mount's path") from None


def absolute(path) -> str:
    """``os.path.abspath`` for a local path; a URL unchanged (it is absolute already)."""
    path = os.fspath(path)
    return path if url_scheme(path) else os.path.abspath(path)


def exists(path) -> bool:
    """Whether ``path`` (file or folder) exists."""
    return os.path.exists(path) if not url_scheme(path) else epath.Path(path).exists()


def isdir(path) -> bool:
    """Whether ``path`` is an existing folder."""
    return os.path.isdir(path) if not url_scheme(path) else epath.Path(path).is_dir()


def makedirs(path) -> None:
    """Create ``path`` and its parents (an existing folder is fine)."""
    if url_scheme(path):
        epath.Path(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
    """Names in the folder ``path``."""
    return os.listdir(path) if not url_scheme(path) else [p.name for p in epath.Path(path).iterdir()]


def remove(path) -> None:
    """Delete the file ``path``."""
    if url_scheme(path):
        epath.Path(path).unlink()
    else:
        os.remove(path)


def rename(src, dst) -> None:
    """Move ``src`` (a file or folder) to ``dst``, replacing nothing that exists there."""
    if url_scheme(src) or url_scheme(dst):
        epath.Path(src).rename(dst)
    else:
        os.replace(src, dst)


def open_binary(path):
    """``path`` opened for reading bytes (a context manager), local or on a bucket."""
    return open(path, "rb") if not url_scheme(path) else epath.Path(path).open("rb")


def read_bytes(path) -> bytes:
    """The whole file ``path``."""
    if url_scheme(path):
        return epath.Path(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    """The whole text file ``path``."""
    if url_scheme(path):
        return epath.Path(path).read_text()
    with open(path) as f:
        return f.read()


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` as the file ``path``, whole or not at all; the folder is created.

    Locally the bytes go to ``.<name>.<pid>.tmp`` beside ``path`` and are renamed
    over it; on a bucket the object is uploaded in one piece.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if url_scheme(path):
        makedirs(folder)  # a no-op on object stores, a real folder on file-system-like ones
        epath.Path(path).write_bytes(data)
        return
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def scratch_path(workdir, name: str) -> str:
    """A local file for ``name`` (e.g. a memory-mapped cache): ``workdir/name``, or a new temporary
    folder's ``name`` when ``workdir`` is a bucket, where files cannot be memory-mapped."""
    if not url_scheme(workdir):
        return os.path.join(workdir, name)
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="diffjax-"), name)


def save_npz(path, arrays: dict) -> None:
    """``np.savez`` of ``{name: array}`` to ``path``, written whole (:func:`write_bytes`)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def load_npz(path) -> dict:
    """The arrays of an ``.npz`` file, loaded into memory (no pickles: ``allow_pickle=False``)."""
    import numpy as np

    source = path if not url_scheme(path) else io.BytesIO(read_bytes(path))
    with np.load(source, allow_pickle=False) as stored:
        return {k: stored[k] for k in stored.files}


def file_names(folder) -> list[str]:
    """Every file under ``folder`` as a ``/``-separated relative path, in ``os.walk`` order.

    Top-down, folders and files sorted: the order fingerprints hash a checkpoint in.
    """
    folder = os.fspath(folder)
    out = []
    if not url_scheme(folder):
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            out += [os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/") for n in sorted(files)]
        return out

    def walk(rel: str) -> None:
        here = epath.Path(folder) / rel if rel else epath.Path(folder)
        children = sorted(here.iterdir(), key=lambda p: p.name)
        subdirs = [c.name for c in children if c.is_dir()]
        out.extend(f"{rel}{c.name}" for c in children if c.name not in subdirs)
        for name in subdirs:
            walk(f"{rel}{name}/")

    walk("")
    return out


class AppendLog:
    """A text log opened for appending (``metrics.jsonl``): lines written, then flushed.

    Locally this is a file opened with ``"a"``, flushed on :meth:`flush`. On a
    bucket, where objects cannot be appended to, the log keeps the file's text
    (what a resumed run wrote before, plus the new lines) and uploads it whole:
    at most once every ``upload_every_s`` seconds on :meth:`flush` (so that a
    long run does not upload a growing file at every logged step), and always on
    ``flush(force=True)`` and :meth:`close`. The trainer forces an upload at each
    checkpoint, so the log in the bucket covers every step a resumed run keeps.
    """

    def __init__(self, path, *, upload_every_s: float = 60.0):
        self.path = os.fspath(path)
        self._url = bool(url_scheme(self.path))
        self.upload_every_s = upload_every_s
        if self._url:
            self._text = [read_text(self.path)] if exists(self.path) else []
            self._uploaded_at, self._pending = time.monotonic(), False
        else:
            self._file = open(self.path, "a")

    def write(self, text: str) -> None:
        """Append ``text``."""
        if self._url:
            self._text.append(text)
            self._pending = True
        else:
            self._file.write(text)

    def flush(self, force: bool = False) -> None:
        """Make what was written visible (local: flush the file; bucket: upload the whole log
        if ``force`` or ``upload_every_s`` have passed since the last upload)."""
        if not self._url:
            self._file.flush()
        elif self._pending and (force or time.monotonic() - self._uploaded_at >= self.upload_every_s):
            write_text(self.path, "".join(self._text))
            self._uploaded_at, self._pending = time.monotonic(), False

    def close(self) -> None:
        """Flush (uploading what is pending) and close."""
        if self._url:
            self.flush(force=True)
        else:
            self._file.close()
