"""The check of every file of a large folder, run on a thread beside training.

Reading the header of every file before the first step costs time in
proportion to the folder (18 s for 10,000 files on two shared cores). Large
folders therefore start at once and a :class:`BackgroundCheck` reads the headers
(and decodes the few files no batch would read soon, such as a small held-out
share) on a daemon thread while training runs. The dataset asks it for news at
every row it reads (:meth:`BackgroundCheck.raise_if_failed`): once the check has
found a bad file, the next row raises one error naming every bad file found, so
a broken file anywhere in the folder stops the run early, not only when a batch
happens to read it (which also raises, naming the file).
"""

from __future__ import annotations

import threading

from diffjax import image_io
from diffjax.errors import UserError

__all__ = ["BackgroundCheck"]


class BackgroundCheck:
    """Headers of ``paths`` read (and ``decode`` decoded) on a daemon thread, started at once.

    Args:
      paths: files whose header is read.
      decode: files decoded fully.
      header_test: ``(path, mode, size) -> message or None``, a further check of each header.
      what: how the error names the collection.
    """

    def __init__(self, paths, *, decode=(), header_test=None, what: str = "dataset"):
        self._paths, self._decode, self._test, self._what = list(paths), list(decode), header_test, what
        self._problems: list[str] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="diffjax-file-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._problems = image_io.file_problems(self._paths, decode=self._decode, header_test=self._test)
        except Exception as err:  # noqa: BLE001  (an OSError of the file system: reported, not lost in a thread)
            self._problems = [f"{self._what}: the file check stopped: {err}"]
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether every file has been checked."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the check ends (or ``timeout`` seconds); returns :attr:`done`."""
        return self._done.wait(timeout)

    def raise_if_failed(self) -> None:
        """Raise now if the finished check found bad files; otherwise return at once (never blocks).

        Raises:
          ValueError: listing up to 10 bad files (and how many in all) on one line.
        """
        if self._done.is_set() and self._problems:
            raise UserError(image_io.problems_message(
                self._what, self._problems,
                "found by the check of every file that runs beside training; replace or remove them and "
                "resume (the run continues from its last checkpoint)"))
