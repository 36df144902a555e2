"""Write the small PyTorch / diffusers fixtures of tests/test_interop_adm.py and tests/test_interop_vae.py.

Needs torch, diffusers and safetensors (``pip install -e .[interop-test]``); the
tests themselves read only the committed files. Run from the repository root::

    python benchmarks/make_interop_fixtures.py [--only torch|adm|vae] [--guided-diffusion DIR]

``--guided-diffusion DIR`` names a checkout of openai/guided-diffusion (only read
here, to list the exact state-dict keys and shapes its ``create_model`` gives for
each ADM configuration and to run its network against diffusers' on the mapped
weights); without it the ADM fixtures are left as they are.

Every fixture is made from fixed seeds, so rerunning rewrites the same numbers
(up to torch's own version-to-version changes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np

def _interop_module(name):
    """diffjax/interop/<name>.py loaded on its own: the torch environment need not have JAX."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "diffjax", "interop", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_interop_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADM_DIR = os.path.join("tests", "fixtures", "interop_adm")
VAE_DIR = os.path.join("tests", "fixtures", "interop_vae")


def make_torch_fixtures():
    """A tensor checkpoint covering every storage dtype, views, shared storage and nesting."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = collections.OrderedDict(
        f32=torch.randn(2, 3, 1, 1, generator=g),
        f16=torch.randn(5, generator=g).half(),
        bf16=torch.randn(3, 2, generator=g).to(torch.bfloat16),
        f64=torch.randn(2, generator=g).double(),
        i64=torch.arange(-3, 4),
        u8=torch.arange(7, dtype=torch.uint8),
        boolean=torch.tensor([True, False, True]),
        transposed=base.t(),              # non-contiguous strides
        row=base[2],                      # offset into a shared storage
        scalar=torch.tensor(1.5),
        empty=torch.zeros(0, 3),
    )
    os.makedirs(ADM_DIR, exist_ok=True)
    torch.save(state, os.path.join(ADM_DIR, "tensors.pt"))
    torch.save({"state_dict": {"layer": {"w": state["f32"]}}, "epoch": 3, "name": "x"},
               os.path.join(ADM_DIR, "nested.ckpt"))
    np.savez(os.path.join(ADM_DIR, "tensors_expected.npz"),
             **{k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()})


#: ADM configurations whose key/shape lists are committed (the first is guided-diffusion's
#: 256x256 unconditional ImageNet model, as its README prints the flags).
ADM_CONFIGS = {
    "imagenet256_uncond": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 "
                          "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
                          "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "imagenet64_cond": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
                       "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 "
                       "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True "
                       "--use_fp16 True --use_scale_shift_norm True",
    "sr128_512": "--attention_resolutions 32,16 --class_cond True --diffusion_steps 1000 --large_size 512 "
                 "--small_size 128 --learn_sigma True --noise_schedule linear --num_channels 192 --num_head_channels 64 "
                 "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "tiny_cond_new_order": "--image_size 16 --num_channels 32 --channel_mult 1,2 --num_res_blocks 1 "
                           "--attention_resolutions 8 --num_head_channels 16 --class_cond True --learn_sigma True "
                           "--resblock_updown True --use_new_attention_order True --use_scale_shift_norm True",
    "tiny_legacy_heads": "--image_size 16 --num_channels 32 --channel_mult 1,2 --num_res_blocks 2 "
                         "--attention_resolutions 8 --num_heads 2 --use_scale_shift_norm False "
                         "--resblock_updown False --noise_schedule cosine",
    "tiny_one_head": "--image_size 16 --num_channels 32 --channel_mult 1,2,2 --num_res_blocks 1 "
                     "--attention_resolutions 16,8,4 --num_heads 1 --learn_sigma True",
}


def _adm_model(gd_dir, flags):
    """guided-diffusion's own network for these flags (its create_model, imported from gd_dir)."""
    import sys

    sys.path.insert(0, gd_dir)
    from guided_diffusion.script_util import create_model

    f = _interop_module("guided_diffusion").parse_adm_flags(flags)
    if f["large_size"]:
        from guided_diffusion.script_util import sr_create_model

        keys = ("large_size small_size num_channels num_res_blocks learn_sigma class_cond use_checkpoint "
                "attention_resolutions num_heads num_head_channels num_heads_upsample use_scale_shift_norm dropout "
                "resblock_updown use_fp16").split()
        return sr_create_model(**{k: f[k] for k in keys})
    keys = ("image_size num_channels num_res_blocks channel_mult learn_sigma class_cond attention_resolutions "
            "num_heads num_head_channels num_heads_upsample use_scale_shift_norm resblock_updown "
            "use_new_attention_order").split()
    return create_model(**{k: f[k] for k in keys})


