"""``--help`` of ``train.py`` and ``sample.py``: the bundled configs, the main keys, the tasks.

absl's own help lists flags only, and ``sample.py`` builds its flags from a run's stored config,
so without ``--workdir`` it could not print any. Both scripts call :func:`exit_if_help` first.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
# The keys most runs change, shown first (each only if the schema has it).
MAIN_KEYS = {
    "data.name": "dataset: digits, fashion_mnist, photos, photo_corpus, scenes, folder, tfds:<name>",
    "data.data_dir": "folder of your own images (with data.name=folder)",
    "data.image_size": "side of the training images (0 = keep the files' size)",
    "training.num_steps": "training steps",
    "training.batch_size": "global batch, a multiple of the device count",
    "training.grad_accum": "gradient accumulation steps",
    "optim.lr": "peak learning rate (warm-up, then cosine decay)",
    "model.base_channels": "width of the UNet",
    "model.dtype": "float32 or bfloat16 compute",
    "model.remat": "rematerialise blocks to save memory",
    "sharding.fsdp": "shard parameters, EMA and optimiser state over the devices",
    "sampling.sampler": "sampler for grids, evaluation and sample.py",
    "sampling.steps": "sampler steps",
    "translation.method": "sdedit or egsde (translation runs)",
    "translation.t0": "noise level SDEdit / EGSDE start from",
}
_SKIP_CONFIGS = {"__init__", "default", "palette_common"}


def bundled_configs(configs_dir: str | Path) -> list[tuple[str, str]]:
    """(name, first docstring line) of each trainable config file, read without importing it.

    Args:
      configs_dir: the ``configs/`` folder.

    Returns:
      Sorted pairs; helpers (``default.py``, ``palette_common.py``) are left out.
    """
    found = []
    for path in sorted(Path(configs_dir).glob("*.py")):
        if path.stem in _SKIP_CONFIGS:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found.append((path.stem, doc.strip().splitlines()[0] if doc.strip() else ""))
    return found


def _schema_lines() -> list[str]:
    from diffjax.run_config import get_base_config

    base = get_base_config()
    lines = ["main keys (--config.KEY=VALUE; a mistyped key is refused, naming the closest one):"]
    for key, what in MAIN_KEYS.items():
        section, name = key.split(".", 1)
        if section in base and name in base[section]:
            lines.append(f"  {key:<22} {what}")
    lines.append("every key, by section:")
    for section in base.keys():
        value = base[section]
        names = " ".join(value.keys()) if hasattr(value, "keys") else "(a value)"
        lines += textwrap.wrap(f"{section}: {names}", 100, initial_indent="  ", subsequent_indent="      ")
    return lines


def train_help(configs_dir: str | Path) -> str:
    """The text of ``python train.py --help``.

    Args:
      configs_dir: the ``configs/`` folder whose files are listed.

    Returns:
      Usage, flags, the bundled configs with one line each and the config keys.
    """
    lines = [
        "Train a diffusion model from a config, then evaluate it.",
        "",
        "usage: python train.py --config configs/NAME.py[:ARG] --workdir DIR [--config.SECTION.KEY=VALUE ...]",
        "",
        "flags:",
        "  --config FILE[:ARG]     a config file; ':smoke' runs a few steps of a tiny network",
        "  --workdir DIR           checkpoints, logs, samples; a workdir holding a checkpoint resumes",
        "  --coordinator_address, --num_processes, --process_id",
        "                          multi-host jobs (automatic on TPU VMs; docs/multihost.md)",
        "",
        "bundled configs (configs/NAME.py; their arguments: docs/configs.md):",
    ]
    configs = bundled_configs(configs_dir)
    width = max((len(name) for name, _ in configs), default=0)
    lines += [f"  {name:<{width}}  {first}" for name, first in configs]
    lines += [""] + _schema_lines()
    lines += ["", "example: python train.py --config configs/ddpm_digits.py --workdir runs/digits"]
    return "\n".join(lines)


def sample_help() -> str:
    """The text of ``python sample.py --help`` (needs no ``--workdir``).

    Returns:
      Usage, flags, the tasks a run can have and the samplers ``--config.sampling.sampler`` takes.
    """
    from diffjax import builders, runs

    generate = sorted(getattr(runs, "TASKS", {}))
    restore = sorted(getattr(runs, "RESTORE_TASKS", {}))
    lines = [
        "Sample from a trained run, or restore a folder of images with it.",
        "",
        "usage: python sample.py --workdir DIR [--num N] [--output DIR] [--input DIR] [--config.sampling.KEY=VALUE ...]",
        "",
        "flags:",
        "  --workdir DIR           a train.py run (its config.json and latest checkpoint are read)",
        "  --num N                 images to generate (default config.sampling.num_samples)",
        "  --output DIR            where images go (default WORKDIR/generated)",
        "  --input DIR             images to restore (restoration tasks); masks as NAME_mask.png, white = fill",
        "  --config.SECTION.KEY=V  override a key of the run's stored config, e.g. --config.sampling.steps=20",
        "  --coordinator_address, --num_processes, --process_id",
        "                          multi-host jobs, as for train.py",
        "",
        "what it does is chosen by the task the run trained for (config.task.name):",
    ]
    lines += textwrap.wrap("generate from noise: " + ", ".join(generate), 100, initial_indent="  ",
                           subsequent_indent="      ")
    lines += textwrap.wrap("restore every image of --input: " + ", ".join(restore), 100, initial_indent="  ",
                           subsequent_indent="      ")
    lines += textwrap.wrap("samplers (--config.sampling.sampler=NAME): " + ", ".join(builders.SAMPLERS), 100,
                           initial_indent="  ", subsequent_indent="      ")
    lines += ["  translation runs: --config.translation.method=sdedit|egsde --config.translation.t0=T",
              "", "example: python sample.py --workdir runs/digits --num 64"]
    return "\n".join(lines)


def exit_if_help(argv: list[str], script: str, configs_dir: str | Path | None = None) -> None:
    """Print the script's help and exit 0 when argv asks for it; otherwise return.

    Args:
      argv: the command line (``sys.argv``).
      script: ``"train"`` or ``"sample"``.
      configs_dir: the ``configs/`` folder (``train`` only; default: beside the script).
    """
    if not any(arg in HELP_FLAGS for arg in argv[1:]):
        return
    if script == "train":
        folder = configs_dir if configs_dir is not None else Path(argv[0]).resolve().parent / "configs"
        print(train_help(folder))
    elif script == "sample":
        print(sample_help())
    else:
        raise ValueError(f"script must be 'train' or 'sample', got {script!r}")
    raise SystemExit(0)
