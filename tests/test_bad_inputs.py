"""The catalogue of bad inputs: each is refused with a message naming the problem and the fix,
and leaves the work directory as it was (or never creates it).

Cases, by where they are caught:

* config: typo keys, missing keys, mistyped command-line overrides, unknown
  names, image sizes and attention resolutions the UNet cannot take, batch not
  divisible by devices or processes, zero/negative/non-integer steps, bad
  ``nonfinite`` mode, EMA decay, learning rate;
* data: unknown dataset, dataset files missing;
* work directory: a file in the way, no write permission;
* multi-host flags: partial, out of range, malformed;
* checkpoints: different model config, different structure, truncated or
  corrupt files, missing arrays;
* sampling: ``--input`` for a task that takes none, ``--num 0``, no checkpoint,
  not a run directory;
* values: NaN training inputs (``training.nonfinite`` = stop / skip), restoration
  inputs of the wrong dtype, masks of the wrong shape or not binary.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from train_fixtures import assert_trees_equal, flat_params, restore_state, tiny_config

CATALOGUE_STEPS = 2


def contents(directory: str) -> dict[str, str]:
    """Every file under ``directory`` with a hash of its bytes (rewriting identical bytes is no damage)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _train(config, workdir):
    from train import train_and_evaluate

    return train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 1 and 2."""
    workdir = str(tmp_path_factory.mktemp("bad_inputs") / "run")
    config = tiny_config(num_steps=CATALOGUE_STEPS)
    config.training.ckpt_every = 1
    _train(config, workdir)
    return workdir, config


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run, free to corrupt."""
    workdir, config = trained
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    return copy, config


# -- config: refused before the work directory is created ----------------------


def _set(path: str, value):
    def change(c):
        section, key = path.split(".")
        with c.unlocked():
            c[section][key] = value
        return c

    return change


def _retype(path: str, value):
    """A value of another type, as a config rebuilt from JSON or a dict can hold
    (a ConfigDict's own type check stops it on assignment)."""

    def change(c):
        section, key = path.split(".")
        raw = c.to_dict()
        raw[section][key] = value
        return ml_collections.ConfigDict(raw)

    return change


