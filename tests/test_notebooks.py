"""The notebooks in examples/: committed without outputs, in sync with their generator, and
executed top to bottom at smoke size (``DIFFJAX_SMOKE=1``); any error in a cell fails."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
NOTEBOOKS = sorted(glob.glob(os.path.join(EXAMPLES, "*.ipynb")))
nbformat = pytest.importorskip("nbformat", reason="notebook checks need the 'test' extra (nbformat, nbclient)")


def test_there_are_notebooks():
    assert [os.path.basename(p)[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_is_stripped_and_has_one_parameter_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path}: outputs not stripped"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "DIFFJAX_SMOKE" in tagged[0].source, f"{path}: expected one 'parameters' cell"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    installs = [c for c in code_cells if '"pip", "install"' in c.source or "pip install" in c.source]
    assert installs == [code_cells[0]], f"{path}: exactly one install cell, the first code cell"
    assert code_cells[1] is tagged[0], f"{path}: the parameter cell comes right after the install cell"


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "make_notebooks.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_at_smoke_size(path, monkeypatch, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DIFFJAX_SMOKE", "1")
    monkeypatch.setenv("DIFFJAX_NOTEBOOK_OUT", str(tmp_path))  # where notebooks write runs and figures
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # Runs in examples/ as a user would; any cell error raises CellExecutionError.
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": EXAMPLES}}).execute()
