"""``python -m diffjax.convert SRC --workdir W``: a published checkpoint as a diffjax workdir.

``SRC`` is a diffusers pipeline folder (``model_index.json`` + ``unet/`` +
``scheduler/``), a bare ``UNet2DModel`` folder (``config.json`` +
``diffusion_pytorch_model.safetensors``), or a guided-diffusion ``.pt`` with
``--flags "<its ADM flag string>"`` (converted first by
:func:`diffjax.interop.guided_diffusion.convert_adm_checkpoint`, which reads the
pickle without running any of it).

The workdir ``W`` is an ordinary diffjax run, as ``train.py`` leaves one:
``config.json`` (``task.name = "repaint"``, ``model.architecture =
"diffusers_unet2d"`` with the UNet's ``config.json``, the scheduler's process
in ``config.sde`` and the pipeline's loop in ``config.sampling``),
``model_config.json`` and an Orbax checkpoint at step 0 holding the weights as
parameters and EMA parameters, plus ``diffjax_convert.json`` recording the
source. :func:`diffjax.load_run`, ``sample.py`` and every task read it through
the same code as a trained run (restore and translate tile larger images); it
does not train. Everything is checked (pipeline, scheduler, UNet options, every
weight's name and shape) before ``W`` is written; ``W`` appears whole or not at
all. ``python -m diffjax.export`` goes the other way (docs/pretrained.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from diffjax import errors

__all__ = ["convert", "write_run", "write_run_files", "check_new_dir", "write_whole", "main", "RECORD_FILE"]

RECORD_FILE = "diffjax_convert.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt")


def check_new_dir(path: str, flag: str = "--workdir") -> str:
    """``path`` made absolute, or a UserError if it is a file or a non-empty directory (named as ``flag``)."""
    if "://" in os.fspath(path):  # written whole by a local rename, which a bucket cannot do
        raise errors.UserError(f"{flag} {os.fspath(path)} is a URL; write a local folder, then copy it to the bucket")
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        raise errors.UserError(f"{flag} {path} is a file; expected a new or empty directory")
    if os.path.isdir(path) and os.listdir(path):
        raise errors.UserError(f"{flag} {path} exists and is not empty; give a new or empty directory")
    return path


def write_run_files(dest: str, config, model_config, model) -> None:
    """Write ``model`` as the step-0 checkpoint of a run in ``dest``, as ``train.py`` would leave it.

    ``config.json``, ``model_config.json`` and an Orbax checkpoint whose parameters
    and EMA parameters are ``model``'s (the optimizer state is fresh).

    Args:
      dest: the directory (created).
      config: the run's ``ConfigDict``.
      model_config: the network's config dataclass (stored as ``model_config.json``).
      model: the ``nnx.Module``.
    """
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from diffjax import builders
    from diffjax.checkpoint import Checkpointer, write_model_config
    from diffjax.run_config import write_run_config
    from diffjax.training import TrainState

    _, params, model_state = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=builders.build_optimizer(config).init(params), ema_params=params,
                       model_state=model_state)
    os.makedirs(dest, exist_ok=True)
    checkpointer = Checkpointer(dest, keep=1, async_save=False)
    try:
        checkpointer.save(0, state)
        checkpointer.wait()
    finally:
        checkpointer.close()
    write_model_config(dest, dataclasses.asdict(model_config))
    write_run_config(dest, config)


def write_run(src: str, dest: str) -> dict:
    """Load the diffusers folder ``src`` (every option and weight checked) and write it to ``dest`` as a run.

    Returns ``{"pipeline": ..., "task": ...}`` (see :func:`write_run_files` for the files).
    """
    from diffjax.interop.diffusers_run import diffusers_run_config, read_diffusers_folder

    pipeline = read_diffusers_folder(src)[3] or "DDPMPipeline"  # a bare UNet folder: DDPM's scheduler defaults
    config, model_config, unet = diffusers_run_config(src)
    write_run_files(dest, config, model_config, unet)
    return {"pipeline": pipeline, "task": config.task.name}


def convert(src: str, workdir: str, *, flags: str | None = None) -> str:
    """Write ``src`` (a diffusers folder or a guided-diffusion ``.pt``) as the workdir ``workdir``.

    Args:
      src: a diffusers pipeline / UNet folder, or a guided-diffusion checkpoint
        (``.pt``, ``.pth``, ``.ckpt``).
      workdir: a new or empty directory; ``dj.load_run(workdir)`` and
        ``sample.py --workdir`` read it afterwards.
      flags: the ADM flag string of a ``.pt`` (required for one, refused otherwise).

    Returns:
      ``workdir``.

    Raises:
      UserError / ValueError: a missing ``src``, a format that is neither, a
        non-empty ``workdir``, missing or stray ``flags``, unsupported options,
        weights that do not fit their config. Nothing is written then.
      diffjax.interop.torch_pickle.UnsafeCheckpointError: a pickle holding
        anything but tensors (a ``ValueError``; nothing is run or written).
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise errors.UserError(f"SRC {src} does not exist; expected a diffusers folder or a guided-diffusion .pt")
    from diffjax.interop.diffusers_run import is_diffusers_folder

    is_pickle = os.path.isfile(src) and src.lower().endswith(_PICKLE_SUFFIXES)
    if not is_pickle and not (os.path.isdir(src) and is_diffusers_folder(src)):
        raise errors.UserError(
            f"SRC {src} is not a known format; expected a diffusers pipeline folder (model_index.json, unet/, "
            "scheduler/), a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors) or a "
            "guided-diffusion checkpoint (.pt / .pth / .ckpt with --flags)")
    if is_pickle and not flags:
        raise errors.UserError(f"{src} is a guided-diffusion checkpoint: pass its model flags as --flags \"...\" "
                               "(e.g. \"--image_size 256 --num_channels 256 --learn_sigma True ...\")")
    if flags and not is_pickle:
        raise errors.UserError(f"--flags is for guided-diffusion .pt checkpoints; {src} is a diffusers folder")
    workdir = check_new_dir(workdir)

    def write(out: str, scratch: str) -> None:
        folder = src
        if is_pickle:
            from diffjax.interop.guided_diffusion import convert_adm_checkpoint

            folder = convert_adm_checkpoint(src, flags, os.path.join(scratch, "adm"))
        written = write_run(folder, out)
        record = {"source": os.path.abspath(src), "format": "guided-diffusion" if is_pickle else "diffusers",
                  **written}
        if is_pickle:
            record["flags"] = flags
        with open(os.path.join(out, RECORD_FILE), "w") as f:
            json.dump(record, f, indent=2)

    return write_whole(workdir, write)


