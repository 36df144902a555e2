"""The domain-classifier pipeline: EGSDE's time-dependent classifier of two domains.

The run's data are the two domains (``config.data.classes``, e.g. Fashion-MNIST
``(7, 9)``: source first, target second), relabelled ``0 .. K-1`` by
:func:`diffjax.data.select_classes`. Each batch's labels become the classifier's
``"target"``; the loss (:func:`diffjax.losses.make_classifier_loss_fn`) noises
the images to a random time. The network is :class:`diffjax.nn.Classifier`.
"""

from __future__ import annotations

import numpy as np

from diffjax.pipelines.base import Pipeline

__all__ = ["DomainClassifierPipeline"]


class DomainClassifierPipeline(Pipeline):
    """Cross-entropy training of a time-dependent classifier; the labels are the targets."""

    name = "domain_classifier"
    network = "classifier"

    def prepare_batch(self, batch: dict, *, step: int, seed: int, rows: np.ndarray) -> dict:
        """Adds ``"target"``: the batch's (relabelled) class ids."""
        return dict(batch, target=np.asarray(batch["label"], np.int32))


# -- sample.py --input with --config.translation.method=sdedit|egsde --------------
TRANSLATION_METHODS = ("sdedit", "egsde")


def score_run_problem(config) -> str | None:
    """Why the run of ``config`` cannot drive SDEdit / EGSDE (``None`` if it can).

    Translation needs an unconditional score model: a ``generate`` or
    ``repaint`` run without class labels. A classifier run, a conditional
    (Palette, SR3, cascade) or class-conditional run is refused.
    """
    task = config.task.name
    if task == DomainClassifierPipeline.name:
        return ("this run is a domain classifier, not a score model: pass the target-domain score run as "
                "--workdir and the classifier as --config.translation.classifier_workdir")
    if task not in ("generate", "repaint"):
        return f"translation needs an unconditional score model; this run's task is {task!r} (conditional)"
    if config.data.use_labels:
        return "translation needs an unconditional score model; this run is class-conditional (data.use_labels)"
    return None


def classifier_run_problem(score_config, classifier_config, image_shape, classifier_shape) -> str | None:
    """Why a classifier run cannot guide EGSDE for this score run (``None`` if it can).

    The classifier must be a ``domain_classifier`` run on the same dataset,
    image size and channels, under the same forward process, and (when the
    score run names its classes) its domains must include the score model's
    target classes.
    """
    c, s = classifier_config, score_config
    if c.task.name != DomainClassifierPipeline.name:
        return f"the classifier run's task is {c.task.name!r}; expected a domain_classifier run"
    if tuple(classifier_shape) != tuple(image_shape):
        return (f"the classifier was trained on {_hwc(classifier_shape)} images (its model_config.json), the score "
                f"model on {_hwc(image_shape)}: EGSDE needs a classifier of the score model's size, "
                f"{_hwc(image_shape)}; train one at that size (--config.data.image_size)")
    if c.data.name != s.data.name:
        return f"the classifier was trained on {c.data.name!r}, the score model on {s.data.name!r}"
    target = tuple(s.data.classes)
    domains = tuple(c.data.classes)
    if target and not set(target) <= set(domains):
        return (f"the classifier's domains are classes {list(domains)} but the score model's target domain is "
                f"{list(target)}: train a classifier on the source and this target")
    if c.sde.to_dict() != s.sde.to_dict():
        return "the classifier was trained under another forward process (config.sde) than the score model"
    return None


def _hwc(shape) -> str:
    return "x".join(str(int(n)) for n in shape) + " (H x W x C)" if len(shape) == 3 else f"{tuple(shape)}"


def read_translation_inputs(input_dir: str, image_shape: tuple[int, int, int],
                            exclude=None) -> list[tuple[str, np.ndarray]]:
    """Every PNG of ``input_dir`` as ``(name, image in [-1, 1] of image_shape)``, in name order.

    Grayscale and RGB files are converted to the model's channels (RGB -> luma
    for a grayscale model; grey replicated for a colour one).

    ``exclude(name)`` true skips a file (segmentation skips its own outputs).

    Raises:
      ValueError: a missing folder, no PNG, or an image whose size is not the
        model's (naming every such file).
    """
    import os

    from diffjax.degradations import LUMA_WEIGHTS
    from diffjax.pipelines.restoration import _load

    if not os.path.isdir(input_dir):
        raise ValueError(f"--input {input_dir} is not a folder")
    names = sorted(n for n in os.listdir(input_dir) if n.lower().endswith(".png") and not n.startswith(".")
                   and not (exclude and exclude(n)))
    if not names:
        raise ValueError(f"no .png images in {input_dir}")
    h, w, channels = image_shape
    out, wrong = [], []
    for name in names:
        raw = _load(os.path.join(input_dir, name)).astype(np.float32)
        if raw.shape[:2] != (h, w):
            wrong.append(f"{name} ({raw.shape[1]}x{raw.shape[0]})")
            continue
        if raw.ndim == 2:
            raw = raw[..., None]
        if raw.shape[-1] == 3 and channels == 1:
            raw = raw @ np.asarray(LUMA_WEIGHTS, np.float32)[:, None]
        elif raw.shape[-1] == 1 and channels == 3:
            raw = np.repeat(raw, 3, axis=-1)
        out.append((name, raw / 127.5 - 1.0))
    if wrong:
        raise ValueError(f"translation inputs must be {w}x{h} (the model's size); got {', '.join(wrong)}")
    return out
