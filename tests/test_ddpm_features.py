"""Baranchuk et al.'s per-pixel DDPM features: shapes, the fixed noise, bilinear
upsampling, streaming (also into a memory map) equal to one pass, and the UNet's
activations agreeing with its forward pass."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.nn import UNet, UNetConfig
from diffjax.tasks import segmentation as seg

SDE = dj.VPSDE()
TIMES = (0.05, 0.25)


def _pool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def toy_activations(x, t):
    """A stand-in network: the input scaled by t, and its 2x2 average pool."""
    return {"full": x * t[:, None, None, None], "half": _pool2(x), "unused": x[..., :1]}


def _images(n, h=8, w=8, c=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32)


def test_features_are_the_noised_activations_in_order():
    noise = seg.fixed_noise(jax.random.key(0), (8, 8, 2))
    fn = seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("full", "half"), noise=noise)
    x = _images(3)
    feats = np.asarray(fn(x))
    assert feats.shape == (3, 8, 8, 2 * (2 + 2)) and seg.feature_channels(fn, (8, 8, 2)) == 8
    for i, t in enumerate(TIMES):
        alpha, sigma = (float(v[0]) for v in SDE.alpha_sigma(jnp.array([t])))
        x_t = alpha * x + sigma * np.asarray(noise)[None]
        np.testing.assert_allclose(feats[..., 4 * i : 4 * i + 2], t * x_t, rtol=1e-5, atol=1e-6)


def test_bilinear_upsampling_reproduces_a_linear_ramp():
    """Average-pooling a ramp gives the ramp at the coarse pixel centres; bilinear
    upsampling with half-pixel centres gives it back exactly away from the border."""
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[None, None, :, None], (1, 8, 8, 1)) / 8
    fn = seg.ddpm_feature_fn(lambda x, t: {"half": _pool2(x)}, SDE, times=(SDE.T,), blocks=("half",),
                             noise=jnp.zeros((8, 8, 1)))
    alpha = float(SDE.alpha_sigma(jnp.array([SDE.T]))[0][0])
    up = np.asarray(fn(ramp))[0, :, :, 0]
    np.testing.assert_allclose(up[:, 1:-1], alpha * ramp[0, :, 1:-1, 0], rtol=1e-5)


def test_noise_is_fixed_and_shared_by_every_image():
    noise = seg.fixed_noise(jax.random.key(0), (8, 8, 2))
    fn = jax.jit(seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("full",), noise=noise))
    x = _images(4)
    alone = np.asarray(fn(x[2:3]))
    in_batch = np.asarray(fn(x))[2:3]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-6)  # no per-batch or per-call draw
    np.testing.assert_array_equal(np.asarray(fn(x)), np.asarray(fn(x)))
    other = seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("full",),
                                noise=seg.fixed_noise(jax.random.key(1), (8, 8, 2)))
    assert not np.allclose(np.asarray(other(x)), np.asarray(fn(x)))


def test_streaming_equals_one_pass_and_fills_a_memmap(tmp_path):
    traces = []

    def counting(x, t):
        traces.append(x.shape[0])
        return toy_activations(x, t)

    noise = seg.fixed_noise(jax.random.key(0), (8, 8, 2))
    fn = jax.jit(seg.ddpm_feature_fn(counting, SDE, times=TIMES, blocks=("half", "full"), noise=noise))
    x = _images(7)
    whole = np.asarray(fn(x))
    streamed = seg.compute_features(fn, x, batch_size=3)
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
    # One trace for all three batches (the last one padded), besides the whole set's.
    assert sorted(traces) == [3] * len(TIMES) + [7] * len(TIMES)
    path = str(tmp_path / "features.npy")
    seg.compute_features(fn, x, batch_size=3, out=seg.open_feature_memmap(path, whole.shape))
    np.testing.assert_allclose(np.load(path, mmap_mode="r", allow_pickle=False), whole, rtol=1e-5, atol=1e-6)


def test_unet_activations_match_its_forward_pass_and_feed_the_features():
    cfg = UNetConfig(image_size=8, in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(4,))
    model = UNet(cfg, rngs=nnx.Rngs(0))
    # Non-zero output layer so the comparison means something (it starts at zero).
    kernel = model.conv_out.kernel
    kernel[...] = jax.random.normal(jax.random.key(1), kernel[...].shape) * 0.1
    x, c = jnp.asarray(_images(2, c=3)), jnp.array([0.3, 0.7])
    acts = model.activations(x, c)
    assert tuple(acts) == model.activation_names()
    assert acts["down_0"].shape == (2, 8, 8, 8) and acts["mid"].shape == (2, 4, 4, 16)
    assert acts["up_0"].shape == (2, 4, 4, 16) and acts["up_3"].shape == (2, 8, 8, 8)
    out = model.conv_out(nnx.silu(model.norm_out(acts["up_3"])))
    np.testing.assert_allclose(out, model(x, c), rtol=1e-5, atol=1e-6)
    fn = seg.ddpm_feature_fn(model.activations, SDE, times=(0.05, 0.15, 0.25), blocks=("up_0", "up_2"),
                             noise=seg.fixed_noise(jax.random.key(0), (8, 8, 3)))
    assert fn(x).shape == (2, 8, 8, 3 * (16 + 8))


def test_refusals():
    noise = jnp.zeros((8, 8, 2))
    with pytest.raises(ValueError, match=r"times must be a non-empty list of values in \(0, T=1.0\]"):
        seg.ddpm_feature_fn(toy_activations, SDE, times=(0.0, 0.5), blocks=("full",), noise=noise)
    with pytest.raises(ValueError, match="blocks must be a non-empty list"):
        seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=(), noise=noise)
    with pytest.raises(ValueError, match="noise must be one"):
        seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("full",), noise=jnp.zeros((1, 8, 8, 2)))
    fn = seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("fulll",), noise=noise)
    with pytest.raises(ValueError, match=r"unknown block 'fulll'; the network gives \['full', 'half', 'unused'\]"):
        fn(_images(1))
    ok = seg.ddpm_feature_fn(toy_activations, SDE, times=TIMES, blocks=("full",), noise=noise)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 8, 8, 2\)"):
        ok(_images(1, c=3))
    with pytest.raises(ValueError, match="batch_size must be"):
        seg.compute_features(ok, _images(2), batch_size=0)
    with pytest.raises(ValueError, match="out must have shape"):
        seg.compute_features(ok, _images(2), batch_size=1, out=np.zeros((2, 8, 8, 3), np.float32))
