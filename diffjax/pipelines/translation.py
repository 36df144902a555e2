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
