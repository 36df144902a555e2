import os
import sys

import pytest

# Tests import the shared fixtures module `gaussians` and the top-level scripts.
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from idx_fixture import write_fashion_mnist_fixture  # noqa: E402

from diffjax.data.builtin import FASHION_MNIST_ENV  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def fashion_mnist_fixture(tmp_path_factory):
    """Every test reads Fashion-MNIST from a small generated IDX set, never from system files.

    The suite then needs no ``apt-get`` (no root, no Debian): the loader is still exercised
    end to end (gzip, IDX header, reshape). Set before any test runs, so ``train.py`` /
    ``sample.py`` subprocesses inherit it. Tests of the real set pass ``data_dir`` explicitly.
    """
    folder = write_fashion_mnist_fixture(str(tmp_path_factory.mktemp("fashion_mnist_idx")))
    previous = os.environ.get(FASHION_MNIST_ENV)
    os.environ[FASHION_MNIST_ENV] = folder
    yield folder
    if previous is None:
        os.environ.pop(FASHION_MNIST_ENV, None)
    else:
        os.environ[FASHION_MNIST_ENV] = previous
