"""Write the diffusers fixtures of tests/test_interop_diffusers.py (run with PyTorch + diffusers installed).

    /work/refenv/bin/python tests/make_interop_fixtures.py [--only unet|ldm|sdeve]

Writes, under tests/fixtures/diffusers/: tiny random ``UNet2DModel`` folders
(config.json + diffusion_pytorch_model.safetensors, weights rounded to float16
values so the files stay small, references computed in float32), a DDPM pipeline
folder (model_index.json, unet/, scheduler/), and reference.npz with the
networks' outputs and the DDIM loops' results from fixed inputs. Nothing here
is imported by the test suite.

``--only ldm`` writes tests/fixtures/diffusers_ldm/: an ``LDMPipeline`` and an
``LDMSuperResolutionPipeline`` folder (tiny UNets, the tiny VQModel of
tests/fixtures/interop_vae/vq_tiny, DDIM schedulers) and what the pipelines
compute from fixed latents. ``--only sdeve`` writes tests/fixtures/diffusers_sdeve/:
a ``ScoreSdeVePipeline`` folder and its loop's output given injected noise.
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


LDM_OUT = os.path.join(os.path.dirname(OUT), "diffusers_ldm")
VQ_TINY = os.path.join(os.path.dirname(OUT), "interop_vae", "vq_tiny")
# LDMPipeline's UNet sees the 3 latent channels; the super-resolution one also the low-resolution image.
LDM_UNETS = {
    "ldm_pipeline": dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                         norm_num_groups=4, attention_head_dim=4, sample_size=8),
    "ldm_sr_pipeline": dict(in_channels=6, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
                            sample_size=8),
}


def _pipeline_folder(folder, pipeline, components, unet_kwargs, seed, scheduler, unet_dir=None):
    """model_index.json, unet/ (random float16-exact weights, or a copy of unet_dir), the tiny VQModel as vqvae/,
    scheduler/."""
    from safetensors.torch import load_file, save_file

    os.makedirs(folder)
    if unet_dir is not None:  # the same bytes: git stores the file once
        shutil.copytree(unet_dir, os.path.join(folder, "unet"))
    else:
        unet = tiny_unet(unet_kwargs, seed)
        unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
        path = os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
        save_file({k: v.half() for k, v in load_file(path).items()}, path)
    if "vqvae" in components:
        os.makedirs(os.path.join(folder, "vqvae"))
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copy(os.path.join(VQ_TINY, name), os.path.join(folder, "vqvae", name))
    scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": pipeline, "_diffusers_version": "0.42.1", **components}, f, indent=2)


def _record_decode(vqvae, ref, name):
    """Wrap vqvae.decode so the latents the pipeline decodes (after its loop) and the raw decoder output are kept."""
    decode = vqvae.decode

    def recording(z, *args, **kwargs):
        out = decode(z, *args, **kwargs)
        ref[f"{name}/latents"], ref[f"{name}/decoded"] = z.numpy(), out.sample.numpy()
        return out

    vqvae.decode = recording


def make_ldm_fixtures():
    """LDMPipeline and LDMSuperResolutionPipeline folders and their outputs from fixed latents (defaults: 50 / 100 DDIM steps)."""
    import diffusers.pipelines.deprecated.latent_diffusion_uncond.pipeline_latent_diffusion_uncond as ldm_uncond
    import diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution as ldm_sr
    from diffusers import LDMPipeline, LDMSuperResolutionPipeline, VQModel

    if os.path.isdir(LDM_OUT):
        shutil.rmtree(LDM_OUT)
    components = {"unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"],
                  "scheduler": ["diffusers", "DDIMScheduler"]}
    rng = np.random.default_rng(3)
    ref = {}
    # CompVis/ldm-celebahq-256's scheduler: scaled_linear 0.0015..0.0195, no clipping.
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False)
    for i, (name, cls, module) in enumerate([("ldm_pipeline", LDMPipeline, ldm_uncond),
                                             ("ldm_sr_pipeline", LDMSuperResolutionPipeline, ldm_sr)]):
        folder = os.path.join(LDM_OUT, name)
        _pipeline_folder(folder, cls.__name__, components, LDM_UNETS[name], 10 + i, sched)
        pipe = cls(vqvae=VQModel.from_pretrained(os.path.join(folder, "vqvae")).eval(),
                   unet=UNet2DModel.from_pretrained(os.path.join(folder, "unet")).eval(),
                   scheduler=DDIMScheduler.from_pretrained(os.path.join(folder, "scheduler")))
        x_T = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        module.randn_tensor = lambda *a, **k: torch.from_numpy(x_T.copy())
        _record_decode(pipe.vqvae, ref, name)
        ref[f"{name}/x_T"] = x_T
        if cls is LDMPipeline:
            images = pipe(batch_size=2, output_type="np").images
        else:
            low = (rng.uniform(size=(2, 3, 8, 8)) * 2 - 1).astype(np.float32)
            ref[f"{name}/low_res"] = low
            images = pipe(torch.from_numpy(low), output_type="np").images
        ref[f"{name}/images"] = images
    np.savez_compressed(os.path.join(LDM_OUT, "reference.npz"), **ref)
    print("wrote", LDM_OUT)


SDEVE_OUT = os.path.join(os.path.dirname(OUT), "diffusers_sdeve")


def make_sdeve_fixtures(steps: int = 6):
    """A ScoreSdeVePipeline folder (the tiny NCSN++ UNet) and its predictor-corrector loop from a fixed x_T.

    Every noise draw of the loop (per step: the corrector's, then the predictor's) is taken from
    ``noise`` in order, so a test can replay the same draws; ``sample_mean`` is the last predictor
    mean before the pipeline's clamp to [0, 1].
    """
    import diffusers.pipelines.deprecated.score_sde_ve.pipeline_score_sde_ve as sde_pipeline
    import diffusers.schedulers.scheduling_sde_ve as scheduling_sde_ve
    from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler

    if os.path.isdir(SDEVE_OUT):
        shutil.rmtree(SDEVE_OUT)
    folder = os.path.join(SDEVE_OUT, "sdeve_pipeline")
    kwargs, size = MODELS["ncsnpp"]
    # sigma_max small enough that the random network's score keeps the chain O(1).
    sched = ScoreSdeVeScheduler(num_train_timesteps=2000, snr=0.15, sigma_min=0.01, sigma_max=3.0, sampling_eps=1e-5)
    _pipeline_folder(folder, "ScoreSdeVePipeline", {"unet": ["diffusers", "UNet2DModel"],
                                                    "scheduler": ["diffusers", "ScoreSdeVeScheduler"]},
                     kwargs, 20, sched, unet_dir=os.path.join(OUT, "ncsnpp"))  # the NCSN++ of the UNet fixtures
    rng = np.random.default_rng(4)
    x_T = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    noise = rng.standard_normal((steps, 2, 2, 3, size, size)).astype(np.float32)
    draws = [torch.from_numpy(n) for n in noise.reshape(-1, 2, 3, size, size)]
    sde_pipeline.randn_tensor = lambda *a, **k: torch.from_numpy(x_T.copy())
    scheduling_sde_ve.randn_tensor = lambda *a, **k: draws.pop(0)
    pipe = ScoreSdeVePipeline(unet=UNet2DModel.from_pretrained(os.path.join(folder, "unet")).eval(),
                              scheduler=ScoreSdeVeScheduler.from_pretrained(os.path.join(folder, "scheduler")))
    step_pred, means = pipe.scheduler.step_pred, []

    def recording(*args, **kwargs):
        out = step_pred(*args, **kwargs)
        means.append(out.prev_sample_mean.numpy())
        return out

    pipe.scheduler.step_pred = recording
    images = pipe(batch_size=2, num_inference_steps=steps, output_type="np").images
    assert not draws, "the loop drew fewer noises than expected"
    np.savez_compressed(os.path.join(SDEVE_OUT, "reference.npz"), x_T=x_T, noise=noise, images=images,
                        sample_mean=means[-1], steps=steps)
    print("wrote", SDEVE_OUT)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["unet", "ldm", "sdeve"], default=None)
    only = parser.parse_args().only
    if only in (None, "unet"):
        main()
    if only in (None, "ldm"):
        make_ldm_fixtures()
    if only in (None, "sdeve"):
        make_sdeve_fixtures()
