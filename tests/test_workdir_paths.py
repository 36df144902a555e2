"""Workdir arguments: local paths (str or ``etils.epath.Path``) as before; bucket URLs through etils.epath.

A ``gs://`` workdir is written through etils.epath wherever its file system is
installed. These tests route ``gs://`` to an in-memory fsspec file system
(``tests/fake_bucket.py``, no network) and check that the run's files land in
it, byte for byte as a local run writes them, and that nothing is written
locally. A URL whose file system is not installed is refused before anything is
written, naming the package to install.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from etils import epath
from fake_bucket import fake_gcs

from diffjax import workdir_io
from diffjax.run_base import check_workdir_path, check_workdir_writable
from diffjax.runs import load_run, train

URL = "gs://bucket/runs/a"


@pytest.mark.parametrize("make", [str, epath.Path], ids=["str", "epath"])
def test_local_workdir_as_str_or_epath_is_accepted(tmp_path, make):
    workdir = make(tmp_path / "run")
    assert check_workdir_path(workdir) == str(tmp_path / "run")
    check_workdir_writable(workdir)  # no error: a new folder under a writable one


@pytest.mark.parametrize("url, package", [("gs://bucket/runs/a", "gcsfs"), ("s3://bucket/a", "s3fs")])
def test_url_whose_file_system_is_missing_is_refused_naming_the_package(tmp_path, monkeypatch, url, package):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(workdir_io, "_tensorflow_installed", lambda: False)
    for check in (check_workdir_path, check_workdir_writable):
        with pytest.raises(ValueError, match=f"file system is not installed: pip install {package}"):
            check(url)
    with pytest.raises(ValueError, match=f"pip install {package}"):
        train("configs/ddpm_digits.py:smoke", url)
    with pytest.raises(ValueError, match=package):
        load_run(url)
    assert os.listdir(tmp_path) == []  # no local "gs:" folder


def test_gs_url_is_accepted_where_tensorflow_installs_its_file_system(monkeypatch):
    monkeypatch.setattr(workdir_io, "_tensorflow_installed", lambda: True)  # epath then writes through tf.io.gfile
    assert check_workdir_path("gs://bucket/a") == "gs://bucket/a"


@pytest.mark.parametrize("url", ["file:///tmp/a", "memory://a", "http://host/a"])
def test_url_of_a_scheme_epath_does_not_route_is_refused(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    for check in (check_workdir_path, check_workdir_writable):
        with pytest.raises(ValueError, match="not supported: a workdir is a file-system path or a gs://"):
            check(url)
    with pytest.raises(ValueError, match="not supported"):
        train("configs/ddpm_digits.py:smoke", url)
    assert os.listdir(tmp_path) == []


def _bucket_files(store) -> dict:
    """``{path under the bucket: bytes}`` of the fake bucket."""
    return {path.split("bucket/runs/a/", 1)[1]: bytes(f.getvalue()) for path, f in store.items()
            if "bucket/runs/a/" in path}


def _write_run_files(workdir: str) -> None:
    """What a run writes through the library's helpers, outside Orbax."""
    from diffjax import fingerprint
    from diffjax.checkpoint import write_model_config
    from diffjax.logging_utils import MetricWriter, save_samples
    from diffjax.outputs import save_image
    from diffjax.plots import plot_training_curves
    from diffjax.run_config import get_base_config, write_run_config
    from diffjax.segmenter import _save_npz

    write_run_config(workdir, get_base_config())
    write_model_config(workdir, {"image_size": 8, "channel_mult": (1, 2)})
    for steps in ((1, 2), (3,)):  # a run, then its resume appending to metrics.jsonl
        writer = MetricWriter(workdir, enabled=True)
        for step in steps:
            writer.write_scalars(step, {"loss": 1.0 / step})
        writer.close()
    images = np.linspace(-1, 1, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    save_samples(os.path.join(workdir, "generated"), images)
    save_image(os.path.join(workdir, "one.png"), np.full((3, 3), 7, np.uint8))
    _save_npz(os.path.join(workdir, "segmentation.npz"), {"w": np.arange(3.0)})
    fingerprint._write(workdir, {"backbone": {"step": 1}})
    plot_training_curves(workdir)


def test_run_files_go_through_epath_to_a_bucket_byte_for_byte_as_locally(tmp_path, monkeypatch, caplog):
    from diffjax.checkpoint import check_model_config
    from diffjax.plots import read_metrics
    from diffjax.run_config import load_run_config
    from diffjax.segmenter import _load_npz

    local = str(tmp_path / "local")
    _write_run_files(local)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with fake_gcs() as store, caplog.at_level(logging.WARNING, logger="diffjax"):
        assert check_workdir_path(URL) == URL
        check_workdir_writable(URL)
        _write_run_files(URL)
        in_bucket = _bucket_files(store)
        # Read back through the same functions a resumed or loaded run uses.
        assert load_run_config(URL).to_dict() == load_run_config(local).to_dict()
        check_model_config(URL, {"image_size": 8, "channel_mult": [1, 2]})
        with pytest.raises(ValueError, match="different model"):
            check_model_config(URL, {"image_size": 16, "channel_mult": [1, 2]})
        assert read_metrics(URL)["step"].tolist() == [1, 2, 3]
        np.testing.assert_array_equal(_load_npz(URL + "/segmentation.npz", {"w": np.zeros(3, np.float32)})["w"], np.arange(3.0))
        assert workdir_io.listdir(URL + "/generated") == ["000000.png", "000001.png", "grid.png"]
    assert os.listdir(cwd) == []  # nothing went to a local "gs:" folder
    assert any("no TensorBoard events" in r.message and "google-cloud-storage" in r.message for r in caplog.records)

    local_files = {}
    for root, _, files in os.walk(local):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                local_files[os.path.relpath(os.path.join(root, name), local)] = f.read()
    tb = {k for k in local_files if k.startswith("tb/")}
    assert tb and set(in_bucket) == set(local_files) - tb  # every file but TensorBoard's (no writer for gs:// here)
    # Plots embed matplotlib metadata, .npz files zip timestamps: same names; every other file is the same bytes.
    for name, data in in_bucket.items():
        if not name.startswith("plots/") and not name.endswith(".npz"):
            assert data == local_files[name], name
    assert json.loads(in_bucket["metrics.jsonl"].decode().splitlines()[-1]) == {"step": 3, "loss": 1 / 3}


def test_bucket_metrics_log_uploads_at_most_once_a_minute_and_whenever_flushed(monkeypatch):
    """A bucket cannot append: the whole log is uploaded, so not at every logged step."""
    from diffjax.logging_utils import MetricWriter

    clock = [1000.0]
    monkeypatch.setattr(workdir_io.time, "monotonic", lambda: clock[0])
    with fake_gcs() as store:
        def steps_in_bucket():
            name = "bucket/runs/a/metrics.jsonl"
            found = [f for path, f in store.items() if path.endswith(name)]
            return [json.loads(line)["step"] for line in bytes(found[0].getvalue()).decode().splitlines()] if found else []

        writer = MetricWriter(URL, enabled=True)
        for step in (1, 2, 3):
            writer.write_scalars(step, {"loss": 1.0})
        assert steps_in_bucket() == []  # three log lines within a minute: no upload yet
        writer.flush()  # what the trainer calls at a checkpoint
        assert steps_in_bucket() == [1, 2, 3]
        writer.write_scalars(4, {"loss": 1.0})
        clock[0] += 59.0
        writer.write_scalars(5, {"loss": 1.0})
        assert steps_in_bucket() == [1, 2, 3]
        clock[0] += 1.0
        writer.write_scalars(6, {"loss": 1.0})  # a minute after the last upload
        assert steps_in_bucket() == [1, 2, 3, 4, 5, 6]
        writer.write_scalars(7, {"loss": 1.0})
        writer.close()
        assert steps_in_bucket() == [1, 2, 3, 4, 5, 6, 7]
        resumed = MetricWriter(URL, enabled=True)  # a resumed run keeps the lines before it
        resumed.write_scalars(8, {"loss": 1.0})
        resumed.close()
        assert steps_in_bucket() == list(range(1, 9))


def test_fingerprint_of_a_checkpoint_in_a_bucket_equals_the_local_one(tmp_path, monkeypatch):
    from diffjax import fingerprint

    files = {"checkpoints/4/state/a.bin": b"abc", "checkpoints/4/state/sub/b": b"x" * 10,
             "checkpoints/4/_CHECKPOINT_METADATA": b"{}", "checkpoints/2/z": b"old",
             "model_config.json": b'{"image_size": 8, "in_channels": 1}'}
    for name, data in files.items():
        workdir_io.write_bytes(os.path.join(tmp_path, name), data)
    local = fingerprint.fingerprint(str(tmp_path))
    with fake_gcs():
        for name, data in files.items():
            workdir_io.write_bytes(f"{URL}/{name}", data)
        remote = fingerprint.fingerprint(URL)
    assert remote["workdir"] == URL and remote["step"] == 4
    assert {k: v for k, v in remote.items() if k != "workdir"} == {k: v for k, v in local.items() if k != "workdir"}


def test_outputs_to_a_bucket_are_accepted_and_convert_refuses_one(monkeypatch):
    from diffjax.convert import check_new_dir
    from diffjax.errors import UserError
    from diffjax.outputs import check_output_dir

    with fake_gcs():
        assert check_output_dir("gs://bucket/out", ["/some/input"]) == "gs://bucket/out"
    with pytest.raises(UserError, match="is a URL; write a local folder"):
        check_new_dir("gs://bucket/converted")


@pytest.mark.slow  # two training steps and a sample: 153 s on 2 shared cores
def test_a_training_run_and_its_load_use_a_bucket_workdir(tmp_path, monkeypatch):
    """dj.train / dj.load_run on a gs:// workdir: every file but Orbax's goes to the bucket.

    Orbax's arrays are written by TensorStore's own GCS driver, which the in-memory
    bucket does not reach, so the checkpoints are redirected to a local folder here;
    Orbax itself takes the gs:// path unchanged (``Checkpointer.directory``).
    """
    import jax

    from diffjax import checkpoint, trainer

    orbax_dir = str(tmp_path / "orbax")

    class LocalOrbax(checkpoint.Checkpointer):
        def __init__(self, workdir, **kwargs):
            assert workdir == URL
            super().__init__(orbax_dir, **kwargs)

    monkeypatch.setattr(trainer, "Checkpointer", LocalOrbax)
    monkeypatch.setattr(checkpoint, "Checkpointer", LocalOrbax)  # the builders import it when they restore
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with fake_gcs() as store:
        summary = train("ddpm_digits:smoke", URL,
                        overrides={"training.num_steps": 2, "training.sample_every": 2, "training.log_every": 1,
                                   "eval.enabled": False})
        assert summary["step"] == 2
        names = set(_bucket_files(store))
        assert {"config.json", "model_config.json", "metrics.jsonl", "samples/step_000002.png",
                "plots/loss.png"} <= names, names
        run = load_run(URL)
        images = run.generate(2, key=jax.random.key(0))
        assert images.shape[0] == 2
    assert os.listdir(cwd) == []
    assert os.listdir(os.path.join(orbax_dir, "checkpoints")) == ["2"]
