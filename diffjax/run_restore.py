""":meth:`diffjax.Run.restore` (a mixin) and the readers of ``sample.py --input``: arrays and files share
validators and sampling code, so both give the same images."""

from __future__ import annotations

import jax
import numpy as np

from diffjax import builders
from diffjax.builders import load_model_config
from diffjax.run_checks import as_key as _as_key, as_known_masks, as_pixels, check_channels, check_sampler as _check_sampler
from diffjax.run_checks import to_unit

__all__ = ["RestoreMixin", "read_restoration_files", "read_sr_files"]


def read_restoration_files(config, workdir: str, input_dir: str) -> list:
    """Palette / RePaint ``--input``: every image (and ``name_mask.png``) checked, as ``(name, RestorationInput)``."""
    from diffjax.pipelines.restoration import read_inputs

    mc = load_model_config(workdir)
    inputs = read_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels),
                         builders.build_pipeline(config).input_kinds)
    return [(item.name, item) for item in inputs]


def read_sr_files(config, workdir: str, input_dir: str) -> list:
    """SR3 ``--input``: every low-resolution PNG checked, as ``(name, (h, w, C) in [-1, 1])``."""
    from diffjax.pipelines.sr3 import read_low_res_folder

    mc = load_model_config(workdir)
    return read_low_res_folder(input_dir, channels=mc.in_channels, scale=builders.build_pipeline(config).scale,
                               tile=mc.image_size)


