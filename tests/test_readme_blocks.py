"""The code blocks of README.md (and of the guide pages listed below) work as written.

* Default suite (seconds): every block parses; every ``python`` block compiles; every shell
  command that runs ``train.py`` / ``sample.py`` names a config that loads, flags the script
  defines and ``--config.*`` keys the named config (or a run's config schema) has; benchmark
  scripts and notebooks named exist.
* ``-m slow``: every ``python`` block of README.md runs, in order, in one process, in a fresh
  copy of the repository (tracked and untracked-but-not-ignored files, as a clone has them).

A block whose fence is directly preceded by a line ``<!-- skip-test: why -->`` is not run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Pages whose shell blocks are checked (README's python blocks are also run, under -m slow).
CHECKED_PAGES = ("README.md", "docs/configs.md", "docs/install.md")
TRAIN_FLAGS = {"config", "workdir", "coordinator_address", "num_processes", "process_id", "help", "helpfull"}
SAMPLE_FLAGS = {"workdir", "num", "output", "input", "coordinator_address", "num_processes", "process_id",
                "help", "helpfull", "config"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_SKIP = re.compile(r"^<!--\s*skip-test:\s*(.+?)\s*-->\s*$")


@dataclasses.dataclass
class Block:
    """A fenced code block: its language tag, text, first line (1-based) and skip reason."""

    lang: str
    code: str
    line: int
    skip: str | None


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order.

    Args:
      path: the Markdown file.

    Returns:
      Its blocks; ``skip`` holds the reason of a ``<!-- skip-test: why -->`` line right above.

    Raises:
      ValueError: a fence is never closed.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        skip = _SKIP.match(lines[i - 1]) if i > 0 else None
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        if i == len(lines):
            raise ValueError(f"{path.name}:{start + 1}: code block never closed")
        blocks.append(Block(match.group(1), "\n".join(lines[start + 1:i]) + "\n", start + 1,
                            skip.group(1) if skip else None))
        i += 1
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    """Each simple command of a shell block as argv (continuations joined, comments and ``&&`` split)."""
    text = code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|\|", line):
            try:
                argv = shlex.split(part, comments=True)
            except ValueError:
                continue
            if argv:
                commands.append(argv)
    return commands


def _script_args(argv: list[str], script: str) -> list[str] | None:
    """The arguments after ``script`` when argv runs it with a Python interpreter, else None."""
    for i, token in enumerate(argv[:-1]):
        if os.path.basename(token).startswith("python") and argv[i + 1] == script:
            return argv[i + 2:]
    return None


def _flag_names(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


def _config_spec(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
    return None


def command_problems(argv: list[str]) -> list[str]:
    """What is wrong with one shell command of the docs (empty when it is right).

    Args:
      argv: the command, e.g. ``["python", "train.py", "--config", "configs/x.py", ...]``.

    Returns:
      One message per problem: a config file that is missing or does not load with its
      argument, a flag the script does not define, a ``--config.*`` key the config lacks, a
      benchmark script or notebook that does not exist.
    """
    from diffjax import builders
    from diffjax.run_config import get_base_config, load_config_file

    problems = []
    cmd = " ".join(argv)
    train_args = _script_args(argv, "train.py")
    sample_args = _script_args(argv, "sample.py")
    if train_args is not None:
        unknown = {f for f in _flag_names(train_args) if not f.startswith("config.")} - TRAIN_FLAGS
        problems += [f"{cmd}: train.py has no flag --{f}" for f in sorted(unknown)]
        spec = _config_spec(train_args)
        if spec is None and not {"help", "helpfull"} & set(_flag_names(train_args)):
            problems.append(f"{cmd}: no --config")
        elif spec is not None:
            path = ROOT / spec.split(":", 1)[0]
            if not path.is_file():
                problems.append(f"{cmd}: no config file {spec.split(':', 1)[0]}")
            else:
                try:
                    config = load_config_file(str(ROOT / spec))
                    builders.check_override_keys(train_args, config)
                except (ValueError, KeyError, AttributeError) as err:
                    problems.append(f"{cmd}: {err}")
    if sample_args is not None:
        unknown = {f for f in _flag_names(sample_args) if not f.startswith("config.")} - SAMPLE_FLAGS
        problems += [f"{cmd}: sample.py has no flag --{f}" for f in sorted(unknown)]
        try:  # a run's stored config has every key of the schema
            builders.check_override_keys(sample_args, get_base_config())
        except ValueError as err:
            problems.append(f"{cmd}: {err}")
    for token in argv:
        if re.fullmatch(r"(benchmarks|examples)/[\w./-]+\.(py|sh|ipynb)", token) and not (ROOT / token).is_file():
            problems.append(f"{cmd}: no file {token}")
    return problems


def _pages():
    return [ROOT / page for page in CHECKED_PAGES if (ROOT / page).is_file()]


def test_blocks_parse_and_python_blocks_compile():
    readme = code_blocks(ROOT / "README.md")
    assert sum(b.lang == "python" and not b.skip for b in readme) >= 4
    for page in _pages():
        for block in code_blocks(page):
            if block.lang == "python":
                compile(block.code, f"{page.name}:{block.line}", "exec")


def test_shell_blocks_name_configs_flags_and_keys_that_exist():
    checked, problems = 0, []
    for page in _pages():
        for block in code_blocks(page):
            if block.lang not in ("bash", "sh", "shell", "console"):
                continue
            for argv in shell_commands(block.code):
                checked += 1
                problems += [f"{page.name}:{block.line}: {p}" for p in command_problems(argv)]
    assert checked >= 8
    assert not problems, "\n".join(problems)


def test_readme_links_point_to_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:|#", t)]
    assert len(targets) >= 20
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_checker_catches_wrong_commands():
    """A missing config, a bad argument, an unknown flag or key are each reported."""
    bad = [
        "python train.py --config configs/nope.py --workdir w",
        "python train.py --config configs/ddpm_digits.py:huge --workdir w",
        "python train.py --config configs/ddpm_digits.py --workdir w --config.training.num_stepz=3",
        "python train.py --config configs/ddpm_digits.py --work_dir w",
        "python sample.py --workdir w --config.sampling.samplr=ddim",
        "python sample.py --workdir w --inputs x",
        "python benchmarks/nope.py --num 3",
    ]
    for command in bad:
        assert command_problems(shlex.split(command)), command
    good = "python train.py --config configs/ddpm_digits.py:smoke --workdir w --config.training.num_steps=3"
    assert command_problems(shlex.split(good)) == []


def test_skip_marker_applies_to_the_next_fence_only(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- skip-test: needs a download -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n")
    first, second = code_blocks(page)
    assert first.skip == "needs a download" and second.skip is None and second.code == "y = 2\n"


def _fresh_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone has them: tracked plus untracked-but-not-ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_python_blocks_run_in_order_in_a_fresh_copy(tmp_path):
    """Three smoke trainings, sampling and a RePaint restore: 14.5 min on 2 cores shared with other jobs."""
    repo = _fresh_copy(tmp_path / "diffjax")
    blocks = [b for b in code_blocks(repo / "README.md") if b.lang == "python" and not b.skip]
    script = "\n".join(f"# README.md line {b.line}\n{b.code}" for b in blocks)
    (repo / "readme_blocks.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(repo))  # the copy's package, not the checkout's
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "readme_blocks.py"], cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"README blocks failed after {elapsed:.0f} s:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert (repo / "runs" / "repaint_smoke").is_dir() and (repo / "damaged" / "cat_mask.png").is_file()
    print(f"README python blocks: {len(blocks)} blocks in {elapsed:.0f} s")
