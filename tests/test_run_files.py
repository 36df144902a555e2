"""sample.py's writers and what a run refuses to resume.

* A Palette restore's progress bar advances once per restored image
  (``diffjax.run_files.write_restored`` through ``restore_inputs``).
* Checkpoints of an older layout (an LSGM state without the non-finite counters,
  a DDeP ``ddep_resume.npz`` of the loop before the one trainer) are refused with one
  message that says why and what to do, not an error from inside Orbax.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from PIL import Image
from untrained_runs import ROOT, tiny_config, write_initial_run

import diffjax as dj
from diffjax import run_files
from diffjax.run_config import load_config_file, load_run_config, write_run_config
from diffjax.runs import sample_from_workdir

SIDE = 16


class _Bar:
    """Records what a writer tells its tqdm bar."""

    def __init__(self, made, total=None, **kwargs):
        self.total, self.n = total, 0
        made.append(self)

    def update(self, k=1):
        self.n += k

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_palette_restore_advances_its_progress_bar_once_per_image(tmp_path, monkeypatch):
    config = tiny_config("palette_inpainting.py:smoke", {"sampling.batch_size": 2})
    workdir = write_initial_run(config, str(tmp_path / "run"), (SIDE, SIDE, 3))
    folder = tmp_path / "in"
    folder.mkdir()
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[4:12, 4:12] = 255  # white = fill
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (SIDE, SIDE, 3), np.uint8)).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")
    made = []
    monkeypatch.setattr(run_files, "tqdm", lambda **kwargs: _Bar(made, **kwargs))
    summary = sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "out"),
                                  input_dir=str(folder))
    assert summary["num"] == 3
    assert [(bar.total, bar.n) for bar in made] == [(3, 3)]  # two batches (2 + 1 images), three updates


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _LSGMStateBefore:
    """``run_lsgm.LSGMState`` as it was before it held the non-finite guard's counters."""

    step: jax.Array
    vae_params: object
    prior_params: object
    vae_opt: object
    prior_opt: object
    vae_ema: object
    prior_ema: object


def test_an_lsgm_checkpoint_of_the_older_layout_is_refused_saying_why_and_what_to_do(tmp_path):
    from diffjax import run_lsgm
    from diffjax.checkpoint import Checkpointer, write_model_config

    config = load_config_file(os.path.join(ROOT, "configs", "lsgm_fashion_mnist.py:smoke"))
    model, vae, prior = run_lsgm.build_lsgm_model(config, (32, 32, 1))
    state = run_lsgm._initial_state(vae, prior, *run_lsgm._optimizers(config))
    old = _LSGMStateBefore(**{f.name: getattr(state, f.name) for f in dataclasses.fields(_LSGMStateBefore)})
    workdir = str(tmp_path / "lsgm")
    os.makedirs(workdir)
    write_run_config(workdir, config)
    write_model_config(workdir, model.model_config_dict())
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(2, old)
    checkpointer.close()
    with pytest.raises(ValueError, match=r"checkpoint 2 in .* was written by an older diffjax: its training state has "
                                         r"no \['first_nonfinite_step', 'nonfinite_steps'\].*new --workdir"):
        dj.load_run(workdir)


def test_a_ddep_resume_file_of_the_older_layout_is_refused_saying_why_and_what_to_do(tmp_path):
    from diffjax.run_segmentation import RESUME_FILE, _ResumeFile

    np.savez(tmp_path / RESUME_FILE, **{"['params']['w']": np.zeros(3), "['opt_state'][0]": np.zeros(3),
                                         "['step']": np.int32(5)})
    with pytest.raises(ValueError, match=r"older diffjax.*Delete the file to pretrain again from step 0"):
        _ResumeFile(str(tmp_path)).latest_step()
