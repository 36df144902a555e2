"""Write the small PyTorch / diffusers fixtures of tests/test_interop_adm.py and tests/test_interop_vae.py.

Needs torch, diffusers and safetensors (``pip install -e .[interop-test]``); the
tests themselves read only the committed files. Run from the repository root::

    python benchmarks/make_interop_fixtures.py [--only torch|adm|adm-ext|vae] [--guided-diffusion DIR]

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
    # guided-diffusion saves nn.Parameter objects (torch._utils._rebuild_parameter), not plain tensors
    torch.save({"state_dict": {"layer": {"w": state["f32"], "p": torch.nn.Parameter(state["f64"].float())}},
                "epoch": 3, "name": "x"},
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
                       "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True "
                       "--use_new_attention_order True "
                       "--use_fp16 True --use_scale_shift_norm True",
    "sr128_512": "--attention_resolutions 32,16 --class_cond True --diffusion_steps 1000 --large_size 512 "
                 "--small_size 128 --learn_sigma True --noise_schedule linear --num_channels 192 "
                 "--num_head_channels 64 "
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
    mult = [float(m) for m in f["channel_mult"].split(",")] if f["channel_mult"] else []
    if any(m != int(m) for m in mult):
        # create_model parses the flag as integers (only its 512 size table holds 0.5): pass the tuple
        # to its UNetModel call directly, every other argument as create_model builds it.
        import guided_diffusion.script_util as script_util

        real = script_util.UNetModel
        script_util.UNetModel = lambda **kw: real(**{**kw, "channel_mult": tuple(mult)})
        try:
            return create_model(**{**{k: f[k] for k in keys}, "channel_mult": ",".join("1" for _ in mult)})
        finally:
            script_util.UNetModel = real
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


def adm_numpy_weights(shapes: dict, seed: int = 0) -> dict:
    """Weights any test can rebuild from the committed key/shape list: NumPy's PCG64, fixed seed."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in shapes.items()}


def _adm_reference_outputs(name, adm, shapes, class_cond):
    """guided-diffusion's own output (NHWC) for NumPy-seeded weights and inputs, for end-to-end tests."""
    import torch

    adm.load_state_dict({k: torch.from_numpy(v) for k, v in adm_numpy_weights(shapes).items()}, strict=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 16, adm.in_channels)).astype(np.float32)
    t = np.array([3, 917])
    y = np.array([5, 998]) if class_cond else None
    with torch.no_grad():
        args = (torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t))
        # UNetModel.forward on the concatenated input: a SuperResModel's own forward would upsample a
        # low_res argument first; diffjax's mapping leaves that concatenation to the caller.
        from guided_diffusion.unet import UNetModel

        out = UNetModel.forward(adm, *args, y=torch.from_numpy(y) if class_cond else None)
    ref = {f"{name}/x": x, f"{name}/t": t, f"{name}/out": out.permute(0, 2, 3, 1).numpy()}
    if class_cond:
        ref[f"{name}/y"] = y
    return ref


def make_adm_fixtures(gd_dir):
    """Key/shape lists of both implementations, and their outputs on the same (mapped) random weights."""
    import torch
    from diffusers import UNet2DModel

    gd = _interop_module("guided_diffusion")
    adm_to_diffusers, adm_unet_config, diffusers_to_adm = gd.adm_to_diffusers, gd.adm_unet_config, gd.diffusers_to_adm
    record, outputs = {}, {}
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
            outputs.update(_adm_reference_outputs(name, adm, entry["adm_shapes"], y is not None))
        record[name] = entry
    np.savez_compressed(os.path.join(ADM_DIR, "adm_outputs.npz"), **outputs)
    with open(os.path.join(ADM_DIR, "adm_keys.json"), "w") as f:
        f.write(_json_lines(record))


#: ADM layouts UNet2DModel cannot express (loaded through diffjax's config extensions): the published
#: 128x128, 64 -> 256 and 512x512 models (key/shape lists only) and small ones with outputs.
ADM_EXT_CONFIGS = {
    "imagenet128_cond": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
                        "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 "
                        "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "upsample64_256": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --large_size 256 "
                      "--small_size 64 --learn_sigma True --noise_schedule linear --num_channels 192 --num_heads 4 "
                      "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "imagenet512_cond": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 "
                        "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
                        "--num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True",
    "tiny_fixed_heads": "--image_size 16 --num_channels 32 --channel_mult 1,2,3 --num_res_blocks 1 "
                        "--attention_resolutions 8,4 --num_heads 4 --class_cond True --learn_sigma True "
                        "--resblock_updown True --use_scale_shift_norm True",
    "tiny_sr_fixed_heads": "--large_size 64 --small_size 16 --num_channels 32 --num_res_blocks 1 "
                           "--attention_resolutions 16,8 --num_heads 4 --learn_sigma True --resblock_updown True "
                           "--use_scale_shift_norm True",
    "tiny_half_mult": "--image_size 16 --num_channels 64 --channel_mult 0.5,1,2 --num_res_blocks 1 "
                      "--attention_resolutions 8 --num_head_channels 32 --resblock_updown True "
                      "--use_scale_shift_norm True",
}


