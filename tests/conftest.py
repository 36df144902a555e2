import os
import shutil
import sys
import tempfile

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


# XLA's CPU compiler, set for quick compiles in the default suite: most of its time is XLA
# compiling small programs that then run a few steps (the suite: 29 -> 17 min on 2 cores).
# Level 0 skips LLVM's optimisation passes and the legacy emitters skip the fusion emitters'
# MLIR pipeline. The programs compute the same float32 arithmetic (no fast math) but round
# differently from level 3, so two different programs may differ in the last bits, and run
# slower: a test that wants them bit-equal, or that runs thousands of steps, pins its own
# jits to the default level (tests/xla_levels.py). The slow
# checks (-m slow), long runs at full size, keep XLA's defaults, as does
# DIFFJAX_TEST_DEFAULT_XLA=1 (docs/install.md, "Running the tests"). Set in
# pytest_configure, before jax starts its backend; every subprocess a test starts inherits
# it (the fake-device helpers append to XLA_FLAGS, never replace it).
QUICK_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def _use_quick_compile_flags(config) -> None:
    if os.environ.get("DIFFJAX_TEST_DEFAULT_XLA") == "1" or "not slow" not in (config.getoption("markexpr") or ""):
        return
    if QUICK_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit the controller's
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + QUICK_COMPILE_FLAGS).strip()


# One persistent JAX compilation cache for the whole run: both xdist workers and every
# train.py / sample.py / worker subprocess they start (they inherit the environment).
# Most of the suite's time is XLA compiling the same tiny programs again: each cold
# process, each new jit closure of a train step in the same process. A cached entry is
# the executable XLA compiled, so every number is the same. The folder is new for each
# pytest run (CI starts empty) and removed at its end. Entries are written whole by one
# process and never evicted; JAX compiles anew (with a warning) if an entry cannot be
# read, e.g. one cut short by a test's SIGKILL. DIFFJAX_TEST_NO_JAX_CACHE=1 turns it off.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_CACHE_OWNER = "DIFFJAX_TEST_JAX_CACHE_OWNER"
_CACHE_SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def pytest_configure(config):
    _use_quick_compile_flags(config)
    if os.environ.get("DIFFJAX_TEST_NO_JAX_CACHE") == "1":
        return
    if not os.environ.get(_CACHE_ENV):  # the controller (or a plain run) makes it; xdist workers inherit it
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="diffjax-jax-cache-")
        os.environ[_CACHE_OWNER] = str(os.getpid())
    for name, value in _CACHE_SETTINGS.items():
        os.environ.setdefault(name, value)
    import jax  # already imported above (through diffjax), before these variables were set

    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)
