"""mIoU as the segmentation benchmarks define it: one confusion matrix over the whole
evaluated set, the mean over classes present in its ground truth, 255 ignored."""

import numpy as np
import pytest

from diffjax import metrics


def test_mean_over_classes_present_in_the_ground_truth_only():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])  # class 2 is predicted but absent from the target
    # class 0: inter 1, union 2; class 1: inter 2, union 2; class 2 left out of the mean.
    np.testing.assert_allclose(metrics.mean_iou(pred, target, 3), (1 / 2 + 1) / 2, rtol=1e-6)


def test_ignored_pixels_count_nowhere():
    target = np.array([[0, 255, 1, 255]])
    pred = np.array([[0, 1, 1, 0]])  # wrong predictions only on ignored pixels
    assert float(metrics.mean_iou(pred, target, 2)) == pytest.approx(1.0)
    assert float(metrics.pixel_accuracy(pred, target)) == pytest.approx(1.0)
    cm = np.asarray(metrics.confusion_matrix(pred, target, 2))
    np.testing.assert_array_equal(cm, [[1, 0], [0, 1]])
    # An ignore index inside the class range (here class 0) is left out just the same.
    target0 = np.array([[0, 0, 1, 2]])
    pred0 = np.array([[1, 2, 1, 2]])
    assert float(metrics.mean_iou(pred0, target0, 3, ignore_index=0)) == pytest.approx(1.0)


def test_one_confusion_matrix_over_the_set_not_a_mean_of_images():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, (3, 5, 5))
    target[0] = 0  # image 0 has only class 0: a per-image mean would weigh it differently
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    target[1, 0, :] = 255
    # Reference from counting loops.
    inter, union = np.zeros(4), np.zeros(4)
    valid = target != 255
    for k in range(4):
        t, p = (target == k) & valid, (pred == k) & valid
        inter[k], union[k] = (t & p).sum(), (t | p).sum()
    present = np.array([((target == k) & valid).any() for k in range(4)])
    want = np.mean(inter[present] / union[present])
    np.testing.assert_allclose(metrics.mean_iou(pred, target, 4), want, rtol=1e-6)
    per_image = np.mean([float(metrics.mean_iou(pred[i], target[i], 4)) for i in range(3)])
    assert abs(per_image - want) > 1e-3
    # Streaming: summed per-batch confusion matrices give the same figure.
    cm = sum(np.asarray(metrics.confusion_matrix(pred[i : i + 1], target[i : i + 1], 4)) for i in range(3))
    np.testing.assert_allclose(metrics.mean_iou_from_confusion(cm), want, rtol=1e-6)
    np.testing.assert_allclose(metrics.pixel_accuracy(pred, target), ((pred == target) & valid).sum() / valid.sum(),
                               rtol=1e-6)


def test_refusals():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.mean_iou(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match="integer arrays"):
        metrics.mean_iou(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        metrics.mean_iou(np.zeros((2, 2), int), np.zeros((2, 2), int), 0)
    with pytest.raises(ValueError, match="square"):
        metrics.mean_iou_from_confusion(np.zeros((2, 3)))
