"""``sample.py``'s writers, one per capability: a :class:`diffjax.Run` method's images written as PNG files.

Every input is checked before the model is restored; only process 0 writes, each file atomically
(:func:`diffjax.outputs.save_image`).
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from diffjax import distributed, workdir_io
from diffjax.builders import load_model_config
from diffjax.logging_utils import save_class_samples, save_samples
from diffjax.outputs import is_own_output, save_image, write_named
from diffjax.run_base import Run, check_num, lead_print
from diffjax.run_kinds import kind_of
from diffjax.run_translate import check_translation
from diffjax.segmenter import label_palette, segmentation_image_shape

__all__ = ["write_generated", "write_cascade", "write_restored", "write_translated", "write_segmented", "write_named"]


def _bar(total, desc: str, unit: str = "batch"):
    return tqdm(total=total, desc=desc, unit=unit, disable=not distributed.is_lead())


def write_generated(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """``num`` images from noise (``num`` per class, ``NNNNNN_classK.png``, for a class-conditional run) and ``grid.png``.

    For the ``generate``, ``repaint``, ``ldm`` and ``lsgm`` tasks; returns ``{"output", "num": images written,
    "step": checkpoint step}``; ValueError for ``num < 1`` or a workdir without a checkpoint.
    """
    check_num(num)
    run = kind_of(config).load(config, workdir)
    classes = getattr(getattr(run, "model_config", None), "num_classes", 0)  # an LSGM run has no one network
    labels = np.repeat(np.arange(classes), num) if classes else None
    total = num * classes if classes else num
    with _bar(-(-total // min(config.sampling.batch_size, total)), "sample batches") as bar:
        images = run.GENERATORS[run.task](run, total, jax.random.key(config.sampling.seed), None,
                                          progress=lambda *_: bar.update(1), **({"labels": labels} if classes else {}))
    if distributed.is_lead():
        save_class_samples(output, images, labels) if classes else save_samples(output, images)
    per_class = f", {num} per class for {classes} classes" if classes else ""
    lead_print(f"wrote {total} {run.task} samples (checkpoint step {run.step}, sampler {config.sampling.sampler}"
               f"{per_class}) to {output}")
    return {"output": output, "num": total, "step": run.step}


def write_cascade(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Class labels -> base stage -> SR stages; each stage's images into ``output/stageI_SIZEpx`` (docs/sr.md).

    Returns ``{"output", "num", "stages": number of stages}``; ValueError for ``num < 1``, a missing or looping
    ``previous_workdir`` chain, or a stage without a checkpoint.
    """
    check_num(num)
    run = Run(config, workdir)
    with _bar(None, f"cascade stages ({num} images)", "stage") as bar:
        stages, labels = run._cascade(num, jax.random.key(config.sampling.seed), progress=lambda *_: bar.update(1))
    if distributed.is_lead():
        for i, images in enumerate(stages):
            save_class_samples(os.path.join(output, f"stage{i}_{images.shape[1]}px"), images, labels)
    lead_print(f"cascade of {len(stages)} stages wrote {num} images per stage into {output}")
    return {"output": output, "num": num, "stages": len(stages)}


def write_restored(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Restore every image of ``input_dir`` with the run's task into ``output``, same names (docs/sr.md, docs/palette.md).

    Every input is checked before the model is restored (ValueError naming every offending file); images larger
    than the model are restored whole (blended tiles). Returns ``{"output", "num", "step": checkpoint step}``.
    """
    kind, task = kind_of(config), config.task.name
    read, restore = kind.load.FILE_RESTORERS[task]
    inputs = read(config, workdir, input_dir)
    run = kind.load(config, workdir)
    with _bar(len(inputs), f"restore ({task})", "image") as bar:
        images = restore(run, [item for _, item in inputs], key=jax.random.key(config.sampling.seed),
                         progress=lambda *_: bar.update(1))
    write_named(output, inputs, images)
    lead_print(f"{task}: restored {len(images)} images (checkpoint step {run.step}) into {output}")
    return {"output": output, "num": len(images), "step": run.step}


def write_translated(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Translate every PNG of ``input_dir`` with ``config.translation.method`` (SDEdit / EGSDE).

    Every check (method, score run, classifier run, input files of the model's size) runs before the model is
    restored and before anything is written (docs/translation.md). Returns ``{"output", "num", "step", "method"}``.
    """
    from diffjax.pipelines.translation import read_translation_inputs

    method = config.translation.method
    check_translation(config, workdir, method)
    mc = load_model_config(workdir)
    inputs = read_translation_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels))
    run = Run(config, workdir)
    classifier = run._translation_classifier(method)
    images = np.stack([image for _, image in inputs])
    with _bar(-(-len(images) // min(config.sampling.batch_size, len(images))), f"{method} batches") as bar:
        out = run._translate(images, method, classifier, key=jax.random.key(config.sampling.seed),
                             progress=lambda *_: bar.update(1))
    write_named(output, inputs, out)
    lead_print(f"{method}: translated {len(images)} images (t0 {config.translation.t0}, checkpoint step {run.step}) "
               f"into {output}")
    return {"output": output, "num": len(images), "step": run.step, "method": method}


def write_segmented(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """A label map per PNG ``name.png`` of ``input_dir``, for segmentation runs (docs/segmentation.md).

    Writes ``name_label.png`` (8-bit palette PNG whose indices are the class ids, readable as a labelled
    folder's map) and ``name_uncertainty.png`` (grey: the entropy scaled so that 255 is ``log K``). Returns
    ``{"output", "num", "task"}``; ValueError for a pretraining run, a missing folder, no PNG, or images of another
    size (naming every such file).
    """
    from PIL import Image

    from diffjax.logging_utils import save_png
    from diffjax.pipelines.translation import read_translation_inputs

    # A folder holding an earlier run's name_label.png / name_uncertainty.png: segment only the images.
    inputs = read_translation_inputs(input_dir, segmentation_image_shape(config, workdir), exclude=is_own_output)
    segmenter, batch = kind_of(config).load(config, workdir), int(config.segmentation.feature_batch_size)
    images = np.stack([image for _, image in inputs])
    with _bar(len(images), f"segment ({config.task.name})", "image") as bar:
        parts = []
        for start in range(0, len(images), batch):
            parts.append(segmenter.predict(images[start:start + batch]))
            bar.update(len(parts[-1][0]))
    labels, entropy = (np.concatenate(p) for p in zip(*parts))
    if distributed.is_lead():
        workdir_io.makedirs(output)
        palette, scale = label_palette(), 255.0 / np.log(segmenter.num_classes)
        for (name, _), lab, ent in zip(inputs, labels, entropy):
            stem = os.path.splitext(name)[0]
            img = Image.fromarray(lab.astype(np.uint8), mode="P")
            img.putpalette(palette)
            save_image(os.path.join(output, f"{stem}_label.png"), img)
            save_png(os.path.join(output, f"{stem}_uncertainty.png"),
                     np.clip(np.rint(ent * scale), 0, 255).astype(np.uint8)[..., None])
    lead_print(f"segmented {len(inputs)} images ({config.task.name}) into {output}")
    return {"output": output, "num": len(inputs), "task": config.task.name}
