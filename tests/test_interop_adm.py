"""PyTorch checkpoint reader (no code runs) and guided-diffusion (ADM) checkpoint mapping."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from diffjax.interop.torch_pickle import UnsafeCheckpointError, load_torch_pickle, read_torch_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop_adm")


# ---------------------------------------------------------------- torch reader

def test_reads_torch_save_output_exactly():
    """Every storage dtype, a transposed view, an offset into a shared storage, a 0-d and an empty tensor."""
    state = read_torch_checkpoint(os.path.join(FIXTURES, "tensors.pt"))
    expected = np.load(os.path.join(FIXTURES, "tensors_expected.npz"))
    assert list(state) == list(expected.files)
    for name in expected.files:
        got = state[name]
        assert got.shape == expected[name].shape, name
        if name == "bf16":
            assert str(got.dtype) == "bfloat16"
            got = got.astype(np.float32)
        else:
            assert got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable


def test_nested_checkpoint_finds_its_state_dict():
    tree = load_torch_pickle(os.path.join(FIXTURES, "nested.ckpt"))
    assert tree["epoch"] == 3 and tree["name"] == "x"
    state = read_torch_checkpoint(os.path.join(FIXTURES, "nested.ckpt"))
    expected = np.load(os.path.join(FIXTURES, "tensors_expected.npz"))
    assert list(state) == ["layer.w", "layer.p"]
    np.testing.assert_array_equal(state["layer.w"], expected["f32"])
    np.testing.assert_array_equal(state["layer.p"], expected["f64"].astype(np.float32))  # an nn.Parameter
    with pytest.raises(ValueError, match="no entry 'model'"):
        read_torch_checkpoint(os.path.join(FIXTURES, "nested.ckpt"), key="model")


def _torch_like_zip(path, payload: bytes, storages=None):
    """A zip laid out as torch.save writes it, around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, attack):
    import builtins
    import subprocess

    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    func, arg = {"os.system": (os.system, command), "builtins.eval": (builtins.eval, code),
                 "builtins.exec": (builtins.exec, code),
                 "subprocess.call": (subprocess.call, ["touch", str(marker)])}[attack]
    # The payload hides in a state dict, next to an innocent entry, as an attacker would put it.
    # (protocol 4 keeps the real module names; protocol 2 would write __builtin__ / commands.)
    payload = pickle.dumps({"weight": 1.0, "bias": _Exploit(func, arg)}, protocol=4)
    path = tmp_path / "model.pt"
    _torch_like_zip(path, payload)
    name = {"os.system": f"{os.system.__module__}.system"}.get(attack, attack)
    with pytest.raises(UnsafeCheckpointError, match=f"global {name}; only tensors"):
        read_torch_checkpoint(str(path))
    assert not marker.exists()
    # Sanity check of the test itself: an ordinary unpickler does run the payload.
    if attack == "builtins.eval":
        with zipfile.ZipFile(path) as z:
            pickle.loads(z.read("archive/data.pkl"))
        assert marker.exists()


def test_refuses_other_globals_and_malformed_tensors(tmp_path):
    path = tmp_path / "obj.pt"
    _torch_like_zip(path, pickle.dumps({"w": np.float32(1.0)}, protocol=2))  # numpy scalar = numpy global
    with pytest.raises(UnsafeCheckpointError, match="global numpy"):
        load_torch_pickle(str(path))
    # A tensor record reading past its storage (4 floats, asks for 3 x 3 from offset 0).
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
               b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x03K\x03\x86K\x03K\x01\x86\x89tR.")
    _torch_like_zip(path, payload, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(UnsafeCheckpointError, match="reads element 8 of a storage holding 4"):
        load_torch_pickle(str(path))
    _torch_like_zip(path, payload.replace(b"K\x03K\x03\x86K\x03K\x01", b"K\x02K\x02\x86K\x02K\x01"))
    with pytest.raises(UnsafeCheckpointError, match="record 'data/0', missing"):
        load_torch_pickle(str(path))
    _torch_like_zip(path, payload.replace(b"K\x03K\x03\x86K\x03K\x01", b"K\x02K\x02\x86K\x02K\x01"),
                    {"0": np.arange(4, dtype=np.float32).tobytes()})
    np.testing.assert_array_equal(load_torch_pickle(str(path)), [[0, 1], [2, 3]])


def test_legacy_and_foreign_formats_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="legacy .pre-1.6"):
        read_torch_checkpoint(str(legacy))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"GGUF0000")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_torch_checkpoint(str(other))
    script = tmp_path / "scripted.pt"
    with zipfile.ZipFile(script, "w") as z:
        z.writestr("m/constants.pkl", b"")
        z.writestr("m/code/__torch__.py", b"")
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        read_torch_checkpoint(str(script))


