"""Latent diffusion runs (docs/ldm.md): the first stage's evaluation, sampling through the decoder, and
:class:`LatentRun`'s task entries for ``autoencoder``, ``ldm``, ``ldm_sr`` and ``ldm_inpainting`` (arrays and
``sample.py --input`` files; each file reader checks every file before the model is restored).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import builders, distributed
from diffjax import workdir_io
from diffjax.builders import first_stage_for, load_model_config  # noqa: F401  (first_stage_for re-exported)
from diffjax.generate import generate_batches
from diffjax.logging_utils import save_grid
from diffjax.run_base import Run
from diffjax.run_checks import as_known_masks, as_pixels, check_channels, to_unit

__all__ = ["LatentRun", "LATENT_TASKS", "first_stage_for", "evaluate_autoencoder", "make_latent_sample_fn",
           "reconstruct", "reconstruct_arrays", "generate_arrays", "super_resolve_arrays", "inpaint_arrays"]

def _reconstruct_fn(graphdef, model_state):
    from diffjax.training import model_from_state

    def fn(params, x):
        out = model_from_state(graphdef, params, model_state)(x, sample_posterior=False)
        return jnp.clip(out["recon"], -1.0, 1.0)

    return jax.jit(fn)


def reconstruct(fn, params, images: np.ndarray, factor: int, batch_size: int = 16) -> np.ndarray:
    """Encode and decode ``(N, H, W, C)`` images in ``[-1, 1]`` (posterior mean), ``batch_size`` per call of
    ``fn = jit((params, x) -> reconstruction)``; float32 ``(N, H, W, C)`` out, in ``[-1, 1]``.

    Sides not divisible by the autoencoder's ``factor`` are reflect-padded up to a multiple and
    the output cropped back, so every image keeps its size.
    """
    n, h, w, _ = images.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    out = [np.asarray(fn(params, padded[i:i + batch_size])) for i in range(0, n, batch_size)]
    return np.concatenate(out)[:, :h, :w]


def evaluate_autoencoder(run, state, workdir: str) -> dict:
    """Reconstruction PSNR and LPIPS of the EMA autoencoder on ``config.autoencoder.eval_num`` held-out crops.

    The crops come from ``config.eval.split`` (photo_corpus: the held-out
    sources). Writes ``eval/reconstructions.png`` (originals above their
    reconstructions) and ``metrics.json``. Images under 31 pixels are
    upsampled for LPIPS (:func:`diffjax.metrics.lpips_loss_fn`). ``run`` is the
    :class:`diffjax.run_training.TrainingSetup`, ``state`` the final training state.

    Returns:
      ``{"recon_psnr", "recon_lpips", "recon_num", "step"}``.
    """
    from diffjax.metrics import lpips_loss_fn, psnr

    c = run.config
    held_out = builders.build_dataset(c, c.eval.split).eval_images(c.autoencoder.eval_num, seed=c.training.seed)
    fn = _reconstruct_fn(run.graphdef, run.model_state)
    recon = reconstruct(fn, state.ema_params, held_out, run.model_config.factor)
    lp = lpips_loss_fn(c.autoencoder.perceptual_net)
    lpips = np.concatenate([np.asarray(lp(jnp.asarray(held_out[i:i + 16]), jnp.asarray(recon[i:i + 16])))
                            for i in range(0, len(recon), 16)])
    out = {"step": int(state.step), "recon_num": len(recon), "recon_split": c.eval.split,
           "recon_psnr": round(float(np.mean(np.asarray(psnr(held_out, recon)))), 3),
           "recon_lpips": round(float(np.mean(lpips)), 4)}
    if distributed.is_lead():
        k = min(16, len(recon))
        save_grid(os.path.join(workdir, "eval", "reconstructions.png"), np.concatenate([held_out[:k], recon[:k]]))
        workdir_io.write_text(os.path.join(workdir, "metrics.json"), json.dumps(out, indent=2))
        print(f"autoencoder reconstruction on {len(recon)} held-out {c.eval.split!r} crops: {json.dumps(out)}")
    return out


def reconstruct_arrays(run, pixels, masks, *, key, seed, sampler, kind) -> list[np.ndarray]:
    """``run.restore`` for an autoencoder run: images of any size reconstructed (masks, kind, sampler refused)."""
    del key, seed
    if masks is not None or kind is not None or sampler is not None:
        raise ValueError("an autoencoder run reconstructs images: pass only the images")
    check_channels(pixels, run.model_config.in_channels)
    return list(_reconstruct(run, np.asarray(pixels, np.float32) / 127.5 - 1.0))


def _reconstruct(run, images, *, key=None, progress=None):
    """Reconstruct a batch (or a list of ``(H, W, C)`` images one at a time, for files), in ``[-1, 1]``."""
    del key
    if "reconstruct" not in run._compiled:
        run._compiled["reconstruct"] = _reconstruct_fn(run._graphdef, run._model_state)
    if isinstance(images, np.ndarray):
        return reconstruct(run._compiled["reconstruct"], run.params, images, run.model_config.factor)
    out = []
    for image in images:
        out.append(reconstruct(run._compiled["reconstruct"], run.params, image[None], run.model_config.factor)[0])
        if progress is not None:
            progress(len(out))
    return out


def _read_pngs(input_dir: str, channels: int, action: str, *, scale: int = 1, tile: int = 1):
    """Every PNG of ``input_dir`` checked as SR3's inputs are (format, mode, bit depth, size)."""
    from diffjax.pipelines.sr3 import read_low_res_folder

    try:
        return read_low_res_folder(input_dir, channels=channels, scale=scale, tile=tile)
    except ValueError as err:
        raise ValueError(str(err).replace("cannot super-resolve", f"cannot {action}")) from None


