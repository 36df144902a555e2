"""Multi-host training: 2 processes x 4 devices (gloo, coordinator on 127.0.0.1) train like 1 x 8.

Every run is a subprocess (the device count and ``jax.distributed`` are fixed
when jax starts); see ``multihost_worker.py``. Checkpoints then move between
layouts: written by 2 x 4, continued and sampled on 1 process; written by
1 x 8, continued on 2 x 4; and ``sample.py`` itself runs as a 2 x 4 job on
checkpoints of either layout, writing (from process 0 only) the images a
single process writes.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from train_fixtures import read_losses
from worker_procs import assert_close_params, finish, finish_job, load_params, metric_rows, start_job


def _continue(src: str, dst: str, processes: int, devices_each: int, steps: int, sample: bool = False) -> list:
    shutil.copytree(src, dst)
    args = ["--workdir", dst, "--steps", str(steps), "--out", dst + ".npz"]
    if sample:
        args += ["--sample-dir", dst + "_samples"]
    return start_job(processes, devices_each, *args)


@pytest.fixture(scope="module")
def two_by_four_and_one_by_eight(tmp_path_factory):
    """3 steps on 2 processes x 4 devices and on 1 process x 8 devices, run side by side."""
    root = tmp_path_factory.mktemp("multihost")
    two, one = str(root / "two_by_four"), str(root / "one_by_eight")
    jobs = [start_job(2, 4, "--workdir", two, "--out", two + ".npz"),
            start_job(1, 8, "--workdir", one, "--out", one + ".npz")]
    summaries = [finish_job(job) for job in jobs]
    return root, two, one, summaries


def test_two_processes_train_like_one(two_by_four_and_one_by_eight):
    _, two, one, (s_two, s_one) = two_by_four_and_one_by_eight
    assert (s_two["processes"], s_two["devices"], s_two["step"]) == (2, 8, 3)
    assert (s_one["processes"], s_one["devices"], s_one["step"]) == (1, 8, 3)
    # Only process 0 writes metrics: one line per step, not two.
    assert [r["step"] for r in metric_rows(two)] == [1, 2, 3]
    assert read_losses(two) == pytest.approx(read_losses(one), rel=2e-5)
    assert_close_params(load_params(two + ".npz"), load_params(one + ".npz"))


def test_a_stop_requested_on_one_process_stops_every_process_after_the_same_step(tmp_path):
    # Process 1 alone asks to stop (as a SIGTERM delivered to one host would): the stop vote makes
    # both leave the loop after the same step and save that step together. Without the vote,
    # process 1 would leave after its first step while process 0 waits in the next step's
    # collectives: a hang, caught here by the timeout.
    workdir = str(tmp_path / "run")
    procs = start_job(2, 4, "--workdir", workdir, "--steps", "6", "--stop-on-process", "1")
    try:
        outs = [json.loads(finish(p, timeout=240)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert outs[0] == outs[1]
    assert outs[0]["processes"] == 2 and 0 < outs[0]["step"] < 6
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(outs[0]["step"])]


def test_checkpoints_move_between_process_layouts(two_by_four_and_one_by_eight):
    root, two, one, _ = two_by_four_and_one_by_eight
    # 2 x 4 -> 1 process x 2 devices (continued and sampled); 1 x 8 -> 2 x 4 (continued).
    a, b = str(root / "two_to_one"), str(root / "one_to_two")
    jobs = [_continue(two, a, 1, 2, steps=5, sample=True), _continue(one, b, 2, 4, steps=5)]
    s_a, s_b = (finish_job(job) for job in jobs)
    assert (s_a["processes"], s_a["devices"], s_a["step"]) == (1, 2, 5)
    assert (s_b["processes"], s_b["devices"], s_b["step"]) == (2, 8, 5)
    assert s_a["sample"]["step"] == 5 and len(os.listdir(a + "_samples")) == 3
    # Each resumed at step 4 (no step trained twice or skipped) and both continued identically.
    assert [r["step"] for r in metric_rows(a)] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in metric_rows(b)] == [1, 2, 3, 4, 5]
    assert read_losses(a) == pytest.approx(read_losses(b), rel=2e-5)
    assert_close_params(load_params(a + ".npz"), load_params(b + ".npz"))


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 8])
def test_two_by_four_checkpoint_continues_on_one_process(two_by_four_and_one_by_eight, devices):
    root, two, one, _ = two_by_four_and_one_by_eight
    moved, reference = str(root / f"two_to_{devices}"), str(root / f"one_to_{devices}_ref")
    jobs = [_continue(two, moved, 1, devices, steps=5, sample=True), _continue(one, reference, 1, 8, steps=5)]
    s_moved, _ = (finish_job(job) for job in jobs)
    assert (s_moved["devices"], s_moved["step"], s_moved["sample"]["step"]) == (devices, 5, 5)
    assert read_losses(moved) == pytest.approx(read_losses(reference), rel=2e-5)
    assert_close_params(load_params(moved + ".npz"), load_params(reference + ".npz"))


def _pixels(folder: str) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


def _assert_same_pngs(a: dict, b: dict, what: str) -> None:
    """Equal 8-bit images, up to one level where float rounding of a different compilation
    (another device count) lands on the other side of a .5 (seen on 1 pixel in 768)."""
    for name in a:
        diff = np.abs(a[name].astype(int) - b[name].astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, f"{what}: {name} differs (max {diff.max()})"


def _sample_jobs(layouts: dict[str, tuple[str, int, int]], root, *args: str) -> dict[str, str]:
    """Run ``sample.py`` for every ``name: (workdir, processes, devices_each)`` side by side.

    Returns ``{name: output folder}``; checks that only process 0 reports writing.
    """
    outputs = {name: str(root / name) for name in layouts}
    jobs = {name: start_job(processes, devices, f"--workdir={workdir}", f"--output={outputs[name]}", *args,
                            script="sample.py")
            for name, (workdir, processes, devices) in layouts.items()}
    for name, procs in jobs.items():
        # gloo's own connection lines aside, only process 0 says what it wrote.
        stdouts = ["".join(line for line in finish(p, timeout=300)[0].splitlines(True) if not line.startswith("[Gloo]"))
                   for p in procs]
        assert "into" in stdouts[0] or "wrote" in stdouts[0], stdouts[0]
        assert all(not out.strip() for out in stdouts[1:]), f"{name}: a process other than 0 printed {stdouts[1:]}"
    return outputs


def test_sample_py_runs_on_two_processes(two_by_four_and_one_by_eight, tmp_path):
    """sample.py as a 2 x 4 job: a 1 x 8 checkpoint gives the 1 x 8 sampler's images, and a 2 x 4 one
    sampled on 1 process x 1 device gives the 2 x 4 job's (the same PNGs up to float rounding)."""
    _, two, one, _ = two_by_four_and_one_by_eight
    out = _sample_jobs({"one_on_2x4": (one, 2, 4), "one_on_1x8": (one, 1, 8),
                        "two_on_2x4": (two, 2, 4), "two_on_1x1": (two, 1, 1)}, tmp_path, "--num=4")
    for a, b in [("one_on_2x4", "one_on_1x8"), ("two_on_2x4", "two_on_1x1")]:
        pa, pb = _pixels(out[a]), _pixels(out[b])
        assert sorted(pa) == ["000000.png", "000001.png", "000002.png", "000003.png", "grid.png"] == sorted(pb)
        _assert_same_pngs(pa, pb, f"{a} vs {b}")


