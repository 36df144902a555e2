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
    expected = np.load(os.path.join(FIXTURES, "tensors_expected.npz"))["f32"]
    assert list(state) == ["layer.w"]
    np.testing.assert_array_equal(state["layer.w"], expected)
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
                 "builtins.exec": (builtins.exec, code), "subprocess.call": (subprocess.call, ["touch", str(marker)])}[attack]
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