def _refuse(input_dir: str, action: str, problems) -> None:
    """One error naming every ``(file, problem)`` whose problem is not ``None``, before anything is written."""
    problems = [f"{name}: {problem}" for name, problem in problems if problem is not None]
    if problems:
        raise ValueError(f"cannot {action} {input_dir!r} (nothing was written):\n  " + "\n  ".join(problems))


def _pixel_tile(config, workdir: str):
    """The latent run's pipeline, its autoencoder's config and the pixel size of one network tile."""
    pipeline = builders.build_pipeline(config)
    ae = pipeline.first_stage.config
    return pipeline, ae, load_model_config(workdir).image_size * ae.factor


def read_autoencoder_files(config, workdir: str, input_dir: str) -> list:
    """``sample.py --input`` of an autoencoder run: every PNG, any size, as ``(name, image in [-1, 1])``."""
    return _read_pngs(input_dir, load_model_config(workdir, "autoencoder").in_channels, "reconstruct")


def read_sr_files(config, workdir: str, input_dir: str) -> list:
    """``sample.py --input`` of an ``ldm_sr`` run: SR3's checks plus the autoencoder's factor."""
    pipeline, ae, pixel_tile = _pixel_tile(config, workdir)
    inputs = _read_pngs(input_dir, ae.in_channels, "super-resolve", scale=pipeline.scale, tile=pixel_tile)
    _refuse(input_dir, "super-resolve", [(name, _sr_problem(low.shape[:2], pipeline, pixel_tile))
                                         for name, low in inputs])
    return inputs


def read_inpainting_files(config, workdir: str, input_dir: str) -> list:
    """``sample.py --input`` of an ``ldm_inpainting`` run: ``name.png`` + ``name_mask.png``, as ``(name, (image, known))``."""
    from diffjax.pipelines.restoration import read_inputs

    _, ae, pixel_tile = _pixel_tile(config, workdir)
    inputs = read_inputs(input_dir, (pixel_tile, pixel_tile, ae.in_channels), ("inpainting",))
    _refuse(input_dir, "inpaint", [(item.name, _inpaint_size_problem(item.image.shape[:2], ae.factor, pixel_tile))
                                   for item in inputs])
    return [(item.name, (item.image, item.mask)) for item in inputs]