@pytest.mark.slow  # ~90 s; sample.py on two processes stays covered by test_sample_py_runs_on_two_processes
def test_sample_py_super_resolves_on_two_processes(tmp_path):
    """A restoration task (SR3 with tiling): numpy inputs, per-image sampling, written once by process 0."""
    run = str(tmp_path / "sr3")
    for proc in start_job(1, 2, "--config=configs/sr3_photos_x4.py:smoke", f"--workdir={run}", script="train.py"):
        finish(proc, timeout=300)
    low_res = tmp_path / "low_res"
    low_res.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in [("small.png", (4, 4, 3)), ("tiled.png", (6, 8, 3))]:
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(low_res / name)
    out = _sample_jobs({"on_2x4": (run, 2, 4), "on_1x1": (run, 1, 1)}, tmp_path, f"--input={low_res}")
    pa, pb = _pixels(out["on_2x4"]), _pixels(out["on_1x1"])
    assert sorted(pa) == ["small.png", "tiled.png"] == sorted(pb)
    assert pa["tiled.png"].shape == (24, 32, 3)
    _assert_same_pngs(pa, pb, "2 x 4 vs 1 x 1")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_processes_of_one_device_train_like_one_process_of_two(tmp_path):
    # One device per process, the layout of GPU clusters. It crashed at the first log line: reading
    # addressable_shards of a state array there raises "input arrays must have one shard each" in JAX.
    two, one = str(tmp_path / "two_by_one"), str(tmp_path / "one_by_two")
    jobs = [start_job(2, 1, "--workdir", two, "--out", two + ".npz"),
            start_job(1, 2, "--workdir", one, "--out", one + ".npz")]
    s_two, s_one = (finish_job(job) for job in jobs)
    assert (s_two["processes"], s_two["devices"], s_two["step"]) == (2, 2, 3)
    assert read_losses(two) == pytest.approx(read_losses(one), rel=2e-5)
    assert_close_params(load_params(two + ".npz"), load_params(one + ".npz"))
