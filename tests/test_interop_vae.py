"""diffusers VQModel / AutoencoderKL in NNX against diffusers' own outputs (fixtures from
benchmarks/make_interop_fixtures.py: tiny random models, float16-exact weights, PyTorch float32 outputs)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.nn.diffusers_vae import AutoencoderKL, VQModel, check_vae_config, vae_from_diffusers, vae_from_pretrained

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop_vae")
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _load(name):
    folder = os.path.join(FIXTURES, name)
    return vae_from_pretrained(folder), dict(np.load(os.path.join(folder, "reference.npz")))


@nnx.jit
def _vq_outputs(model, images, latents):
    """Every VQModel output the tests compare, in one compiled program (eager dispatch is slow)."""
    return {"latents": model.encode(images), "indices": model.quantize_indices(latents),
            "decoded": model.decode(latents), "decoded_not_quantized": model.decode(latents, force_not_quantize=True),
            "scaled": model.encode_latents(images), "from_scaled": model.decode_latents(latents * 0.7)}


@nnx.jit
def _kl_outputs(model, images, mean, key):
    """Every AutoencoderKL output the tests compare, in one compiled program."""
    z = model.encode_latents(images)
    return {"posterior": model.encode(images), "decoded": model.decode(mean), "scaled": z,
            "from_scaled": model.decode_latents(z), "sampled": model.encode_latents(images, key=key)}


def test_vq_model_matches_diffusers():
    model, ref = _load("vq_tiny")
    assert isinstance(model, VQModel) and model.factor == 2
    out = _vq_outputs(model, jnp.asarray(ref["images"]), jnp.asarray(ref["latents"]))
    np.testing.assert_allclose(out["latents"], ref["latents"], **TOL)
    np.testing.assert_array_equal(out["indices"], ref["indices"])
    # decode quantises, as VQModel.decode (and so every LDM pipeline) does
    np.testing.assert_allclose(out["decoded"], ref["decoded"], **TOL)
    np.testing.assert_allclose(out["decoded_not_quantized"], ref["decoded_not_quantized"], **TOL)
    assert np.abs(ref["decoded"] - ref["decoded_not_quantized"]).max() > 1e-2  # quantising matters here
    # LDMPipeline decodes latents / scaling_factor (0.7 here); encode_latents is the inverse scale
    np.testing.assert_allclose(out["scaled"], ref["latents"] * 0.7, **TOL)
    np.testing.assert_allclose(out["from_scaled"], ref["decoded"], **TOL)


def test_autoencoder_kl_matches_diffusers():
    model, ref = _load("kl_tiny")
    assert isinstance(model, AutoencoderKL) and model.factor == 4
    key = jax.random.key(0)
    out = _kl_outputs(model, jnp.asarray(ref["images"]), jnp.asarray(ref["mean"]), key)
    np.testing.assert_allclose(out["posterior"][0], ref["mean"], **TOL)
    np.testing.assert_allclose(out["posterior"][1], ref["logvar"], **TOL)
    np.testing.assert_allclose(out["decoded"], ref["decoded"], **TOL)
    # pipelines: latents = (z - shift) * scale, decode(latents / scale + shift); shift 0.1, scale 0.5 here
    np.testing.assert_allclose(out["scaled"], (ref["mean"] - 0.1) * 0.5, **TOL)
    np.testing.assert_allclose(out["from_scaled"], ref["decoded"], **TOL)
    noise = (out["sampled"] / 0.5 + 0.1 - ref["mean"]) / np.exp(0.5 * ref["logvar"])
    np.testing.assert_allclose(noise, jax.random.normal(key, ref["mean"].shape), rtol=1e-3, atol=1e-3)


def test_any_size():
    model, ref = _load("vq_tiny")
    shape = jax.eval_shape(lambda x: model.decode(model.encode(x)), jax.ShapeDtypeStruct((1, 12, 20, 3), jnp.float32))
    assert shape.shape == (1, 12, 20, 3)


def _state_and_config(name):
    from safetensors.numpy import load_file

    folder = os.path.join(FIXTURES, name)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    return config, load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def test_legacy_attention_names_and_conv_shapes_load():
    """Older checkpoints: mid-block attention as query/key/value/proj_attn, possibly 1x1 convs."""
    config, state = _state_and_config("vq_tiny")
    legacy = {}
    for key, value in state.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        legacy[key] = value
    assert any(".proj_attn." in k for k in legacy)
    model = vae_from_diffusers(config, legacy)
    ref = dict(np.load(os.path.join(FIXTURES, "vq_tiny", "reference.npz")))
    out = _vq_outputs(model, jnp.asarray(ref["images"]), jnp.asarray(ref["latents"]))  # compiled once already
    np.testing.assert_allclose(out["decoded"], ref["decoded"], **TOL)


def test_mismatched_state_and_unsupported_configs_are_refused(tmp_path):
    config, state = _state_and_config("kl_tiny")
    bad = dict(state)
    del bad["decoder.conv_out.bias"]
    bad["encoder.extra.weight"] = np.zeros(1, np.float32)
    bad["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match="(?s)missing keys \\(1\\): decoder.conv_out.bias.*unexpected keys \\(1\\): "
                                         "encoder.extra.weight.*quant_conv.weight: checkpoint \\(8, 8, 3, 3\\)"):
        vae_from_diffusers(config, bad)
    vq_config, _ = _state_and_config("vq_tiny")
    for base, change, message in [(vq_config, {"norm_type": "spatial"}, "spatial norm"),
                                  (vq_config, {"lookup_from_codebook": True}, "lookup_from_codebook"),
                                  (config, {"act_fn": "gelu"}, "act_fn"),
                                  (config, {"down_block_types": ["AttnDownEncoderBlock2D"] * 3}, "DownEncoderBlock2D"),
                                  (config, {"latents_mean": [0.0] * 4}, "latents_mean"),
                                  (config, {"made_up": 1}, "made_up"),
                                  (config, {"_class_name": "UNet2DModel"}, "_class_name")]:
        with pytest.raises(ValueError, match=message):
            check_vae_config({**base, **change})
        with pytest.raises(ValueError, match=message):
            vae_from_diffusers({**base, **change}, {})
    with pytest.raises(ValueError, match="no config.json"):
        vae_from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="no diffusion_pytorch_model.safetensors.*read_torch_checkpoint"):
        vae_from_pretrained(str(tmp_path))


def _published_ldm_sr():
    with open(os.path.join(FIXTURES, "ldm_sr_vq_shapes.json")) as f:
        return json.load(f)


def test_published_ldm_sr_vqmodel_has_diffusers_parameters():
    """CompVis/ldm-super-resolution-4x-openimages' vqvae config builds exactly diffusers' 55M-parameter key set."""
    published = _published_ldm_sr()
    model = nnx.eval_shape(lambda: VQModel({k: v for k, v in published["config"].items() if k != "_class_name"}))
    shapes = {".".join(map(str, path)): list(var.get_value().shape)
              for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert shapes == published["shapes"]
    assert sum(int(np.prod(s)) for s in shapes.values()) == 55_322_782


@pytest.mark.slow
def test_published_ldm_sr_vqmodel_runs():
    """Random weights at the published size: 64x64 -> 16x16x3 latents -> quantised -> 64x64 (parity with diffusers
    at this size: benchmarks/vae_parity.py, max |diff| 6e-6 on decode)."""
    published = _published_ldm_sr()
    rng = np.random.default_rng(0)
    state = {k: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 3.0)).astype(np.float32)
             for k, s in published["shapes"].items()}
    model = vae_from_diffusers(published["config"], state)
    images = jnp.asarray(rng.uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)

    @nnx.jit
    def run(m, x):
        z = m.encode(x)
        return z, m.quantize_latents(z), m.decode(z), m.decode(m.quantize_latents(z), force_not_quantize=True)

    z, q, decoded, decoded_q = run(model, images)
    assert z.shape == q.shape == (1, 16, 16, 3) and decoded.shape == (1, 64, 64, 3)
    book = state["quantize.embedding.weight"]
    assert np.abs(np.asarray(q).reshape(-1, 1, 3) - book[None]).sum(-1).min(-1).max() == 0  # codebook vectors
    np.testing.assert_allclose(decoded, decoded_q, rtol=1e-5, atol=1e-5)  # decode = decode(quantised, no-quantise)
    assert np.isfinite(np.asarray(decoded)).all()