def make_latent_sample_fn(run, sampler, *, tile_overlap: int = 4):
    """``fn(params, ae_params, scale, key, cond, labels) -> images`` for a latent run (pure; jit it).

    One program: the prior draw on the latent grid, the sampler (the score
    evaluated on blended ``tile x tile`` latent tiles when ``cond`` is larger
    than the network), ``z / scale`` and the decoder.

    ``tile_overlap`` latent pixels are shared by neighbouring tiles. In the function, ``cond`` is the latent-grid
    condition ``(B, h, w, Cc)`` or ``None`` (then the grid is the network's and ``labels``, ``(B,)`` class ids,
    give the batch size); the images are clipped to ``[-1, 1]``.
    """
    from diffjax.tasks.latent import latent_sample
    from diffjax.tasks.sr3 import conditional_score_fn
    from diffjax.tiling import tiled_score_fn
    from diffjax.training import model_from_state

    c, sde, first_stage = run.config, run.sde, run.pipeline.first_stage
    graphdef, model_state = run._graphdef, run._model_state
    tile, z_channels = run.model_config.image_size, run.model_config.in_channels

    def fn(params, ae_params, scale, key, cond=None, labels=None, batch: int = 1):
        model = model_from_state(graphdef, params, model_state)

        def apply_fn(x, t_in, cond_tile):
            kwargs = {} if cond_tile is None else {"cond": cond_tile}
            if labels is not None:
                kwargs["labels"] = labels
            return model(x, t_in, **kwargs)

        cond_score = conditional_score_fn(apply_fn, sde, prediction=c.model.prediction, time_input=c.loss.time_input)
        if cond is None:
            score_fn = lambda x, t: cond_score(x, t, None)  # noqa: E731
            shape = (labels.shape[0] if labels is not None else batch, tile, tile, z_channels)
        else:
            score_fn = tiled_score_fn(cond_score, cond, tile, tile_overlap)
            shape = (*cond.shape[:3], z_channels)
        return latent_sample(score_fn, sde, first_stage.decoder(ae_params), shape, key=key, sampler=sampler,
                             scale_factor=scale, denoise=c.sampling.denoise)

    return fn


def _compiled(run, name: str, sampler, **static):
    key = (name, sampler, tuple(sorted(static.items())))
    if key not in run._compiled:
        fn = make_latent_sample_fn(run, sampler, tile_overlap=getattr(run.pipeline, "tile_overlap", 4))
        run._compiled[key] = jax.jit(lambda p, a, s, k, cond, labels: fn(p, a, s, k, cond, labels, **static))
    return run._compiled[key]


def _ready(run):
    """The run's scale factor (read from ``latent.json`` once) and the autoencoder's parameters."""
    if run.pipeline.scale_factor is None:
        run.pipeline.load_run_files(run.workdir)
    return np.float32(run.pipeline.scale_factor), run.pipeline.first_stage.load()[1]


def generate_arrays(run, n: int, key, sampler=None, labels=None, progress=None) -> np.ndarray:
    """``run.generate`` for a latent run: ``(n, H, W, C)`` images in ``[-1, 1]``, batch ``b`` from ``fold_in(key, b)``;
    ``labels`` (checked by :meth:`diffjax.Run.generate`) default to class ``i % num_classes`` for image ``i``."""
    scale, ae_params = _ready(run)
    classes = run.model_config.num_classes
    if labels is None and classes:
        labels = np.arange(n) % classes
    batch = min(run.config.sampling.batch_size, n)
    fn = _compiled(run, "ldm", sampler or builders.build_sampler(run.config), batch=batch)
    return generate_batches(lambda params, k, labels=None: fn(params, ae_params, scale, k, None, labels), run.params,
                            key, n, batch, progress=progress, labels=labels)


def _sr_problem(hw, pipeline, pixel_tile: int) -> str | None:
    from diffjax.pipelines.sr3 import low_res_size_problem

    problem = low_res_size_problem(hw, scale=pipeline.scale, tile=pixel_tile)
    f = pipeline.first_stage.config.factor
    if problem is None and ((hw[0] * pipeline.scale) % f or (hw[1] * pipeline.scale) % f):
        problem = (f"{hw[0]}x{hw[1]} gives an output of {hw[0] * pipeline.scale}x{hw[1] * pipeline.scale}, not a "
                   f"multiple of the autoencoder's f={f}; crop the input to a multiple of {max(1, f // pipeline.scale)}")
    return problem


