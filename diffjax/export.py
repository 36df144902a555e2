"""``python -m diffjax.export WORKDIR --output FOLDER``: a diffjax run as a diffusers pipeline folder.

The way back from :mod:`diffjax.convert`. A run whose network is diffjax's own
:class:`~diffjax.nn.UNet`, trained on the discrete DDPM chain
(``sde.name="discrete"``, ``loss.time_input="index"``), is written as a
``UNet2DModel`` (``unet/config.json`` + float32 safetensors of the EMA
parameters) with a ``DDPMScheduler`` config and ``model_index.json``
(``DDIMPipeline`` when the run samples with DDIM, else ``DDPMPipeline``), which
``diffusers``' ``from_pretrained`` loads and which computes the same eps. An
option ``UNet2DModel`` cannot express (a Fourier time embedding, the ``1/sqrt(2)``
residual rescale, per-layer group counts, class labels, cross-attention, a
continuous-time process, ...) is refused with its name
(:func:`diffjax.interop.unet_export.export_problem`). A converted run
(``model.architecture="diffusers_unet2d"``) is written back as it was read.
"""

from __future__ import annotations

import argparse
import json
import sys

from diffjax import errors

__all__ = ["export_run", "main"]


def _diffusers_parts(run) -> tuple[dict, dict, dict, str]:
    """``(unet_config, state, scheduler_config, pipeline)`` of a restored run, or a ValueError saying why not."""
    from diffjax.interop import unet_export
    from diffjax.interop.diffusers_weights import unet_state_dict
    from diffjax.samplers import DISCRETE_SPACINGS
    from diffjax.sde import VESDE
    from diffjax.training import model_from_state

    c = run.config
    model = model_from_state(run._graphdef, run.params, run._model_state)
    pipeline = "DDIMPipeline" if c.sampling.sampler == "ddim" else "DDPMPipeline"
    if c.model.get("architecture", "unet") == "diffusers_unet2d":
        unet_config, state = json.loads(c.model.diffusers_config), unet_state_dict(model)
        if isinstance(run.sde, VESDE):
            scheduler = {"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": int(c.sampling.steps),
                         "sigma_min": run.sde.sigma_min, "sigma_max": run.sde.sigma_max,
                         "sampling_eps": run.sde.eps, "snr": float(c.sampling.snr), "correct_steps": 1}
            return unet_config, state, scheduler, "ScoreSdeVePipeline"
    else:
        problem = unet_export.export_problem(run.model_config, run.sde, prediction=c.model.prediction,
                                             time_input=c.loss.time_input)
        if problem:
            raise ValueError(f"{run.workdir} has no diffusers UNet2DModel equivalent: {problem}")
        unet_config, state = unet_export.unet2d_config(run.model_config), unet_export.unet2d_state_dict(model)
    spacing = c.sampling.spacing if c.sampling.spacing in DISCRETE_SPACINGS else "leading"
    scheduler = unet_export.scheduler_config(run.sde, prediction=c.model.prediction, clip_x0=float(c.sampling.clip_x0),
                                             steps_offset=int(c.sampling.steps_offset), spacing=spacing)
    return unet_config, state, scheduler, pipeline


def export_run(workdir: str, output: str) -> str:
    """Write the run in ``workdir`` (its EMA parameters) as the diffusers pipeline folder ``output``.

    Args:
      workdir: a ``train.py`` run (an unconditional DDPM-family UNet) or a converted run.
      output: a new or empty directory; it appears whole or not at all.

    Returns:
      ``output``.

    Raises:
      ValueError: a run of another kind (latent, segmentation, ...), an option with no
        ``UNet2DModel`` / scheduler equivalent (named), a non-empty ``output``.
    """
    from diffjax.convert import check_new_dir, write_whole
    from diffjax.interop.diffusers_run import write_diffusers_folder
    from diffjax.run_base import Run
    from diffjax.runs import load_run

    output = check_new_dir(output, "--output")
    run = load_run(workdir)
    if type(run) is not Run or run.task not in ("generate", "repaint"):
        raise ValueError(f"{workdir} is a {run.task!r} run ({type(run).__name__}); diffusers folders export "
                         "unconditional diffusion runs (task 'generate' or 'repaint')")
    parts = _diffusers_parts(run)
    return write_whole(output, lambda out, _: write_diffusers_folder(out, *parts))


def main(argv: list[str] | None = None) -> str:
    """The command line: ``python -m diffjax.export WORKDIR --output FOLDER``."""
    parser = argparse.ArgumentParser(
        prog="python -m diffjax.export",
        description="Write a diffjax run (DDPM-family UNet) as a diffusers pipeline folder "
                    "(UNet2DModel + DDPMScheduler; loads with diffusers' from_pretrained).")
    parser.add_argument("workdir", help="the --workdir of a train.py run, or a python -m diffjax.convert workdir")
    parser.add_argument("--output", required=True, help="a new or empty directory to write")
    args = parser.parse_args(argv)
    output = export_run(args.workdir, args.output)
    print(f"wrote {output}; load with: diffusers.DiffusionPipeline.from_pretrained({output!r})")
    return output


if __name__ == "__main__":
    errors.run_cli(lambda: main(sys.argv[1:]))
