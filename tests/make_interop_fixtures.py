"""Write the diffusers fixtures of tests/test_interop_diffusers.py (run with PyTorch + diffusers installed).

    /work/refenv/bin/python tests/make_interop_fixtures.py

Writes, under tests/fixtures/diffusers/: tiny random ``UNet2DModel`` folders
(config.json + diffusion_pytorch_model.safetensors, weights rounded to float16
values so the files stay small, references computed in float32), a DDPM pipeline
folder (model_index.json, unet/, scheduler/), and reference.npz with the
networks' outputs and the DDIM loops' results from fixed inputs. Nothing here
is imported by the test suite.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "diffusers")

# name -> (UNet2DModel kwargs, image size)
MODELS = {
    # The google/ddpm-* family: one head of full width, downsample_padding 0, freq_shift 1, no flip.
    "ddpm_tiny": (dict(block_out_channels=(4, 8, 8), down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=2, attention_head_dim=None, downsample_padding=0, freq_shift=1,
                       flip_sin_to_cos=False, sample_size=8), 8),
    # Other sizes and options: in != out channels, multi-head, two layers, other groups and eps.
    "variant": (dict(in_channels=2, out_channels=4, block_out_channels=(6, 12), layers_per_block=2,
                     down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
                     norm_num_groups=3, attention_head_dim=3, norm_eps=1e-6, flip_sin_to_cos=True, freq_shift=0,
                     downsample_padding=1, center_input_sample=True, sample_size=8), 8),
    # ADM options: scale-shift norm, resnet resampling, class embedding, mid scale factor, two heads.
    "adm": (dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4,
                 resnet_time_scale_shift="scale_shift", downsample_type="resnet", upsample_type="resnet",
                 num_class_embeds=5, mid_block_scale_factor=1.5, sample_size=8), 8),
    # NCSN++: Fourier time features, skip blocks with FIR resampling, score / sigma.
    "ncsnpp": (dict(block_out_channels=(32, 32), layers_per_block=1, time_embedding_type="fourier",
                    down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                    up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), norm_num_groups=4, attention_head_dim=None,
                    mid_block_scale_factor=float(np.sqrt(2.0)), flip_sin_to_cos=True, sample_size=8), 8),
}

# DDIM loops on ddpm_tiny: name -> (scheduler kwargs, steps)
LOOPS = {
    "leading_clip": (dict(clip_sample=True), 10),
    "trailing_v": (dict(timestep_spacing="trailing", prediction_type="v_prediction", clip_sample=False), 10),
    "linspace_x0": (dict(timestep_spacing="linspace", prediction_type="sample", clip_sample=False), 7),
    "offset_scaled": (dict(steps_offset=1, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                           set_alpha_to_one=False, clip_sample=False), 10),
    "cosine": (dict(beta_schedule="squaredcos_cap_v2", clip_sample=False), 10),
}


def tiny_unet(kwargs, seed):
    torch.manual_seed(seed)
    model = UNet2DModel(**kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than default init so every layer matters; float16 values
            p.copy_((torch.randn_like(p) * 0.3).half().float())
    return model


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    ref = {}
    rng = np.random.default_rng(0)
    for i, (name, (kwargs, size)) in enumerate(MODELS.items()):
        model = tiny_unet(kwargs, i)
        model.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
        # float16 on disk: the values are float16 already, so the file holds them exactly.
        from safetensors.torch import load_file, save_file
        path = os.path.join(OUT, name, "diffusion_pytorch_model.safetensors")
        save_file({k: v.half() for k, v in load_file(path).items()}, path)
        cin = model.config.in_channels
        x = rng.standard_normal((2, cin, size, size)).astype(np.float32)
        t = np.array([0.5, 0.01], np.float32) if kwargs.get("time_embedding_type") == "fourier" else np.array([3, 917], np.int64)
        extra = {}
        if kwargs.get("num_class_embeds"):
            labels = np.array([1, 4], np.int64)
            extra["class_labels"] = torch.from_numpy(labels)
            ref[f"{name}/labels"] = labels
        with torch.no_grad():
            out = model(torch.from_numpy(x), torch.from_numpy(t), **extra).sample.numpy()
        ref[f"{name}/x"], ref[f"{name}/t"], ref[f"{name}/out"] = x, t, out

    # A DDPM pipeline folder like google/ddpm-cifar10-32, with ddpm_tiny as its UNet.
    pipe_dir = os.path.join(OUT, "ddpm_pipeline")
    shutil.copytree(os.path.join(OUT, "ddpm_tiny"), os.path.join(pipe_dir, "unet"))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")
    sched.save_pretrained(os.path.join(pipe_dir, "scheduler"))
    with open(os.path.join(pipe_dir, "model_index.json"), "w") as f:
        json.dump({"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
                   "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)
    unet = UNet2DModel.from_pretrained(os.path.join(pipe_dir, "unet")).eval()

    # DDIMPipeline at its defaults (50 steps, eta 0) from a fixed x_T: the pipeline's own __call__,
    # with its noise draw replaced by x_T.
    x_T = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    import diffusers.pipelines.ddim.pipeline_ddim as pipeline_ddim
    pipeline_ddim.randn_tensor = lambda *a, **k: torch.from_numpy(x_T.copy())
    pipe = DDIMPipeline(unet=unet, scheduler=DDPMScheduler.from_pretrained(os.path.join(pipe_dir, "scheduler")))
    images = pipe(batch_size=2, output_type="np").images
    ref["pipeline/x_T"], ref["pipeline/images"] = x_T, images

    # Raw DDIM loops (no clamp at the end) for the scheduler options.
    for name, (kwargs, steps) in LOOPS.items():
        s = DDIMScheduler(num_train_timesteps=1000, **kwargs)
        s.set_timesteps(steps)
        x = torch.from_numpy(x_T.copy())
        with torch.no_grad():
            for t in s.timesteps:
                x = s.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
        ref[f"loop/{name}"] = x.numpy()
        ref[f"loop/{name}/timesteps"] = s.timesteps.numpy()
        with open(os.path.join(OUT, f"loop_{name}.json"), "w") as f:
            json.dump({**dict(s.config), "num_inference_steps": steps}, f, indent=2)
    for sch, kw in {"linear": {}, "scaled_linear": dict(beta_start=0.00085, beta_end=0.012),
                    "squaredcos_cap_v2": {}}.items():
        ref[f"alphas_cumprod/{sch}"] = DDIMScheduler(beta_schedule=sch, **kw).alphas_cumprod.numpy()
    np.savez_compressed(os.path.join(OUT, "reference.npz"), **ref)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