def _each(run, task: str, conds, key, sampler, progress) -> list[np.ndarray]:
    """Image ``i`` of a latent restoration task from its latent-grid condition, with ``fold_in(key, i)``."""
    scale, ae_params = _ready(run)  # before the conditions: they encode with the loaded first stage
    fn = _compiled(run, task, sampler or builders.build_sampler(run.config))
    out = []
    for i, cond in enumerate(conds):
        out.append(np.asarray(fn(run.params, ae_params, scale, jax.random.fold_in(key, i), cond, None))[0])
        if progress is not None:
            progress(i + 1)
    return out


def _checked_pixels(run, pixels, size_problem) -> np.ndarray:
    """``run.restore``'s arrays for a latent task, checked as ``sample.py`` checks files, in ``[-1, 1]``."""
    ae = run.pipeline.first_stage.config
    check_channels(pixels, ae.in_channels)
    problem = size_problem(pixels.shape[1:3], run.model_config.image_size * ae.factor)
    if problem is not None:
        raise ValueError(f"images: {problem}")
    return np.asarray(pixels, np.float32) / 127.5 - 1.0


def _super_resolve(run, lows, key, sampler=None, progress=None) -> list[np.ndarray]:
    p, f = run.pipeline, run.pipeline.first_stage.config.factor
    conds = (p.latent_condition(low[None], (low.shape[0] * p.scale // f, low.shape[1] * p.scale // f)) for low in lows)
    return _each(run, "ldm_sr", conds, key, sampler, progress)


def super_resolve_arrays(run, pixels, masks, *, key, seed, sampler, kind) -> list[np.ndarray]:
    """``run.restore`` for an ``ldm_sr`` run: low-resolution arrays checked as ``sample.py`` checks files (no masks
    or kind; an output side a multiple of ``f``); image ``i`` uses ``fold_in(key, i)``."""
    del seed
    if masks is not None or kind is not None:
        raise ValueError("super-resolution takes only the low-resolution images: pass masks=None, kind=None")
    lows = _checked_pixels(run, pixels, lambda hw, tile: _sr_problem(hw, run.pipeline, tile))
    return _super_resolve(run, list(lows), key, sampler)


def _inpaint(run, items, key, sampler=None, progress=None) -> list[np.ndarray]:
    """``[(image (H, W, C) in [-1, 1], known (H, W))]`` -> inpainted images; known pixels kept exactly."""
    conds = (run.pipeline.latent_condition(image[None], known[None]) for image, known in items)
    decoded = _each(run, "ldm_inpainting", conds, key, sampler, progress)
    return [known[..., None] * image + (1.0 - known[..., None]) * x for (image, known), x in zip(items, decoded)]


def _inpaint_size_problem(hw, f: int, pixel_tile: int) -> str | None:
    if hw[0] % f or hw[1] % f:
        return f"{hw[0]}x{hw[1]} is not a multiple of the autoencoder's f={f}"
    if min(hw) < pixel_tile:
        return f"{hw[0]}x{hw[1]} is smaller than the model's {pixel_tile}x{pixel_tile}"
    return None


def inpaint_arrays(run, pixels, masks, *, key, seed, sampler, kind) -> list[np.ndarray]:
    """``run.restore`` for an ``ldm_inpainting`` run: images, masks (1 = keep); image ``i`` uses ``fold_in(key, i)``."""
    del seed
    if masks is None or kind not in (None, "inpainting"):
        raise ValueError("latent inpainting needs masks (1 = keep, 0 = fill) and kind=None or 'inpainting'")
    f = run.pipeline.first_stage.config.factor
    images = _checked_pixels(run, pixels, lambda hw, tile: _inpaint_size_problem(hw, f, tile))
    known = as_known_masks(masks, pixels.shape)
    return _inpaint(run, list(zip(images, known)), key, sampler)


#: The tasks whose runs are :class:`LatentRun` (the first stage, and diffusion in its latent space).
LATENT_TASKS = ("autoencoder", "ldm", "ldm_sr", "ldm_inpainting")


class LatentRun(Run):
    """A latent-diffusion run (or its autoencoder run): :class:`diffjax.Run` plus :meth:`encode` / :meth:`decode`."""

    GENERATORS = {**Run.GENERATORS, "ldm": generate_arrays}
    RESTORERS = {**Run.RESTORERS, "autoencoder": reconstruct_arrays, "ldm_sr": super_resolve_arrays,
                 "ldm_inpainting": inpaint_arrays}
    FILE_RESTORERS = {**Run.FILE_RESTORERS, "autoencoder": (read_autoencoder_files, _reconstruct),
                      "ldm_sr": (read_sr_files, _super_resolve), "ldm_inpainting": (read_inpainting_files, _inpaint)}

    @property
    def capabilities(self) -> tuple[str, ...]:
        # Translation works on pixel-space score runs only.
        return tuple(c for c in super().capabilities if c != "translate") + ("encode", "decode")

    def _coder(self, name: str):
        """The jitted autoencoder half ``name`` (``encode``: posterior mean; ``decode``) and its parameters."""
        from diffjax.training import model_from_state

        if self.task == "autoencoder":  # the run is the autoencoder itself
            graphdef, params, state = self._graphdef, self.params, self._model_state
        else:
            graphdef, params, state = self.pipeline.first_stage.load()
        if ("coder", name) not in self._compiled:
            model = lambda p: model_from_state(graphdef, p, state)  # noqa: E731
            self._compiled[("coder", name)] = jax.jit(
                (lambda p, x: model(p).encode(x)[0]) if name == "encode"
                else (lambda p, z: jnp.clip(model(p).decode(z), -1.0, 1.0)))
        return self._compiled[("coder", name)], params

    def _autoencoder_config(self):
        return self.model_config if self.task == "autoencoder" else self.pipeline.first_stage.config

    def encode(self, images) -> np.ndarray:
        """Images -> the autoencoder's latents (the posterior mean, not scaled by the run's ``scale_factor``).

        Args:
          images: ``uint8`` or floats in ``[0, 1]``, ``(H, W, C)`` or ``(N, H, W, C)``,
            the autoencoder's channels, sides divisible by its factor ``f``.

        Returns:
          float32 ``(N, H / f, W / f, z_channels)`` (no batch axis for one image).

        Raises:
          ValueError: images of another dtype, range, channel count or size.
        """
        pixels, single = as_pixels(images)
        ae = self._autoencoder_config()
        f = ae.factor
        if pixels.shape[-1] != ae.in_channels or pixels.shape[1] % f or pixels.shape[2] % f:
            raise ValueError(f"images must have {ae.in_channels} channels and sides divisible by {f}, "
                             f"got shape {pixels.shape[1:]}")
        fn, params = self._coder("encode")
        z = np.asarray(fn(params, jnp.asarray(pixels / 127.5 - 1.0)))
        return z[0] if single else z

    def decode(self, latents) -> np.ndarray:
        """Latents (as :meth:`encode` returns them) -> images, float32 in ``[0, 1]``.

        Raises:
          ValueError: latents that are not finite floats of shape ``([N,] h, w, z_channels)``.
        """
        z = np.asarray(latents)
        ae = self._autoencoder_config()
        if (z.ndim not in (3, 4) or z.shape[-1] != ae.z_channels or not np.issubdtype(z.dtype, np.floating)
                or not np.isfinite(z).all()):
            raise ValueError(f"latents must be finite floats of shape ([N,] h, w, {ae.z_channels}), "
                             f"got {z.dtype} of shape {z.shape}")
        single = z.ndim == 3
        fn, params = self._coder("decode")
        return to_unit(np.asarray(fn(params, jnp.asarray(z[None] if single else z, jnp.float32))), single)