def _json_lines(record: dict) -> str:
    """JSON with one key (or one state-dict entry) per line: compact, and diffs stay readable."""
    out = []
    for name, entry in record.items():
        fields = []
        for field, value in entry.items():
            if isinstance(value, dict):
                rows = ",\n".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in value.items())
                fields.append(f"{json.dumps(field)}:{{\n{rows}}}")
            else:
                fields.append(f"{json.dumps(field)}:{json.dumps(value)}")
        out.append(f"{json.dumps(name)}:{{\n" + ",\n".join(fields) + "}")
    return "{\n" + ",\n".join(out) + "}\n"


def make_adm_fixtures(gd_dir):
    """Key/shape lists of both implementations, and their outputs on the same (mapped) random weights."""
    import torch
    from diffusers import UNet2DModel

    gd = _interop_module("guided_diffusion")
    adm_to_diffusers, adm_unet_config, diffusers_to_adm = gd.adm_to_diffusers, gd.adm_unet_config, gd.diffusers_to_adm
    record = {}
    for name, flags in ADM_CONFIGS.items():
        tiny = name.startswith("tiny")
        with torch.device("cpu" if tiny else "meta"):
            adm = _adm_model(gd_dir, flags)
            config = adm_unet_config(flags)
            unet = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        entry = {"flags": flags,
                 "adm_shapes": {k: list(v.shape) for k, v in adm.state_dict().items()},
                 "diffusers_shapes": {k: list(v.shape) for k, v in unet.state_dict().items()}}
        if tiny:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():  # every weight random (ADM zero-initialises output convs)
                for p in unet.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            dif_state = {k: v.numpy() for k, v in unet.state_dict().items()}
            adm_state = diffusers_to_adm(flags, dif_state)
            adm.load_state_dict({k: torch.from_numpy(v) for k, v in adm_state.items()}, strict=True)
            _, back = adm_to_diffusers(flags, adm_state)
            assert all(np.array_equal(back[k], dif_state[k]) for k in dif_state) and set(back) == set(dif_state)
            x = torch.randn(2, adm.in_channels, 16, 16, generator=g)
            t = torch.tensor([3, 917])
            y = torch.tensor([5, 998]) if config["num_class_embeds"] else None
            with torch.no_grad():
                ref = adm(x, t, y=y) if y is not None else adm(x, t)
                out = unet(x, t, class_labels=y).sample
            entry["max_abs_diff_adm_vs_diffusers"] = float((ref - out).abs().max())
            entry["max_abs_output"] = float(ref.abs().max())
            print(name, entry["max_abs_diff_adm_vs_diffusers"], entry["max_abs_output"])
        record[name] = entry
    with open(os.path.join(ADM_DIR, "adm_keys.json"), "w") as f:
        f.write(_json_lines(record))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["torch", "adm", "vae"], default=None)
    parser.add_argument("--guided-diffusion", default=None, help="a guided-diffusion checkout (read only)")
    args = parser.parse_args()
    if args.only in (None, "torch"):
        make_torch_fixtures()
    if args.only in (None, "adm") and args.guided_diffusion:
        make_adm_fixtures(args.guided_diffusion)
    if args.only in (None, "vae"):
        make_vae_fixtures()
    print(json.dumps({"written": sorted(os.listdir(ADM_DIR)) + sorted(os.listdir(VAE_DIR))}))


def make_vae_fixtures():
    pass


if __name__ == "__main__":
    main()
