"""``python -m diffjax.convert SRC --workdir W``: a published checkpoint as a diffjax workdir.

``SRC`` is a diffusers pipeline folder (``model_index.json`` + ``unet/`` +
``scheduler/``), a bare ``UNet2DModel`` folder (``config.json`` +
``diffusion_pytorch_model.safetensors``), or a guided-diffusion ``.pt`` with
``--flags "<its ADM flag string>"`` (converted first by
:func:`diffjax.interop.guided_diffusion.convert_adm_checkpoint`, which reads the
pickle without running any of it).

The workdir ``W`` is written in diffusers' own pipeline layout (float32
safetensors weights, the scheduler's JSON config, ``model_index.json``) plus
``diffjax_convert.json`` recording the source. That layout is what
:func:`diffjax.load_run` and ``sample.py`` read, through the same loader as the
source folder, so the converted run computes exactly what the source does and
no scheduler mapping is stored twice (docs/pretrained.md). Everything is
checked (pipeline, scheduler, UNet options, every weight's name and shape)
before ``W`` is written; ``W`` appears whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from diffjax import errors

__all__ = ["convert", "main", "RECORD_FILE"]

RECORD_FILE = "diffjax_convert.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt")


def _check_workdir(workdir: str) -> str:
    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.isfile(workdir):
        raise errors.UserError(f"--workdir {workdir} is a file; expected a new or empty directory")
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise errors.UserError(f"--workdir {workdir} exists and is not empty; give a new or empty directory")
    return workdir


def _write_pipeline(src: str, dest: str) -> str:
    """Validate the diffusers folder ``src`` by loading it, then write it to ``dest``; returns its pipeline."""
    from diffjax.interop.diffusers_run import load_diffusers_run, read_diffusers_folder, save_diffusers_folder
    from diffjax.interop.diffusers_weights import write_safetensors

    unet_config, state, scheduler, pipeline = read_diffusers_folder(src)
    run = load_diffusers_run(src)  # raises on any unsupported option or weight that does not fit
    pipeline = pipeline or "DDPMPipeline"  # a bare UNet folder: DDPM's scheduler defaults, as load_run reads it
    if pipeline in ("DDPMPipeline", "DDIMPipeline"):
        save_diffusers_folder(run, dest, pipeline=pipeline)
        return pipeline
    # Score-SDE VE: the same files, written as read (save_diffusers_folder exports DDPM / DDIM only).
    for sub in ("unet", "scheduler"):
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    with open(os.path.join(dest, "unet", "config.json"), "w") as f:
        json.dump(unet_config, f, indent=2)
    write_safetensors(state, os.path.join(dest, "unet", "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(dest, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f, indent=2)
    with open(os.path.join(dest, "model_index.json"), "w") as f:
        json.dump({"_class_name": pipeline, "scheduler": ["diffusers", scheduler["_class_name"]],
                   "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)
    return pipeline


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
    workdir = _check_workdir(workdir)
    parent = os.path.dirname(workdir)
    os.makedirs(parent, exist_ok=True)
    # Everything goes into a sibling temporary folder renamed at the end: W appears whole or not at all.
    staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        folder = src
        if is_pickle:
            from diffjax.interop.guided_diffusion import convert_adm_checkpoint

            folder = convert_adm_checkpoint(src, flags, os.path.join(staging, "adm"))
        out = os.path.join(staging, "run")
        pipeline = _write_pipeline(folder, out)
        record = {"source": os.path.abspath(src), "format": "guided-diffusion" if is_pickle else "diffusers",
                  "pipeline": pipeline}
        if is_pickle:
            record["flags"] = flags
        with open(os.path.join(out, RECORD_FILE), "w") as f:
            json.dump(record, f, indent=2)
        if os.path.isdir(workdir):
            os.rmdir(workdir)  # empty, checked above
        os.replace(out, workdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return workdir


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
