"""Output guards, atomic writes, one-line errors and first-stage fingerprints (no training: seconds).

Numbered cases: (1) --output equal to / inside / around --input refused for every restoring task,
segmentation skips its own outputs; (6) a bad --output refused before anything runs; (9) config
files that do not parse named with their line, unknown model_config keys named, one ``error:`` line;
(2) a changed or resized first stage refused naming both fingerprints (wiring through the latent
pipeline; the trained end-to-end version is in test_guards_runs.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from train_fixtures import snapshot

from diffjax import errors, fingerprint, outputs
from diffjax.run_config import load_config_file, load_run_config, write_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One config per kind of sample.py run that reads --input (no training: refusals come first).
RUNS = {
    "sr3": "sr3_photos_x4.py:smoke",
    "palette": "palette_inpainting.py:smoke",
    "repaint": "repaint_fashion_mnist.py:smoke",
    "ldm_sr": "ldm_photos_sr4.py:smoke",
    "autoencoder": "autoencoder_photos.py:smoke",
    "segmentation": "segmentation_ddpm_features.py:smoke",
    "translation": "translation_fashion_mnist.py:score_smoke",
}


def _untrained_run(tmp_path, spec: str) -> str:
    config = load_config_file(os.path.join(ROOT, "configs", spec))
    if spec.startswith("translation"):
        config.translation.method = "sdedit"
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    write_run_config(workdir, config)
    return workdir


def _inputs(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        os.path.join(folder, "a.png"))
    return str(folder)


# -- (1), (6): outputs checked before any work -----------------------------------------------


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("where, match", [("same", "is the input folder"), ("inside", "inside the input folder"),
                                          ("around", "contains the input folder")])
def test_output_touching_input_is_refused_before_anything(tmp_path, run, where, match):
    from diffjax.runs import sample_from_workdir

    workdir = _untrained_run(tmp_path, RUNS[run])
    inputs = _inputs(tmp_path / "data" / "in")
    output = {"same": inputs, "inside": os.path.join(inputs, "out"), "around": str(tmp_path / "data")}[where]
    before = snapshot(str(tmp_path / "data"))
    with pytest.raises(errors.UserError, match=match):
        sample_from_workdir(load_run_config(workdir), workdir, output=output, input_dir=inputs)
    assert snapshot(str(tmp_path / "data")) == before


@pytest.mark.parametrize("run", ["sr3", "segmentation", "translation"])
def test_bad_output_path_is_refused_before_the_model_is_touched(tmp_path, run):
    from diffjax.runs import sample_from_workdir

    workdir = _untrained_run(tmp_path, RUNS[run])  # no checkpoint: reaching the model would say so instead
    inputs = _inputs(tmp_path / "in")
    (tmp_path / "file.png").write_bytes(b"x")
    for output, match in [(str(tmp_path / "file.png"), "existing file"),
                          (str(tmp_path / "file.png" / "sub"), "cannot be created")]:
        with pytest.raises(errors.UserError, match=match):
            sample_from_workdir(load_run_config(workdir), workdir, output=output, input_dir=inputs)


def test_generating_run_refuses_an_existing_file_as_output(tmp_path):
    from diffjax.runs import sample_from_workdir
    from train_fixtures import tiny_config

    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    write_run_config(workdir, tiny_config())
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(errors.UserError, match="existing file"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "taken"), num=2)
    assert (tmp_path / "taken").read_text() == "mine"


def test_generating_run_given_input_is_told_about_translation_method(tmp_path):
    from diffjax.runs import sample_from_workdir
    from train_fixtures import tiny_config

    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    write_run_config(workdir, tiny_config())
    with pytest.raises(ValueError, match=r"generates from noise unless .*--config\.translation\.method=sdedit"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "o"),
                            input_dir=_inputs(tmp_path / "in"))


def test_unwritable_parent_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(errors.UserError, match="no write permission"):
        outputs.check_output_dir(str(locked / "out"))


def test_segmentation_does_not_read_its_own_outputs(tmp_path):
    from diffjax.pipelines.translation import read_translation_inputs

    rng = np.random.default_rng(0)
    for name in ("s.png", "s_label.png", "s_uncertainty.png", "s_label_label.png"):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / name)
    names = [n for n, _ in read_translation_inputs(str(tmp_path), (8, 8, 1), exclude=outputs.is_own_output)]
    assert names == ["s.png"]
    assert [n for n, _ in read_translation_inputs(str(tmp_path), (8, 8, 1))] == sorted(
        ["s.png", "s_label.png", "s_uncertainty.png", "s_label_label.png"])  # translation reads every PNG


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "x.png")
    outputs.save_image(path, np.zeros((4, 4, 3), np.uint8))
    before = open(path, "rb").read()

    def half_written(fp, data):  # the disk fills up after half of the bytes
        fp.write(data[: len(data) // 2])
        raise OSError("disk full")

    with monkeypatch.context() as m:  # the encoder fails after writing part of the PNG
        m.setattr(Image.Image, "save", lambda self, fp, format=None, **kw: half_written(fp, b"\x89PNG whole"))
        with pytest.raises(OSError, match="disk full"):
            outputs.save_image(path, np.full((4, 4, 3), 255, np.uint8))
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["x.png"]  # no temporary file left behind

    real_open = open

    class HalfWriter:  # the temporary file's write stops halfway: disk full
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            half_written(self.f, data)

    def open_failing_midway(name, mode="r", *args, **kwargs):
        f = real_open(name, mode, *args, **kwargs)
        return HalfWriter(f) if "w" in mode and os.path.basename(name).startswith(".x.png.") else f

    monkeypatch.setattr("builtins.open", open_failing_midway)
    with pytest.raises(OSError, match="disk full"):
        outputs.save_image(path, np.full((4, 4, 3), 255, np.uint8))
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["x.png"]


def test_save_png_of_the_library_is_atomic(tmp_path, monkeypatch):
    from diffjax.logging_utils import save_png

    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((os.path.basename(a), os.path.basename(b))),
                                                     real(a, b)))
    save_png(str(tmp_path / "g.png"), np.zeros((2, 2, 1), np.uint8))
    assert len(seen) == 1 and seen[0][1] == "g.png" and seen[0][0].startswith(".g.png.") and seen[0][0].endswith(".tmp")


# -- (9): one error line, files named with their line --------------------------------------


def test_run_cli_prints_one_line_and_exits_1(capsys):
    def main():
        raise ValueError("cannot do it:\n  a.png: bad\n  b.png: worse")

    with pytest.raises(SystemExit) as info:
        errors.run_cli(main, argv=["prog"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: cannot do it:; a.png: bad; b.png: worse\n"


def test_run_cli_debug_shows_the_traceback_and_strips_the_flag(monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    argv = ["prog", "--debug", "--x=1"]
    with pytest.raises(ValueError, match="boom"):
        errors.run_cli(lambda: (_ for _ in ()).throw(ValueError("boom")), argv=argv)
    assert argv == ["prog", "--x=1"]
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    with pytest.raises(ValueError):
        errors.run_cli(lambda: (_ for _ in ()).throw(ValueError("boom")), argv=["prog"])


def test_run_cli_lets_programming_errors_through():
    with pytest.raises(ZeroDivisionError):
        errors.run_cli(lambda: 1 / 0, argv=["prog"])


def test_truncated_config_json_names_the_file_and_line(tmp_path):
    from train_fixtures import tiny_config

    write_run_config(str(tmp_path), tiny_config())
    path = tmp_path / "config.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(errors.UserError, match=r"config\.json, line \d+ column \d+: not valid JSON"):
        load_run_config(str(tmp_path))


def test_unknown_key_in_model_config_json_is_named(tmp_path):
    from diffjax.runs import load_model_config

    (tmp_path / "model_config.json").write_text(json.dumps({"image_size": 8, "in_channels": 1, "bogus": 3}))
    with pytest.raises(errors.UserError, match=r"model_config\.json: unknown UNetConfig field\(s\) \['bogus'\]"):
        load_model_config(str(tmp_path))


def test_config_py_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "c.py").write_text("def get_config(arg=None):\n    return {\n")
    with pytest.raises(errors.UserError, match=r"c\.py, line \d+: the config file does not parse"):
        load_config_file(str(tmp_path / "c.py"))


def _cli(script, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop(errors.DEBUG_ENV, None)
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_sample_py_bad_output_and_damaged_config_are_one_error_line(tmp_path):
    """Subprocess: what a user sees (no traceback, exit 1), for --output = --input and a truncated config.json."""
    workdir = _untrained_run(tmp_path, RUNS["sr3"])
    inputs = _inputs(tmp_path / "in")
    result = _cli("sample.py", "--workdir", workdir, "--input", inputs, "--output", inputs)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: --output") and "is the input folder" in lines[-1]
    path = os.path.join(workdir, "config.json")
    text = open(path).read()
    open(path, "w").write(text[:100])
    result = _cli("sample.py", "--workdir", workdir, "--input", inputs, "--output", str(tmp_path / "o"), "--debug")
    assert "Traceback" in result.stderr and "not valid JSON" in result.stderr  # --debug shows it
    result = _cli("sample.py", "--workdir", workdir, "--input", inputs, "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}, line ")


def test_train_py_config_error_is_one_error_line(tmp_path):
    (tmp_path / "c.py").write_text("def get_config(arg=None):\n    return {\n")
    result = _cli("train.py", "--config", str(tmp_path / "c.py"), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'c.py'}, line 2")
    assert not (tmp_path / "w").exists()


# -- (2): fingerprints of first stages -----------------------------------------------------------


# How a first stage (or an EGSDE classifier) changes, and the phrase its refusal uses.
CHANGES = [
    (dict(weights=b"other"), "retrained (same step, other parameters)"),
    (dict(step=8), "trained further or retrained"),
    (dict(image_size=32, weights=b"bigger"), "retrained at another size"),
]


@dataclasses.dataclass
class _AeConfig:
    """Stands in for an AutoencoderConfig in FirstStage.describe."""

    factor: int = 4


def _fake_first_stage(root, *, step=4, weights=b"weights", image_size=16):
    from diffjax.checkpoint import CHECKPOINT_DIR

    workdir = os.path.join(root, "ae")
    ckpt = os.path.join(workdir, CHECKPOINT_DIR, str(step), "state")
    os.makedirs(ckpt, exist_ok=True)
    with open(os.path.join(ckpt, "data"), "wb") as f:
        f.write(weights)
    with open(os.path.join(workdir, "model_config.json"), "w") as f:
        json.dump({"image_size": image_size, "in_channels": 1, "z_channels": 3}, f)
    return workdir


def _retrain(workdir, **kw):
    import shutil

    shutil.rmtree(workdir)
    return _fake_first_stage(os.path.dirname(workdir), **kw)


@pytest.mark.parametrize("change, what", CHANGES)
def test_latent_run_refuses_a_changed_autoencoder_naming_both(tmp_path, change, what):
    from diffjax.pipelines.ldm import FirstStage, LatentPipeline

    ae = _fake_first_stage(str(tmp_path))
    run = str(tmp_path / "ldm")
    os.makedirs(run)
    pipeline = LatentPipeline()
    pipeline.attach(FirstStage(config=_AeConfig(), workdir=ae, step=4, loader=lambda: None))
    pipeline.scale_factor = 0.5
    pipeline.write_run_files(run)  # training time: records the fingerprint
    pipeline.load_run_files(run)  # unchanged: accepted
    _assert_change_refused_naming_both(ae, change, what, lambda: LatentPipeline.load_run_files(pipeline, run))


def _assert_change_refused_naming_both(first, change, what, call) -> str:
    """Change the first stage ``first`` as ``change`` says; ``call()`` must refuse naming both fingerprints."""
    before = fingerprint.describe(fingerprint.fingerprint(first))
    _retrain(first, **change)
    after = fingerprint.describe(fingerprint.fingerprint(first))
    with pytest.raises(errors.UserError) as info:
        call()
    message = str(info.value)
    assert what in message and before in message and after in message and "\n" not in message
    return message


@pytest.mark.parametrize("change, what", CHANGES)
def test_egsde_classifier_changed_since_first_use_is_refused_naming_both(tmp_path, change, what):
    """The first translation records the classifier in the score run; a classifier retrained at that path is
    refused with both fingerprints; another classifier path is a new record, not a refusal."""
    cls = _fake_first_stage(str(tmp_path))
    score = str(tmp_path / "score")
    os.makedirs(score)
    fingerprint.record_classifier(score, fingerprint.check_classifier(score, cls))  # first use
    assert fingerprint.check_classifier(score, cls)["workdir"] == os.path.abspath(cls)  # unchanged: accepted
    message = _assert_change_refused_naming_both(cls, change, what, lambda: fingerprint.check_classifier(score, cls))
    assert os.path.abspath(cls) in message and fingerprint.CLASSIFIER_ROLE in message
    # A first use is recorded once: a refused classifier never overwrites the record.
    with pytest.raises(errors.UserError):
        fingerprint.check_classifier(score, cls)
    other = _fake_first_stage(str(tmp_path / "elsewhere"), weights=b"another classifier")
    fingerprint.record_classifier(score, fingerprint.check_classifier(score, other))
    with open(os.path.join(score, fingerprint.FINGERPRINT_FILE)) as f:
        assert sorted(json.load(f)[fingerprint.CLASSIFIER_ROLE]) == sorted([os.path.abspath(cls), other])


def test_fingerprint_changes_with_any_byte_and_not_otherwise(tmp_path):
    ae = _fake_first_stage(str(tmp_path))
    a = fingerprint.fingerprint(ae)
    assert a == fingerprint.fingerprint(ae)
    _retrain(ae, weights=b"weightz")
    assert fingerprint.fingerprint(ae)["sha256"] != a["sha256"]


@pytest.mark.slow  # building the LSGM networks takes ~90 s on a shared 2-core machine
def test_lsgm_run_refuses_a_config_json_model_edited_since_training(tmp_path):
    """model_config.json is the network the checkpoints hold: an edited config.json is refused, not applied
    (UNet runs build from model_config.json and ignore the edit; both never run another network)."""
    from diffjax.checkpoint import write_model_config
    from diffjax.run_lsgm import build_lsgm_model, load_lsgm

    config = load_config_file(os.path.join(ROOT, "configs", "lsgm_fashion_mnist.py:smoke"))
    model, _, _ = build_lsgm_model(config, (16, 16, 1))
    write_model_config(str(tmp_path), model.model_config_dict())
    write_run_config(str(tmp_path), config)
    edited = load_run_config(str(tmp_path))
    edited.model.base_channels = int(config.model.base_channels) * 2
    with pytest.raises(ValueError, match=r"prior: checkpoint has .*this config has"):
        load_lsgm(str(tmp_path), edited)
