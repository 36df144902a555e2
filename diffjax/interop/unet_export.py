"""A diffjax :class:`~diffjax.nn.UNet` and its process as diffusers' ``UNet2DModel`` and scheduler configs.

The DDPM-family UNet of diffjax and diffusers' ``UNet2DModel`` compute the same
function when the diffjax options have a ``UNet2DModel`` equivalent: sinusoidal
time embedding on the step index (``flip_sin_to_cos=False``, ``freq_shift=1``),
one GroupNorm group count for every norm, no ``1/sqrt(2)`` rescale of the
residual sums, convolutional resampling (diffjax's ``SAME`` stride-2 padding is
``downsample_padding=0``), one attention head size over every attention site, no
class labels, condition images, cross-attention or augmentation level. Anything
else is refused with the option that cannot be expressed. Parameters change only
layout (NHWC kernels to PyTorch's) and names; the fused ``qkv`` projection is
split into ``to_q`` / ``to_k`` / ``to_v``.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from diffjax.nn.layers import group_count
from diffjax.nn.unet import UNetConfig
from diffjax.sde import DiscreteVPSDE

__all__ = ["unet2d_config", "unet2d_state_dict", "scheduler_config", "export_problem"]

_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def _norm_channels(cfg: UNetConfig) -> set[int]:
    """Channel counts of every GroupNorm of the UNet (residual inputs and outputs, attention, the output norm)."""
    nf, chans, skips = cfg.base_channels, set(), [cfg.base_channels]
    ch = nf
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            chans |= {ch, nf * mult}
            ch = nf * mult
            skips.append(ch)
        if level != len(cfg.channel_mult) - 1:
            skips.append(ch)
    for level in reversed(range(len(cfg.channel_mult))):
        for _ in range(cfg.num_res_blocks + 1):
            chans |= {ch + skips.pop(), nf * cfg.channel_mult[level]}
            ch = nf * cfg.channel_mult[level]
    return chans | {ch}


def _attention_channels(cfg: UNetConfig) -> set[int]:
    levels = {cfg.base_channels * m for r, m in zip(cfg.resolutions, cfg.channel_mult) if r in cfg.attn_resolutions}
    return levels | {cfg.base_channels * cfg.channel_mult[-1]}  # the middle block always attends


def export_problem(model_config, sde, *, prediction: str, time_input: str) -> str | None:
    """Why this network and process have no ``UNet2DModel`` + DDPM scheduler equivalent, or ``None``.

    Args:
      model_config: the run's network config (a :class:`~diffjax.nn.UNetConfig` to be exportable).
      sde: the run's forward process.
      prediction: ``config.model.prediction``.
      time_input: ``config.loss.time_input``.

    Returns:
      A sentence naming the config option that cannot be expressed, or ``None``.
    """
    if not isinstance(model_config, UNetConfig):
        return f"its network is a {type(model_config).__name__}, not a diffusion UNet (diffjax.nn.UNet)"
    cfg = model_config
    if not isinstance(sde, DiscreteVPSDE) or time_input != "index":
        return (f"sde {type(sde).__name__} with loss.time_input={time_input!r}: diffusers' DDPM / DDIM schedulers "
                "feed the step index of a discrete chain (sde.name='discrete', loss.time_input='index')")
    if prediction not in _PREDICTION_TYPES:
        return f"model.prediction={prediction!r}: a scheduler's prediction_type is one of {sorted(_PREDICTION_TYPES)}"
    checks = (
        (cfg.time_embedding != "sinusoidal", f"model.time_embedding={cfg.time_embedding!r}: UNet2DModel's Fourier "
                                              "embedding takes log(sigma); use 'sinusoidal'"),
        (cfg.time_scale != 1.0, f"model.time_scale={cfg.time_scale}: UNet2DModel embeds the step index as it is "
                                "(time_scale=1)"),
        (cfg.rescale_skip, "model.rescale_skip=True: UNet2DModel's down and up blocks add residuals without the "
                           "1/sqrt(2) rescale"),
        (not cfg.resample_with_conv, "model.resample_with_conv=False: UNet2DModel resamples with convolutions"),
        (cfg.num_classes > 0, f"model.num_classes={cfg.num_classes} (class labels, with diffjax's null label)"),
        (cfg.cond_channels > 0, f"model.cond_channels={cfg.cond_channels} (a conditioning image)"),
        (cfg.context_dim > 0, f"model.context_dim={cfg.context_dim} (cross-attention)"),
        (cfg.aug_level_embedding, "model.aug_level_embedding=True (a second conditioning scalar)"),
    )
    for bad, why in checks:
        if bad:
            return why
    groups = {c: group_count(c) for c in sorted(_norm_channels(cfg))}
    if len(set(groups.values())) > 1:
        return (f"GroupNorm group counts {groups} (channels: groups) differ between layers; UNet2DModel has one "
                "norm_num_groups: choose model.base_channels / channel_mult so every count is the same")
    attn = _attention_channels(cfg)
    if cfg.num_heads > 1 and len(attn) > 1:
        return (f"model.num_heads={cfg.num_heads} over attention sites of {sorted(attn)} channels: UNet2DModel has "
                "one attention_head_dim (use num_heads=1, or attention only where the channels are the same)")
    return None


def unet2d_config(cfg: UNetConfig) -> dict:
    """The ``UNet2DModel`` ``config.json`` dict computing what ``UNet(cfg)`` computes (check :func:`export_problem` first)."""
    levels = len(cfg.channel_mult)
    attn = [r in cfg.attn_resolutions for r in cfg.resolutions]
    heads_dim = None if cfg.num_heads == 1 else min(_attention_channels(cfg)) // cfg.num_heads
    return {
        "_class_name": "UNet2DModel", "sample_size": cfg.image_size, "in_channels": cfg.in_channels,
        "out_channels": cfg.output_channels, "center_input_sample": False, "time_embedding_type": "positional",
        "freq_shift": 1, "flip_sin_to_cos": False,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": [cfg.base_channels * m for m in cfg.channel_mult],
        "layers_per_block": cfg.num_res_blocks, "mid_block_scale_factor": 1, "downsample_padding": 0,
        "downsample_type": "conv", "upsample_type": "conv", "dropout": float(cfg.dropout), "act_fn": "silu",
        "attention_head_dim": heads_dim, "norm_num_groups": group_count(cfg.base_channels), "norm_eps": 1e-6, "resnet_time_scale_shift": "default", "add_attention": True,
    }


def _linear(state, prefix, kernel, bias):
    state[f"{prefix}.weight"] = np.asarray(kernel, np.float32).T
    state[f"{prefix}.bias"] = np.asarray(bias, np.float32)


def _module_state(state: dict, prefix: str, module: nnx.Module) -> None:
    """Copy one diffjax block's parameters into ``state`` under diffusers' name ``prefix``."""
    from diffjax.nn.layers import AttentionBlock, GroupNorm, ResBlock

    if isinstance(module, nnx.Conv):
        state[f"{prefix}.weight"] = np.transpose(np.asarray(module.kernel[...], np.float32), (3, 2, 0, 1))
        state[f"{prefix}.bias"] = np.asarray(module.bias[...], np.float32)
    elif isinstance(module, nnx.Linear):
        _linear(state, prefix, module.kernel[...], module.bias[...])
    elif isinstance(module, GroupNorm):
        state[f"{prefix}.weight"] = np.asarray(module.scale[...], np.float32)
        state[f"{prefix}.bias"] = np.asarray(module.bias[...], np.float32)
    elif isinstance(module, ResBlock):
        for ours, theirs in (("norm1", "norm1"), ("conv1", "conv1"), ("emb_proj", "time_emb_proj"),
                             ("norm2", "norm2"), ("conv2", "conv2"), ("skip", "conv_shortcut")):
            if getattr(module, ours) is not None:
                _module_state(state, f"{prefix}.{theirs}", getattr(module, ours))
    elif isinstance(module, AttentionBlock):
        _module_state(state, f"{prefix}.group_norm", module.norm)
        kernel, bias = np.asarray(module.qkv.kernel[...]), np.asarray(module.qkv.bias[...])
        ch = kernel.shape[0]
        for i, name in enumerate(("to_q", "to_k", "to_v")):
            _linear(state, f"{prefix}.{name}", kernel[:, i * ch:(i + 1) * ch], bias[i * ch:(i + 1) * ch])
        _module_state(state, f"{prefix}.to_out.0", module.out)
    else:
        raise ValueError(f"{prefix}: no UNet2DModel equivalent for {type(module).__name__}")


def unet2d_state_dict(model) -> dict[str, np.ndarray]:
    """The ``UNet2DModel`` state dict (``{key: float32 numpy}``, PyTorch layouts) of a diffjax ``UNet``."""
    cfg, state = model.config, {}
    nrb, levels = cfg.num_res_blocks, len(cfg.channel_mult)
    _module_state(state, "conv_in", model.conv_in)
    _module_state(state, "time_embedding.linear_1", model.emb_in)
    _module_state(state, "time_embedding.linear_2", model.emb_out)
    # Down level i has nrb blocks, up block i (from the middle) nrb + 1; each ends in a resampler but the last.
    for side, blocks, per, resamplers, name in (("down", model.down, nrb, model.downsamplers, "downsamplers"),
                                                ("up", model.up, nrb + 1, model.upsamplers, "upsamplers")):
        for i in range(levels):
            for j in range(per):
                block = blocks[i * per + j]
                _module_state(state, f"{side}_blocks.{i}.resnets.{j}", block.res)
                if block.attn is not None:
                    _module_state(state, f"{side}_blocks.{i}.attentions.{j}", block.attn)
            if i != levels - 1:
                _module_state(state, f"{side}_blocks.{i}.{name}.0.conv", resamplers[i].conv)
        if side == "down":
            _module_state(state, "mid_block.resnets.0", model.mid_res1)
            _module_state(state, "mid_block.attentions.0", model.mid_attn)
            _module_state(state, "mid_block.resnets.1", model.mid_res2)
    _module_state(state, "conv_norm_out", model.norm_out)
    _module_state(state, "conv_out", model.conv_out)
    return state


def scheduler_config(sde: DiscreteVPSDE, *, prediction: str, clip_x0: float = 0.0, steps_offset: int = 0,
                     spacing: str = "leading") -> dict:
    """The ``DDPMScheduler`` config of a :class:`~diffjax.sde.DiscreteVPSDE` (the chain diffusers samples)."""
    return {"_class_name": "DDPMScheduler", "num_train_timesteps": int(sde.num_steps),
            "beta_start": float(sde.beta_start), "beta_end": float(sde.beta_end),
            "beta_schedule": sde.beta_schedule, "prediction_type": _PREDICTION_TYPES[prediction],
            "variance_type": "fixed_small", "clip_sample": clip_x0 > 0, "clip_sample_range": float(clip_x0 or 1.0),
            "steps_offset": int(steps_offset), "timestep_spacing": spacing, "trained_betas": None,
            "thresholding": False}
