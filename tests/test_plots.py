"""diffjax.plots on tiny synthetic inputs: files exist, are valid PNGs and hold a drawn figure."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from diffjax import plots


def _png(path):
    """Open ``path`` as a PNG (verifying it) and return its RGB pixels."""
    assert os.path.isfile(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _drawn(pixels, min_colours=20):
    """A real figure: many colours (lines, text, antialiasing), not a blank canvas."""
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colours


def _write_log(workdir, rows):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def test_read_metrics_last_line_per_step_wins(tmp_path):
    """A resumed run re-logs steps; the later line wins and steps come out sorted."""
    _write_log(tmp_path, [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5, "lr": 1e-3},
                          {"step": 10, "loss": 0.9}, {"step": 5, "loss": 2.0}])
    m = plots.read_metrics(str(tmp_path))
    np.testing.assert_array_equal(m["step"], [5, 10, 20])
    np.testing.assert_allclose(m["loss"], [2.0, 0.9, 0.5])
    assert np.isnan(m["lr"][0]) and m["lr"][2] == 1e-3


def test_training_curves_written(tmp_path):
    steps = np.arange(1, 41)
    _write_log(tmp_path, [{"step": int(s), "loss": float(np.exp(-s / 10) + 0.01), "grad_norm": 1.0 / s,
                           "lr": 1e-4 * min(1, s / 5), "images_per_sec": 100.0 + s} for s in steps])
    with open(tmp_path / "metrics.json", "w") as f:
        json.dump({"step": 40, "fd_alexnet_ema": 0.1, "fd_alexnet_initial": 190.0, "fd_alexnet_data_floor": 0.09}, f)
    paths = plots.plot_training_curves(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["loss.png", "train_metrics.png", "eval.png"]
    assert all(os.path.dirname(p) == str(tmp_path / "plots") for p in paths)
    for p in paths:
        _drawn(_png(p))


def test_training_curves_without_eval_or_other_scalars(tmp_path):
    _write_log(tmp_path, [{"step": 1, "loss": 0.3}, {"step": 2, "loss": -0.1}])  # non-positive: linear axis
    paths = plots.plot_training_curves(str(tmp_path), out_dir=str(tmp_path / "figs"))
    assert paths == [str(tmp_path / "figs" / "loss.png")]
    _drawn(_png(paths[0]))


def test_bad_logs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plots.plot_training_curves(str(tmp_path / "nowhere"))
    _write_log(tmp_path, [{"step": 1, "lr": 0.1}])
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_training_curves(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text("")
    assert plots.plot_training_curves(str(tmp_path)) == []  # nothing logged yet: nothing drawn
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: expected one JSON object"):
        plots.read_metrics(str(tmp_path))


def test_benchmark_figures(tmp_path):
    path = plots.plot_error_vs_nfe({"DDIM": {10: 0.3, 20: 0.2, 50: 0.15}, "Heun": {10: 0.4, 20: 0.15}},
                                   str(tmp_path / "a" / "nfe.png"), floor=0.1, ylabel="sliced W2")
    _drawn(_png(path))
    path = plots.plot_bars({"training": 10.1, "forward": 45.8}, str(tmp_path / "bars.png"), ylabel="images/s")
    _drawn(_png(path))
    rows = [{"task": "box", "method": "Palette", "lpips": 0.03}, {"task": "box", "method": "RePaint", "lpips": 0.02},
            {"task": "jpeg", "method": "Palette", "lpips": 0.05}]
    path = plots.plot_grouped_bars(rows, str(tmp_path / "lpips.png"), group="task", label="method", value="lpips")
    _drawn(_png(path))


def test_bad_figure_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one method"):
        plots.plot_error_vs_nfe({}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="log=True needs positive"):
        plots.plot_bars({"a": 0.0}, str(tmp_path / "x.png"), log=True)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['lpips'\]"):
        plots.plot_grouped_bars([{"task": "a", "method": "b"}], str(tmp_path / "x.png"),
                                group="task", label="method", value="lpips")
    assert not os.path.exists(tmp_path / "x.png")