def write_whole(dest: str, write) -> str:
    """Call ``write(out, scratch)`` on a sibling temporary folder, then rename ``out`` to ``dest``.

    ``dest`` (new or empty, see :func:`check_new_dir`) appears whole or not at all: on any
    error nothing is left behind. ``scratch`` is a folder for intermediate files.
    """
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".diffjax-", dir=parent)
    try:
        out = os.path.join(staging, "out")
        write(out, staging)
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty, checked by the caller
        os.replace(out, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> str:
    """The command line: ``python -m diffjax.convert SRC --workdir W [--flags "..."]``."""
    parser = argparse.ArgumentParser(
        prog="python -m diffjax.convert",
        description="Write a diffusers folder or a guided-diffusion .pt as a diffjax workdir "
                    "(read by dj.load_run and sample.py --workdir).")
    parser.add_argument("src", help="diffusers pipeline / UNet folder, or a guided-diffusion .pt")
    parser.add_argument("--workdir", required=True, help="a new or empty directory to write")
    parser.add_argument("--flags", default=None, help="the ADM flag string of a .pt checkpoint")
    args = parser.parse_args(argv)
    workdir = convert(args.src, args.workdir, flags=args.flags)
    print(f"wrote {workdir}; sample with: python sample.py --workdir {workdir}")
    return workdir


if __name__ == "__main__":
    # A lambda so that argv is read after run_cli has removed --debug from it.
    errors.run_cli(lambda: main(sys.argv[1:]))