class RestoreMixin:
    """:meth:`restore` of :class:`diffjax.Run` and the per-task code behind it (state: the Run's)."""

    def restore(self, images, masks=None, *, key=None, sampler=None, kind: str | None = None) -> np.ndarray:
        """Restore images with the run's task: super-resolution, inpainting, uncropping, colorization, JPEG, ...

        Images of any size at least the network's are taken (larger ones are
        sampled whole, the score evaluated on overlapping blended tiles; SR3
        inputs need ``ceil(image_size / scale)`` pixels a side). Every image is
        checked as ``sample.py --input`` checks files, with the same messages.

        Args:
          images: numpy or JAX array, ``uint8`` or float in ``[0, 1]``, one image
            ``(H, W, C)`` or a batch ``(N, H, W, C)``. SR3: the low-resolution
            images. Inpainting / uncropping / RePaint: the images (values in the
            hole are ignored). Colorization: grayscale images (``C = 1``, or
            ``C = 3`` with equal channels). JPEG: the decoded JPEG images.
          masks: inpainting, uncropping and RePaint only: 1 (or ``True``) = known
            pixel to keep, 0 = pixel to fill; ``(H, W)`` (one mask for all) or
            ``(N, H, W)``, optionally with a trailing axis of 1.
          key: a ``jax.random.key`` or an int seed; ``None`` = ``config.sampling.seed``
            (then the outputs equal ``sample.py``'s for the same images). SR3
            image ``i`` uses ``fold_in(key, i)``; other tasks batch ``b`` of
            kind ``k`` ``fold_in(fold_in(key, k), b)``. The noise put in the
            hole of a Palette inpainting condition comes from
            ``config.sampling.seed`` (or the int ``key``).
          sampler: any :mod:`diffjax.samplers` sampler; ``None`` = the run's
            ``config.sampling``. RePaint walks its own schedule
            (``config.task.repaint``) and takes none.
          kind: for a multi-task Palette run without masks, ``"colorization"``
            or ``"jpeg"``; otherwise implied by the task and ``masks``.

        Returns:
          float32 numpy in ``[0, 1]``, ``(N, H', W', C)`` for a batch or
          ``(H', W', C)`` for one image (SR3: ``H' = scale * H``; colorization:
          ``C = 3``; otherwise the input's size and the model's channels).

        Raises:
          ValueError: a run whose task generates (use :meth:`generate`), a bad
            dtype, range, rank or channel count, an image smaller than the model,
            masks missing, given to a task without holes, non-binary, mis-shaped,
            empty or full, a bad key, sampler or kind.
        """
        if "generate" not in self.capabilities and "restore" not in self.capabilities:
            self._require("restore")
        if self.task not in self.RESTORERS:
            raise ValueError(f"this run's task {self.task!r} generates images: use run.generate(n); "
                             f"run.restore is for the tasks {sorted(self.RESTORERS)}")
        pixels, single = as_pixels(images)
        key_seed = int(key) if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else None
        out = self.RESTORERS[self.task](self, pixels, masks, key=_as_key(key, self.config.sampling.seed),
                                   seed=self.config.sampling.seed if key_seed is None else key_seed,
                                   sampler=_check_sampler(sampler), kind=kind)
        return to_unit(np.stack(out), single)

    def _restore_arrays(self, pixels, masks, *, key, seed, sampler, kind):
        """Palette / RePaint: arrays -> checked :class:`RestorationInput` s -> :meth:`_restore_inputs`."""
        from diffjax.pipelines.restoration import make_input

        kinds = self.pipeline.input_kinds
        if masks is not None:
            if "inpainting" not in kinds:
                raise ValueError(f"masks were given but this run's task {self.task!r} has no holes to fill; "
                                 f"it takes {' or '.join(kinds)} images")
            if kind not in (None, "inpainting"):
                raise ValueError(f"masks go with kind='inpainting', got kind={kind!r}")
            known, kind = as_known_masks(masks, pixels.shape), "inpainting"
        else:
            others = [k for k in kinds if k != "inpainting"]
            if kind is None and len(others) == 1:
                kind = others[0]
            if kind not in others:
                need = ("masks (1 = keep, 0 = fill)" if not others else
                        f"kind= one of {others}" + (" or masks (1 = keep, 0 = fill)" if "inpainting" in kinds else ""))
                raise ValueError(f"this run's task {self.task!r} needs {need}, got kind={kind!r}")
            known = [None] * len(pixels)
        inputs = [make_input(f"{i:06d}.png", kind, pixels[i], known[i], self.image_shape, where=f"images[{i}]")
                  for i in range(len(pixels))]
        return self._restore_inputs(inputs, key=key, seed=seed, sampler=sampler)

    def _restore_inputs(self, inputs, *, key=None, seed=None, sampler=None, progress=None) -> list[np.ndarray]:
        """Restore checked inputs (``sample.py --input``'s path); ``(H, W, C)`` images in ``[-1, 1]``."""
        from diffjax.pipelines.restoration import restore_inputs

        if sampler is not None and self.task == "repaint":
            raise ValueError("RePaint walks its own schedule (config.task.repaint); pass sampler=None")
        c = self.config
        return restore_inputs(self.pipeline, inputs, make_score_fn=self._make_score_fn, params=self.params,
                              sde=self.sde, sampler=sampler or builders.build_sampler(c), image_shape=self.image_shape,
                              key=_as_key(key, c.sampling.seed), batch_size=c.sampling.batch_size,
                              denoise=c.sampling.denoise, seed=c.sampling.seed if seed is None else seed,
                              compiled=self._compiled, progress=progress)

    def _super_resolve_arrays(self, pixels, masks, *, key, seed, sampler, kind):
        """SR3: check the low-resolution arrays as ``sample.py`` checks files, then super-resolve."""
        del seed
        from diffjax.pipelines.sr3 import low_res_size_problem

        if masks is not None or kind is not None:
            raise ValueError("super-resolution takes only the low-resolution images: pass masks=None, kind=None")
        check_channels(pixels, self.image_shape[2])
        problem = low_res_size_problem(pixels.shape[1:3], scale=self.pipeline.scale, tile=self.image_size)
        if problem is not None:
            raise ValueError(f"images: {problem}")
        return self._super_resolve(list(pixels / 127.5 - 1.0), key=key, sampler=sampler)

    def _super_resolve(self, lows, *, key, sampler=None, progress=None) -> list[np.ndarray]:
        """SR3: each ``(h, w, C)`` low-resolution image in ``[-1, 1]`` -> its output (image ``i``: ``fold_in(key, i)``)."""
        from diffjax.pipelines.conditional import ConditionalTask, make_conditional_sr_fn
        from diffjax.pipelines.sr3 import make_sr_fn
        from diffjax.tasks.sr3 import upsample

        c, pipeline = self.config, self.pipeline
        sampler = sampler or builders.build_sampler(c)
        if ("sr", sampler) not in self._compiled:
            common = dict(channels=self.image_shape[2], tile=self.image_size, overlap=pipeline.tile_overlap,
                          prediction=c.model.prediction, time_input=c.loss.time_input, denoise=c.sampling.denoise,
                          clip_x0=pipeline.clip_denoised)
            if isinstance(pipeline, ConditionalTask):  # CDE / CDiffE / CMDE (docs/conditional.md)
                fn = make_conditional_sr_fn(self._graphdef, self._model_state, self.sde, sampler,
                                            method=pipeline.method, sde_y=pipeline.sde_y, **common)
            else:
                aug = getattr(pipeline, "sample_aug_level", 0.0) if pipeline.uses_aug_level else None
                # The low-resolution input itself goes in too, for the consistency projection.
                sr3_fn = make_sr_fn(self._graphdef, self._model_state, self.sde, sampler, aug_level=aug,
                                    projection=getattr(pipeline, "projection", "none"), **common)
                fn = lambda params, cond, key, low: sr3_fn(params, cond, key, low)  # noqa: E731
            self._compiled[("sr", sampler)] = jax.jit(fn)
        sr, out = self._compiled[("sr", sampler)], []
        takes_low = not isinstance(pipeline, ConditionalTask)
        for i, low in enumerate(lows):
            args = (self.params, upsample(low[None], pipeline.scale), jax.random.fold_in(key, i))
            out.append(np.asarray(sr(*args, low[None]) if takes_low else sr(*args))[0])
            if progress is not None:
                progress(i + 1, len(lows))
        return out