CONFIG_CASES = {
    "typo_key": (_set("training.bacth_size", 4), r"unknown key config\.training\.bacth_size \(valid here: .*'batch_size'"),
    "unknown_sampler": (_set("sampling.sampler", "dmpsolver"), r"unknown sampler 'dmpsolver'; expected one of .*'ddim'"),
    "unknown_sde": (_set("sde.name", "vpp"), r"unknown sde 'vpp'; expected one of .*'vp'"),
    "image_size_not_divisible": (_set("data.image_size", 15), r"image_size=15 must be divisible by"),
    "attention_resolution_absent": (_set("model.attn_resolutions", (5,)), r"attn_resolutions \[5\] do not occur"),
    "zero_batch": (_set("training.batch_size", 0), r"config\.training\.batch_size must be >= 1, got 0"),
    "zero_steps": (_set("training.num_steps", 0), r"config\.training\.num_steps must be >= 1, got 0"),
    "negative_steps": (_set("training.num_steps", -5), r"config\.training\.num_steps must be >= 1, got -5"),
    "steps_of_wrong_type": (_retype("training.num_steps", "100"),
                            r"num_steps must be an integer, got '100' \(str\); e\.g\. --config\.training\.num_steps=100"),
    "fractional_checkpoint_interval": (_retype("training.ckpt_every", 2.5), r"ckpt_every must be an integer, got 2\.5"),
    "nonfinite_mode_typo": (_set("training.nonfinite", "skp"), r"nonfinite must be one of \['stop', 'skip'\], got 'skp'"),
    "ema_decay_out_of_range": (_set("training.ema_decay", 1.5), r"ema_decay must lie in \[0, 1\), got 1\.5; e\.g\. 0\.999"),
    "zero_learning_rate": (_set("optim.lr", 0.0), r"learning rate must be > 0, got 0\.0"),
    "unknown_dataset": (_set("data.name", "mnistt"), r"unknown dataset 'mnistt'; expected one of .*'digits'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_refused_before_writing(tmp_path, case):
    change, message = CONFIG_CASES[case]
    config = tiny_config(num_steps=1)
    if case in ("image_size_not_divisible", "attention_resolution_absent"):
        config.data.image_size, config.model.channel_mult = 16, (1, 2)
    config = change(config)
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        _train(config, workdir)
    assert not os.path.exists(workdir)


def test_missing_config_key_names_it_and_the_schema(tmp_path):
    config = tiny_config(num_steps=1)
    with config.unlocked():
        del config.training["nonfinite"]  # e.g. a config file written for an older schema
    with pytest.raises(ValueError, match=r"configs/default\.py(.|\n)*missing key config\.training\.nonfinite"):
        _train(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.training.bacth_size=4", r"unknown config key 'bacth_size'.*Did you mean 'batch_size'\?"),
        ("--config.trainig.num_steps=4", r"unknown config key 'trainig'.*Did you mean 'training'\?"),
    ],
    ids=["key", "section"],
)
def test_mistyped_command_line_override_suggests_the_key(flag, message):
    from diffjax.builders import check_override_keys

    with pytest.raises(ValueError, match=message):
        check_override_keys(["train.py", flag], tiny_config())


def test_batch_not_divisible_by_devices_names_valid_sizes():
    from diffjax.sharding import check_batch_divisible

    eight_devices = types.SimpleNamespace(devices=np.empty(8))  # only the device count is read
    with pytest.raises(ValueError, match=r"global batch size 12 is not divisible by the number of devices 8; "
                                         r"set --config\.training\.batch_size to a multiple of 8 \(e\.g\. 8 or 16\)"):
        check_batch_divisible(12, eight_devices)


def test_batch_not_divisible_by_processes_names_valid_sizes():
    from diffjax.data.pipeline import host_rows

    with pytest.raises(ValueError, match=r"global_batch_size=12 is not divisible by process_count=8; "
                                         r"choose a global batch size that is a multiple of 8"):
        host_rows(12, 0, 8)


def test_missing_dataset_files_say_where_to_get_them(tmp_path):
    config = tiny_config(num_steps=1)
    config.data.name, config.data.data_dir = "fashion_mnist", str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST not found(.|\n)*pass data_dir="):
        _train(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


# -- the work directory -----------------------------------------------------------


def test_workdir_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"cannot be created: .*a_file is a file, not a directory; choose another --workdir"):
        _train(tiny_config(num_steps=1), str(blocker / "run"))
    assert blocker.read_text() == "not a directory"


def test_workdir_without_write_permission_is_refused(tmp_path, monkeypatch):
    """A read-only parent folder is refused before anything is written.

    Root may write anywhere, and CI runs as root: there the missing permission is
    simulated by making ``os.access`` deny writes under the locked folder (what it
    reports for a non-root user), so the refusal path runs on every machine.
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            inside = os.path.abspath(path).startswith(str(locked))
            return False if inside and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    try:
        with pytest.raises(ValueError, match=r"is not writable(.|\n)*choose a writable --workdir"):
            _train(tiny_config(num_steps=1), str(locked / "run"))
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


# -- multi-host flags ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coordinator_address": "127.0.0.1:1234"}, (r"needs all of --coordinator_address, --num_processes and "
                                                       r"--process_id .*missing \['--num_processes', '--process_id'\]")),
        ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
         r"need num_processes >= 1 and 0 <= process_id < num_processes, got num_processes=2, process_id=2"),
        ({"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 0}, r"must be host:port \(e\.g\. "),
        ({"coordinator_address": "127.0.0.1:1234", "num_processes": "two", "process_id": 0},
         r"num_processes must be an integer, got 'two'"),
    ],
    ids=["partial", "process_id_out_of_range", "address_without_port", "count_not_a_number"],
)
def test_bad_multihost_flags(kwargs, message, monkeypatch):
    from diffjax import distributed

    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(**kwargs)


# -- checkpoints -----------------------------------------------------------------------


def test_checkpoint_of_a_different_model_config(run_copy):
    workdir, _ = run_copy
    before = contents(workdir)
    config = tiny_config(num_steps=4)
    config.model.base_channels = 16
    with pytest.raises(ValueError, match=r"different model(.|\n)*base_channels: checkpoint has 8, this config has 16"
                                         r"(.|\n)*Use a new --workdir"):
        _train(config, workdir)
    assert contents(workdir) == before


def _truncate_manifest(state_dir):
    with open(os.path.join(state_dir, "manifest.ocdbt"), "r+b") as f:
        f.truncate(10)


def _garble_metadata(state_dir):
    with open(os.path.join(state_dir, "_METADATA"), "w") as f:
        f.write("{not json")


CORRUPTIONS = {
    "truncated_file": _truncate_manifest,
    "corrupt_metadata": _garble_metadata,
    "arrays_missing": shutil.rmtree,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_copy, corruption, caplog):
    # A damaged newest step is skipped with one warning naming it; the previous, intact one is restored
    # (training then resumes from it: tests/test_guards_runs.py). Nothing is moved by a restore.
    workdir, config = run_copy
    CORRUPTIONS[corruption](os.path.join(workdir, "checkpoints", str(CATALOGUE_STEPS), "state"))
    before = contents(workdir)
    with caplog.at_level(logging.WARNING, logger="diffjax.checkpoint"):
        state = restore_state(workdir, tiny_config(num_steps=CATALOGUE_STEPS + 2))
    assert int(state.step) == CATALOGUE_STEPS - 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "diffjax.checkpoint"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert f"step {CATALOGUE_STEPS} in" in warnings[0] and f"using step {CATALOGUE_STEPS - 1}" in warnings[0]
    assert contents(workdir) == before
    with pytest.raises(ValueError, match=rf"checkpoint {CATALOGUE_STEPS} in .* cannot be restored(.|\n)*"
                                         rf"To resume from the previous checkpoint {CATALOGUE_STEPS - 1}, move "
                                         rf".*checkpoints/{CATALOGUE_STEPS} out of the way"):
        restore_state(workdir, tiny_config(num_steps=CATALOGUE_STEPS + 2), step=CATALOGUE_STEPS)  # asked by name


def test_checkpoint_of_another_structure_without_its_model_config(run_copy):
    workdir, _ = run_copy
    os.remove(os.path.join(workdir, "model_config.json"))  # the guard cannot see the difference: the restore must
    before = contents(workdir)
    config = tiny_config(num_steps=4)
    config.model.base_channels = 16
    with pytest.raises(ValueError, match=r"cannot be restored into the state this run builds \(it does not match"
                                         r"(.|\n)*new --workdir"):
        restore_state(workdir, config)
    assert contents(workdir) == before


# -- sampling ---------------------------------------------------------------------------


def test_sample_input_for_a_task_without_inputs(trained, tmp_path):
    from sample import load_run_config, sample_from_workdir

    workdir, _ = trained
    before = contents(workdir)
    with pytest.raises(ValueError, match=r"--input is for restoration and translation; this run's task 'generate' generates"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "o"), input_dir=str(tmp_path))
    assert contents(workdir) == before and not os.path.exists(tmp_path / "o")


def test_sample_zero_images(trained, tmp_path):
    from sample import load_run_config, sample_from_workdir

    workdir, _ = trained
    with pytest.raises(ValueError, match=r"--num must be >= 1, got 0"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "o"), num=0)
    assert not os.path.exists(tmp_path / "o")


def test_sample_without_a_checkpoint(run_copy, tmp_path):
    from sample import load_run_config, sample_from_workdir

    workdir, _ = run_copy
    shutil.rmtree(os.path.join(workdir, "checkpoints"))
    with pytest.raises(ValueError, match=r"no checkpoint in .*: train first with train\.py"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "o"), num=1)
    assert not os.path.exists(tmp_path / "o")


def test_sample_from_a_directory_that_is_not_a_run(tmp_path):
    from sample import load_run_config

    with pytest.raises(ValueError, match=r"holds no config\.json: expected the --workdir of a train\.py run"):
        load_run_config(str(tmp_path))
    assert os.listdir(tmp_path) == []


# -- values -------------------------------------------------------------------------------


class _NaNAtStep:
    """Wraps a dataset: the batch of data step ``bad_step`` carries a NaN pixel."""

    def __init__(self, dataset, bad_step: int):
        self._dataset, self._bad_step = dataset, bad_step

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def iterator(self, global_batch_size, start_step=0, **kwargs):
        kwargs["prefetch"] = 0
        for step, batch in enumerate(self._dataset.iterator(global_batch_size, start_step, **kwargs), start_step):
            if step == self._bad_step:
                batch = dict(batch, image=batch["image"].copy())
                batch["image"][0, 0, 0, 0] = np.nan
            yield batch


def _nan_run(monkeypatch, tmp_path, mode: str):
    from diffjax import builders

    real = builders.build_dataset
    # Train step 3 reads data step 2.
    monkeypatch.setattr(builders, "build_dataset", lambda c, split="train": _NaNAtStep(real(c, split), 2))
    config = tiny_config(num_steps=4)
    config.training.ckpt_every = 1
    config.training.nonfinite = mode
    return config, str(tmp_path / "run")


def test_nan_input_stops_naming_the_step_and_the_last_good_checkpoint(monkeypatch, tmp_path):
    config, workdir = _nan_run(monkeypatch, tmp_path, "stop")
    with pytest.raises(FloatingPointError, match=r"non-finite \(NaN/inf\) loss, gradient or parameters at step 3 (.|\n)*stopping without "
                                                 r"saving\. the last good checkpoint is step 2 in (.|\n)*"
                                                 r"--config\.training\.nonfinite=skip"):
        _train(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
    params = flat_params(restore_state(workdir, config).params)
    assert all(np.isfinite(v).all() for v in params.values())


def test_nan_input_skipped_and_counted(monkeypatch, tmp_path):
    from worker_procs import metric_rows

    config, workdir = _nan_run(monkeypatch, tmp_path, "skip")
    summary = _train(config, workdir)
    assert summary["step"] == 4
    counts = {r["step"]: r["nonfinite_steps"] for r in metric_rows(workdir)}
    assert counts == {1: 0, 2: 0, 3: 1, 4: 1}
    before, after = (restore_state(workdir, config, step) for step in (2, 3))
    assert int(after.step) == 3 and int(after.first_nonfinite_step) == 3
    # The update of step 3 was skipped.
    assert_trees_equal((after.params, after.ema_params), (before.params, before.ema_params))


def _repaint_inputs():
    from diffjax.sde import VPSDE

    return (lambda x, t: -x), VPSDE(), jnp.zeros((2, 8, 8, 1)), np.ones((8, 8))


def test_restoration_input_of_the_wrong_dtype():
    from diffjax.tasks.repaint import repaint

    score, sde, _image, mask = _repaint_inputs()
    with pytest.raises(ValueError, match=r"image must be a floating-point array, got dtype uint8; convert uint8"):
        repaint(score, sde, np.zeros((2, 8, 8, 1), np.uint8), mask, key=jax.random.key(0), steps=2)


def test_restoration_mask_of_the_wrong_shape():
    from diffjax.tasks.repaint import repaint

    score, sde, image, _ = _repaint_inputs()
    with pytest.raises(ValueError, match=r"mask of shape \(16, 16, 1\) does not broadcast to the image shape "
                                         r"\(2, 8, 8, 1\); expected \(H, W\)"):
        repaint(score, sde, image, np.ones((16, 16)), key=jax.random.key(0), steps=2)


def test_restoration_mask_that_is_not_binary():
    from diffjax.tasks.repaint import repaint

    score, sde, image, _ = _repaint_inputs()
    with pytest.raises(ValueError, match=r"mask must be binary \(1 = known, 0 = fill\)"):
        repaint(score, sde, image, np.full((8, 8), 0.5), key=jax.random.key(0), steps=2)