def make_adm_ext_fixtures(gd_dir):
    """Key/shape lists (adm_ext_keys.json) and guided-diffusion's outputs on NumPy-seeded weights
    (adm_ext_outputs.npz) for ADM_EXT_CONFIGS; diffusers cannot build these, so only ADM's side is stored."""
    import torch

    record, outputs = {}, {}
    for name, flags in ADM_EXT_CONFIGS.items():
        tiny = name.startswith("tiny")
        with torch.device("cpu" if tiny else "meta"):
            adm = _adm_model(gd_dir, flags)
        entry = {"flags": flags, "adm_shapes": {k: list(v.shape) for k, v in adm.state_dict().items()}}
        if tiny:
            class_cond = "--class_cond True" in flags
            outputs.update(_adm_reference_outputs(name, adm, entry["adm_shapes"], class_cond))
            if "--large_size" in flags:  # SuperResModel's own forward: bilinear upsampling, then concatenation
                rng = np.random.default_rng(2)
                x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
                low = rng.uniform(-1, 1, (2, 3, 4, 4)).astype(np.float32)
                with torch.no_grad():
                    out = adm(torch.from_numpy(x), torch.tensor([3, 917]), low_res=torch.from_numpy(low))
                outputs.update({f"{name}/sr_x": x.transpose(0, 2, 3, 1), f"{name}/sr_low": low.transpose(0, 2, 3, 1),
                                f"{name}/sr_out": out.permute(0, 2, 3, 1).numpy()})
            print(name, float(np.abs(outputs[f"{name}/out"]).max()))
        record[name] = entry
    np.savez_compressed(os.path.join(ADM_DIR, "adm_ext_outputs.npz"), **outputs)
    with open(os.path.join(ADM_DIR, "adm_ext_keys.json"), "w") as f:
        f.write(_json_lines(record))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["torch", "adm", "adm-ext", "vae"], default=None)
    parser.add_argument("--guided-diffusion", default=None, help="a guided-diffusion checkout (read only)")
    parser.add_argument("--ldm-sr-vq", default=None, metavar="DIR",
                        help="also write the published-size LDM super-resolution VQModel (random weights, ~110 MB) "
                             "to DIR, for benchmarks/vae_parity.py")
    args = parser.parse_args()
    if args.only in (None, "torch"):
        make_torch_fixtures()
    if args.only in (None, "adm") and args.guided_diffusion:
        make_adm_fixtures(args.guided_diffusion)
    if args.only in (None, "adm-ext") and args.guided_diffusion:
        make_adm_ext_fixtures(args.guided_diffusion)
    if args.only in (None, "vae"):
        make_vae_fixtures()
    if args.ldm_sr_vq:
        make_vae("ldm_sr_vq", args.ldm_sr_vq, size=64, batch=1)
    print(json.dumps({"written": sorted(os.listdir(ADM_DIR)) + sorted(os.listdir(VAE_DIR))}))


#: Tiny first stages for the default suite (4 groups so that 8/16 channels stay small), and
#: the LDM super-resolution VQModel at its published configuration (CompVis/ldm-super-resolution-4x-openimages).
VAE_CONFIGS = {
    "vq_tiny": {"_class_name": "VQModel", "block_out_channels": [8, 16], "norm_num_groups": 4,
                "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
                "layers_per_block": 1, "latent_channels": 3, "num_vq_embeddings": 32, "vq_embed_dim": 3,
                "sample_size": 16, "scaling_factor": 0.7},
    "kl_tiny": {"_class_name": "AutoencoderKL", "block_out_channels": [8, 16, 16], "norm_num_groups": 4,
                "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
                "layers_per_block": 1, "latent_channels": 4, "sample_size": 16, "scaling_factor": 0.5,
                "shift_factor": 0.1},
    "ldm_sr_vq": {"_class_name": "VQModel", "block_out_channels": [128, 256, 512],
                  "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
                  "in_channels": 3, "out_channels": 3, "latent_channels": 3, "layers_per_block": 2,
                  "num_vq_embeddings": 8192, "sample_size": 256, "act_fn": "silu"},
}


def _nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def make_vae(name, folder, size=16, batch=2):
    """Write config.json, float16-exact safetensors weights and diffusers' outputs (reference.npz) to folder."""
    import torch
    from diffusers import AutoencoderKL, VQModel
    from safetensors.torch import save_file

    config = VAE_CONFIGS[name]
    cls = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}[config["_class_name"]]
    model = cls(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere, rounded to float16 so the half-size file is exact
        for n, p in model.named_parameters():
            scale = 0.3 if p.ndim <= 1 else 1.0 / float(np.sqrt(p[0].numel()))  # keep activations O(1)
            offset = 1.0 if "norm" in n and n.endswith("weight") else 0.0  # GroupNorm gains near 1
            p.copy_((torch.randn(p.shape, generator=g) * scale + offset).half().float())
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)  # config.json exactly as diffusers writes it (every key, with its version)
    weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, weights)
    os.chmod(weights, 0o644)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    ref = {"images": _nhwc(x)}
    with torch.no_grad():
        if cls is VQModel:
            h = model.encode(x).latents
            _, _, (_, _, idx) = model.quantize(h)
            ref.update(latents=_nhwc(h), indices=idx.reshape(h.shape[0], h.shape[2], h.shape[3]).numpy(),
                       decoded=_nhwc(model.decode(h).sample),
                       decoded_not_quantized=_nhwc(model.decode(h, force_not_quantize=True).sample))
        else:
            post = model.encode(x).latent_dist
            ref.update(mean=_nhwc(post.mean), logvar=_nhwc(post.logvar), decoded=_nhwc(model.decode(post.mean).sample))
    np.savez_compressed(os.path.join(folder, "reference.npz"), **ref)


def make_vae_fixtures():
    import torch
    from diffusers import VQModel

    for name in ("vq_tiny", "kl_tiny"):
        make_vae(name, os.path.join(VAE_DIR, name))
    # The published LDM-SR first stage: its config and diffusers' key/shape list (weights are 110 MB).
    config = VAE_CONFIGS["ldm_sr_vq"]
    with torch.device("meta"):
        model = VQModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    with open(os.path.join(VAE_DIR, "ldm_sr_vq_shapes.json"), "w") as f:
        json.dump({"config": config, "shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}, f, indent=0)


if __name__ == "__main__":
    main()