# ---------------------------------------------------------------- guided-diffusion (ADM)

import json  # noqa: E402
import struct  # noqa: E402

from diffjax.interop.guided_diffusion import (  # noqa: E402
    adm_ancestral_step,
    adm_scheduler_config,
    adm_to_diffusers,
    adm_unet_config,
    convert_adm_checkpoint,
    diffusers_to_adm,
    adm_alphas_cumprod,
    learned_range_log_variance,
    parse_adm_flags,
)

with open(os.path.join(FIXTURES, "adm_keys.json")) as _f:
    ADM_KEYS = json.load(_f)  # written by benchmarks/make_interop_fixtures.py from both implementations' code


def _random_state(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_flag_string_and_dict_parse_alike():
    text = ADM_KEYS["imagenet256_uncond"]["flags"]
    flags = parse_adm_flags(text + " --timestep_respacing 250 --batch_size 4")  # sampling flags pasted along
    assert flags["image_size"] == 256 and flags["num_head_channels"] == 64 and flags["learn_sigma"] is True
    assert flags["class_cond"] is False and flags["attention_resolutions"] == "32,16,8"
    assert flags["num_heads"] == 4 and flags["use_new_attention_order"] is False  # ADM's defaults
    as_dict = parse_adm_flags({"image_size": "256", "num_channels": 256, "learn_sigma": "True",
                               "attention_resolutions": [32, 16, 8], "num_head_channels": 64,
                               "resblock_updown": True, "use_fp16": True, "use_scale_shift_norm": True,
                               "num_res_blocks": 2, "noise_schedule": "linear", "diffusion_steps": 1000,
                               "class_cond": False, "timestep_respacing": "250"})
    assert as_dict == flags
    assert parse_adm_flags("--image_size=128 --class_cond=yes")["class_cond"] is True
    with pytest.raises(ValueError, match="unknown ADM flags \\['num_chanels'\\]"):
        parse_adm_flags("--num_chanels 128")
    with pytest.raises(ValueError, match="learn_sigma must be bool"):
        parse_adm_flags("--learn_sigma maybe")
    with pytest.raises(ValueError, match="num_res_blocks must be int"):
        parse_adm_flags({"num_res_blocks": 2.5})
    with pytest.raises(ValueError, match="--image_size has no value"):
        parse_adm_flags("--image_size --learn_sigma True")


def test_published_256_config():
    config = adm_unet_config(ADM_KEYS["imagenet256_uncond"]["flags"])
    assert config["block_out_channels"] == [256, 256, 512, 512, 1024, 1024]
    assert config["down_block_types"] == ["ResnetDownsampleBlock2D"] * 3 + ["AttnDownBlock2D"] * 3
    assert config["up_block_types"] == ["AttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"] * 3
    assert (config["out_channels"], config["attention_head_dim"], config["resnet_time_scale_shift"]) == (
        6, 64, "scale_shift")
    assert config["downsample_type"] == config["upsample_type"] == "resnet"
    assert config["num_class_embeds"] is None and config["attn_norm_num_groups"] == 32


@pytest.mark.parametrize("name", sorted(ADM_KEYS))
def test_state_dict_mapping_matches_both_implementations(name):
    """ADM keys/shapes (from guided-diffusion's create_model) -> exactly diffusers' UNet2DModel keys/shapes, and back.

    The fixture script also loaded the mapped weights into both networks: their outputs agree
    to ~2e-6 (recorded as max_abs_diff_adm_vs_diffusers for the tiny configurations).
    """
    entry = ADM_KEYS[name]
    if name.startswith("tiny"):
        adm_state = _random_state(entry["adm_shapes"])
    else:  # the published sizes: shapes only (zero-stride arrays; 2 GB of random numbers would take minutes)
        adm_state = {k: np.broadcast_to(np.float32(i), s) for i, (k, s) in enumerate(entry["adm_shapes"].items())}
    config, dif_state = adm_to_diffusers(entry["flags"], adm_state)
    assert {k: list(v.shape) for k, v in dif_state.items()} == entry["diffusers_shapes"]
    back = diffusers_to_adm(entry["flags"], dif_state)
    assert list(back) == list(entry["adm_shapes"])  # ADM's own module order
    for key, value in adm_state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    if "max_abs_diff_adm_vs_diffusers" in entry:
        assert entry["max_abs_diff_adm_vs_diffusers"] < 1e-4 * max(1.0, entry["max_abs_output"])


def _attention(q, k, v):
    """Softmax attention per head: q, k, v (heads, ch, T) -> (heads, ch, T)."""
    w = np.einsum("hct,hcs->hts", q, k) / np.sqrt(q.shape[1])
    w = np.exp(w - w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("hts,hcs->hct", w, v)


@pytest.mark.parametrize("new_order", [False, True])
def test_qkv_split_gives_adm_attention(new_order):
    """The split q/k/v weights, used per head as diffusers does, give ADM's fused-qkv attention."""
    rng = np.random.default_rng(1)
    c, heads, length = 8, 2, 5
    ch = c // heads
    flags = {"image_size": 16, "num_channels": 32, "channel_mult": "1", "num_res_blocks": 1,
             "attention_resolutions": "16", "num_heads": heads, "use_new_attention_order": new_order}
    w, b, x = rng.standard_normal((3 * c, c, 1)), rng.standard_normal(3 * c), rng.standard_normal((c, length))
    qkv = w[:, :, 0] @ x + b[:, None]  # the fused 1x1 conv
    if new_order:  # ADM QKVAttention: chunk into q, k, v, then heads
        q, k, v = (part.reshape(heads, ch, length) for part in np.split(qkv, 3))
    else:  # ADM QKVAttentionLegacy: heads first, then q, k, v inside each head
        q, k, v = np.split(qkv.reshape(heads, 3 * ch, length), 3, axis=1)
    expected = _attention(q, k, v).reshape(c, length)
    from diffjax.interop.guided_diffusion import _split_qkv

    config = adm_unet_config(flags)
    assert config["attention_head_dim"] == 16  # 32 channels / 2 heads
    (wq, wk, wv), (bq, bk, bv) = _split_qkv(w, b, heads, new_order)
    split = [(wi @ x + bi[:, None]).reshape(heads, ch, length) for wi, bi in ((wq, bq), (wk, bk), (wv, bv))]
    np.testing.assert_allclose(_attention(*split).reshape(c, length), expected, rtol=1e-12)


@pytest.mark.parametrize("flags, message", [
    ("--image_size 128 --num_channels 256 --num_heads 3 --attention_resolutions 32,16,8",
     "num_heads 3 does not divide attention channels"),
    ("--image_size 64 --num_heads 4 --num_heads_upsample 2 --attention_resolutions 8", "num_heads_upsample 2"),
    ("--image_size 64 --num_head_channels 64 --rescale_timesteps True --diffusion_steps 4000", "rescale_timesteps"),
    ("--image_size 32", "no default channel_mult for image size 32"),
    ("--image_size 64 --num_channels 48", "divisible by 32"),
])
def test_inexpressible_models_are_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        adm_unet_config(flags)


def test_state_dict_mismatch_is_reported():
    entry = ADM_KEYS["tiny_legacy_heads"]
    state = _random_state(entry["adm_shapes"])
    del state["middle_block.1.qkv.bias"]
    state["input_blocks.9.0.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="missing \\['middle_block.1.qkv.bias'\\].*unexpected \\['input_blocks.9"):
        adm_to_diffusers(entry["flags"], state)
    with pytest.raises(ValueError, match="missing"):  # a class-conditional checkpoint read with the wrong flags
        adm_to_diffusers(entry["flags"].replace("--num_heads 2", "--num_heads 2 --class_cond True"),
                         _random_state(entry["adm_shapes"]))


def test_scheduler_config():
    linear = adm_scheduler_config("--diffusion_steps 4000 --learn_sigma True")
    assert linear["beta_schedule"] == "linear" and linear["variance_type"] == "learned_range"
    np.testing.assert_allclose([linear["beta_start"], linear["beta_end"]], [2.5e-5, 5e-3])
    cosine = adm_scheduler_config("--noise_schedule cosine --predict_xstart True")
    assert cosine["beta_schedule"] == "squaredcos_cap_v2" and cosine["prediction_type"] == "sample"
    assert cosine["variance_type"] == "fixed_large" and cosine["num_train_timesteps"] == 1000
    with pytest.raises(ValueError, match="noise_schedule"):
        adm_scheduler_config("--noise_schedule sigmoid")


def test_alphas_cumprod_closed_forms():
    linear = adm_alphas_cumprod("--diffusion_steps 4000")
    np.testing.assert_allclose(1 - linear[0], 2.5e-5)
    np.testing.assert_allclose(linear[-1] / linear[-2], 1 - 5e-3)
    cosine = adm_alphas_cumprod("--noise_schedule cosine --diffusion_steps 1000")
    f = np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    for n in (0, 499, 900):  # abar_n = f((n+1)/N) / f(0) wherever no beta is clipped at 0.999
        np.testing.assert_allclose(cosine[n], np.cos(((n + 1) / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2 / f, rtol=1e-9)
    assert np.isclose(cosine[-1] / cosine[-2], 1 - 0.999)  # the last beta is clipped


def _linear_schedule(n):
    betas = np.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n)
    return betas, np.cumprod(1 - betas)


def test_learned_variance_closed_form():
    """v = 1 -> beta_n, v = -1 -> beta-tilde_n (beta-tilde_1 at n = 0), v = 0 -> their geometric mean."""
    betas, abar = _linear_schedule(50)
    abar_prev = np.append(1.0, abar[:-1])
    tilde = betas * (1 - abar_prev) / (1 - abar)
    n = np.array([0, 1, 17, 49])
    tilde_clipped = np.where(n == 0, tilde[1], tilde[n])
    v = np.stack([np.full((2, 2, 1), s) for s in (1.0, -1.0, 0.0, 0.5)])
    got = np.asarray(learned_range_log_variance(v, abar, n))
    expected = np.array([np.log(betas[n[0]]), np.log(tilde_clipped[1]), 0.5 * np.log(betas[17] * tilde[17]),
                         0.75 * np.log(betas[49]) + 0.25 * np.log(tilde[49])])
    np.testing.assert_allclose(got[:, 0, 0, 0], expected, rtol=1e-5)
    assert got.shape == v.shape
    np.testing.assert_allclose(np.asarray(learned_range_log_variance(-np.ones((1, 1)), abar, [0]))[0, 0],
                               np.log(tilde[1]), rtol=1e-5)  # ADM's clipping at step 0, not log(0)


def test_ancestral_step_is_the_exact_posterior_for_a_point_mass():
    """Data = a point x0*; with the exact eps and v = -1 the step draws from q(x_{n-1} | x_n, x0*) exactly."""
    betas, abar = _linear_schedule(40)
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-0.9, 0.9, (3, 4, 4, 2))
    n = np.array([25, 7, 0])
    a = abar[n][:, None, None, None]
    eps = rng.standard_normal(x0.shape)
    x = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    noise = rng.standard_normal(x0.shape)
    out = np.concatenate([eps, -np.ones_like(eps)], axis=-1)
    got = np.asarray(adm_ancestral_step(x, out, abar, n, noise))
    a_prev = np.append(1.0, abar[:-1])[n][:, None, None, None]
    beta = betas[n][:, None, None, None]
    mean = np.sqrt(a_prev) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
    std = np.sqrt(beta * (1 - a_prev) / (1 - a))
    expected = mean + np.where(n > 0, 1.0, 0.0)[:, None, None, None] * std * noise
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)
    with pytest.raises(ValueError, match="2 x 2 channels"):
        adm_ancestral_step(x, eps, abar, n, noise)


def _pickle_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_ints(values) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _write_torch_zip(path, state):
    """A torch.save-layout zip of float32 arrays, its pickle written opcode by opcode as torch writes it."""
    body = [b"\x80\x02ccollections\nOrderedDict\n)R("]
    storages = {}
    for i, (key, value) in enumerate(state.items()):
        storages[str(i)] = np.ascontiguousarray(value, "<f4").tobytes()
        strides = np.array(value.strides, dtype=np.int64) // 4
        body += [_pickle_str(key), b"ctorch._utils\n_rebuild_tensor_v2\n(",
                 b"(" + _pickle_str("storage") + b"ctorch\nFloatStorage\n" + _pickle_str(str(i)) + _pickle_str("cpu")
                 + b"J" + struct.pack("<i", value.size) + b"tQ",
                 b"J\x00\x00\x00\x00", _pickle_ints(value.shape), _pickle_ints(strides.tolist()),
                 b"\x89ccollections\nOrderedDict\n)RtR"]
    _torch_like_zip(path, b"".join(body) + b"u.", storages)


def test_checkpoint_file_to_diffusers_state(tmp_path):
    """A whole ADM checkpoint through read_torch_checkpoint and adm_to_diffusers."""
    entry = ADM_KEYS["tiny_cond_new_order"]
    adm_state = {k: np.ascontiguousarray(v) for k, v in _random_state(entry["adm_shapes"], seed=3).items()}
    path = tmp_path / "model.pt"
    _write_torch_zip(path, adm_state)
    read = read_torch_checkpoint(str(path))
    assert list(read) == list(adm_state)
    _, dif_state = adm_to_diffusers(entry["flags"], read)
    _, expected = adm_to_diffusers(entry["flags"], adm_state)
    assert set(dif_state) == set(entry["diffusers_shapes"])
    for key in expected:
        np.testing.assert_array_equal(dif_state[key], expected[key], err_msg=key)


def test_convert_writes_a_ddpm_pipeline_folder(tmp_path):
    from safetensors.numpy import load_file

    entry = ADM_KEYS["tiny_one_head"]
    adm_state = _random_state(entry["adm_shapes"], seed=4)
    _write_torch_zip(tmp_path / "model.pt", adm_state)
    out = convert_adm_checkpoint(str(tmp_path / "model.pt"), entry["flags"], str(tmp_path / "run"))
    with open(os.path.join(out, "model_index.json")) as f:
        assert json.load(f)["_class_name"] == "DDPMPipeline"
    with open(os.path.join(out, "unet", "config.json")) as f:
        assert json.load(f) == json.loads(json.dumps(adm_unet_config(entry["flags"])))
    with open(os.path.join(out, "scheduler", "scheduler_config.json")) as f:
        assert json.load(f)["variance_type"] == "learned_range"
    written = load_file(os.path.join(out, "unet", "diffusion_pytorch_model.safetensors"))
    _, expected = adm_to_diffusers(entry["flags"], adm_state)
    assert set(written) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(n for n in ADM_KEYS if n.startswith("tiny")))
def test_adm_checkpoint_computes_what_guided_diffusion_computes(name):
    """End to end: ADM weights -> adm_to_diffusers -> the NNX UNet2DModel == guided-diffusion's own UNetModel.

    The reference outputs were computed by guided-diffusion's code on the same NumPy-seeded weights
    (benchmarks/make_interop_fixtures.py). Needs the NNX UNet2DModel loader (diffjax.interop.diffusers_weights).
    """
    loader = pytest.importorskip("diffjax.interop.diffusers_weights")
    entry = ADM_KEYS[name]
    rng = np.random.default_rng(0)  # as make_interop_fixtures.adm_numpy_weights
    weights = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in entry["adm_shapes"].items()}
    config, state = adm_to_diffusers(entry["flags"], weights)
    model = loader.unet_from_diffusers(config, state)
    ref = np.load(os.path.join(FIXTURES, "adm_outputs.npz"))
    labels = ref[f"{name}/y"] if f"{name}/y" in ref.files else None
    out = model(ref[f"{name}/x"], ref[f"{name}/t"], labels=labels)
    scale = np.abs(ref[f"{name}/out"]).max()
    np.testing.assert_allclose(out, ref[f"{name}/out"], rtol=1e-4, atol=1e-4 * scale)


with open(os.path.join(FIXTURES, "adm_ext_keys.json")) as _f:
    ADM_EXT = json.load(_f)  # guided-diffusion's key/shape lists of layouts UNet2DModel cannot express


def test_fixed_head_count_and_half_width_input_use_diffjax_extensions():
    """ADM 128 / 64 -> 256 (num_heads 4 over widths 512..1024) and ADM 512 (channel_mult 0.5, ...) load
    through diffjax's own config keys; a layout UNet2DModel can express gets none of them."""
    c128 = adm_unet_config(ADM_EXT["imagenet128_cond"]["flags"])
    assert c128["diffjax_attention_heads"] == 4 and c128["attention_head_dim"] is None
    c512 = adm_unet_config(ADM_EXT["imagenet512_cond"]["flags"])
    assert c512["block_out_channels"][0] == 128 and c512["diffjax_time_proj_dim"] == 256
    assert c512["time_embedding_dim"] == 1024 and "diffjax_attention_heads" not in c512
    assert not any(k.startswith("diffjax_") for k in adm_unet_config(ADM_KEYS["imagenet256_uncond"]["flags"]))
    # ADM's 64x64 model: num_heads 4 over widths that all give 64-wide heads is a plain UNet2DModel
    plain = adm_unet_config("--image_size 64 --num_channels 256 --channel_mult 1,1 --attention_resolutions 32 "
                            "--num_heads 4")
    assert plain["attention_head_dim"] == 64 and "diffjax_attention_heads" not in plain


@pytest.mark.parametrize("name", sorted(n for n in ADM_EXT if not n.startswith("tiny")))
def test_published_extension_layouts_map_onto_the_nnx_unet(name):
    """The published 128x128, 64 -> 256 and 512x512 key/shape lists (from guided-diffusion's create_model) map
    exactly onto the parameters of the NNX UNet built from the mapped config (shapes only), and back."""
    from flax import nnx

    from diffjax.interop.diffusers_weights import _flat_params
    from diffjax.nn.diffusers_unet import DiffusersUNet2D

    entry = ADM_EXT[name]
    adm_state = {k: np.broadcast_to(np.float32(i), s) for i, (k, s) in enumerate(entry["adm_shapes"].items())}
    config, dif_state = adm_to_diffusers(entry["flags"], adm_state)
    model = nnx.eval_shape(lambda: DiffusersUNet2D(config, rngs=nnx.Rngs(0)))
    want = {k: tuple(v.get_value().shape) for k, v in _flat_params(model).items()}
    assert {k: v.shape for k, v in dif_state.items()} == want
    back = diffusers_to_adm(entry["flags"], dif_state)
    assert list(back) == list(entry["adm_shapes"])
    for key, value in adm_state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(n for n in ADM_EXT if n.startswith("tiny")))
