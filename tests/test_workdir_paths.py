"""Workdir arguments: local paths as str or ``os.PathLike`` (``etils.epath.Path``) are accepted;
bucket URLs are refused up front rather than becoming a local folder named ``gs:``."""

from __future__ import annotations

import os

import pytest
from etils import epath

from diffjax.run_base import check_workdir_path, check_workdir_writable
from diffjax.runs import load_run, train


@pytest.mark.parametrize("make", [str, epath.Path], ids=["str", "epath"])
def test_local_workdir_as_str_or_epath_is_accepted(tmp_path, make):
    workdir = make(tmp_path / "run")
    assert check_workdir_path(workdir) == str(tmp_path / "run")
    check_workdir_writable(workdir)  # no error: a new folder under a writable one


@pytest.mark.parametrize("url", ["gs://bucket/runs/a", "s3://bucket/a", "file:///tmp/a"])
def test_url_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    for check in (check_workdir_path, check_workdir_writable):
        with pytest.raises(ValueError, match="URL; a workdir must be a file-system path"):
            check(url)
    with pytest.raises(ValueError, match="gcsfuse"):
        train("configs/ddpm_digits.py:smoke", url)
    with pytest.raises(ValueError, match="URL"):
        load_run(url)
    assert os.listdir(tmp_path) == []  # no local "gs:" folder