def test_adm_extension_layouts_compute_what_guided_diffusion_computes(name):
    """Fixed head count (128-like, and the 64 -> 256-like super-resolution model on its concatenated input) and
    channel_mult 0.5 (512-like): mapped weights in the NNX UNet == guided-diffusion's UNetModel on the same
    NumPy-seeded weights (benchmarks/make_interop_fixtures.py --only adm-ext)."""
    from diffjax.interop.diffusers_weights import unet_from_diffusers

    entry = ADM_EXT[name]
    rng = np.random.default_rng(0)  # as make_interop_fixtures.adm_numpy_weights
    weights = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in entry["adm_shapes"].items()}
    config, state = adm_to_diffusers(entry["flags"], weights)
    model = unet_from_diffusers(config, state)
    ref = np.load(os.path.join(FIXTURES, "adm_ext_outputs.npz"))
    labels = ref[f"{name}/y"] if f"{name}/y" in ref.files else None
    out = model(ref[f"{name}/x"], ref[f"{name}/t"], labels=labels)
    scale = np.abs(ref[f"{name}/out"]).max()
    np.testing.assert_allclose(out, ref[f"{name}/out"], rtol=1e-4, atol=1e-4 * scale)


def test_adm_super_resolution_folder_restores_as_super_res_model_does(tmp_path):
    """A converted ADM super-resolution checkpoint loads as a restoring run whose network input is
    SuperResModel's: x_t, then the low-resolution image upsampled bilinearly (guided-diffusion's own
    forward with low_res=..., fixture from benchmarks/make_interop_fixtures.py --only adm-ext)."""
    import jax.numpy as jnp

    import diffjax as dj
    from diffjax.interop.diffusers_latent import AdmSuperResRun

    entry = ADM_EXT["tiny_sr_fixed_heads"]
    rng = np.random.default_rng(0)  # as make_interop_fixtures.adm_numpy_weights
    weights = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in entry["adm_shapes"].items()}
    _write_torch_zip(tmp_path / "sr.pt", weights)
    run = dj.load_run(convert_adm_checkpoint(str(tmp_path / "sr.pt"), entry["flags"], str(tmp_path / "run")))
    assert isinstance(run, AdmSuperResRun) and run.scale == 4 and run.capabilities[0] == "restore"
    ref = np.load(os.path.join(FIXTURES, "adm_ext_outputs.npz"))
    name = "tiny_sr_fixed_heads"
    x, low = jnp.asarray(ref[f"{name}/sr_x"]), jnp.asarray(ref[f"{name}/sr_low"])
    out = run.model(jnp.concatenate([x, run.upsample(low)], axis=-1), jnp.asarray([3, 917]))
    scale = np.abs(ref[f"{name}/sr_out"]).max()
    np.testing.assert_allclose(np.asarray(out), ref[f"{name}/sr_out"], rtol=1e-4, atol=1e-4 * scale)
    up = run.restore(np.asarray(low[0]) / 2 + 0.5, key=0, sampler=dj.samplers.DDIM(3))
    assert up.shape == (16, 16, 3) and 0 <= up.min() <= up.max() <= 1
    with pytest.raises(ValueError, match="it can: \\['restore'"):
        run.generate(1)
