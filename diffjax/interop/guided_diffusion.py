"""guided-diffusion (ADM, Dhariwal & Nichol 2021) checkpoints as diffusers ``UNet2DModel`` weights.

ADM's ``UNetModel`` is the architecture diffusers' ``UNet2DModel`` was modelled on;
with ``resnet_time_scale_shift="scale_shift"`` (FiLM conditioning), ResNet
up/down-sampling blocks, one ``attention_head_dim`` and group-normed attention
everywhere (``attn_norm_num_groups=32``), the two compute the same function.
This module

* parses ADM's model flags (a dict, or the ``--flag value`` string its
  repositories print) with ADM's own defaults (:func:`parse_adm_flags`);
* maps them to a ``UNet2DModel`` config dict and a ``DDPMScheduler`` config dict
  (:func:`adm_unet_config`, :func:`adm_scheduler_config`);
* renames and reshapes the state dict, splitting each fused ``qkv`` 1x1
  convolution into ``to_q`` / ``to_k`` / ``to_v`` in both of ADM's head orders
  (:func:`adm_to_diffusers`, and its inverse :func:`diffusers_to_adm`);
* gives the ancestral step ADM's learned variance (:func:`learned_range_log_variance`,
  :func:`adm_ancestral_step`).

Two ADM layouts ``UNet2DModel`` cannot express load through diffjax's own
config keys (:mod:`diffjax.nn.diffusers_unet`): a fixed head count that gives
different head widths at different levels (the 128x128 and 64 -> 256 models,
``num_heads=4``: ``diffjax_attention_heads``) and ``channel_mult`` starting
below 1 (the 512x512 model: ADM's timestep features are ``num_channels`` wide:
``diffjax_time_proj_dim`` and ``time_embedding_dim``). Such a config is not a
diffusers ``UNet2DModel``. Refused with the reason: ``num_heads_upsample``
different from ``num_heads``, and ``rescale_timesteps`` with ``diffusion_steps !=
1000``. The super-resolution model (flags ``large_size`` / ``small_size``) maps
to a 6-channel-input UNet; its caller concatenates the bilinearly upsampled
low-resolution image to ``x_t`` (channels last) as ADM's ``SuperResModel`` does.
The noisy-image classifier (``EncoderUNetModel``) is not mapped.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import numpy as np

__all__ = [
    "ADM_DEFAULTS",
    "parse_adm_flags",
    "adm_unet_config",
    "adm_scheduler_config",
    "adm_key_pairs",
    "adm_to_diffusers",
    "diffusers_to_adm",
    "learned_range_log_variance",
    "adm_ancestral_step",
    "adm_alphas_cumprod",
    "convert_adm_checkpoint",
]

#: ADM's defaults (guided_diffusion/script_util.py: model_and_diffusion_defaults), as typed values.
ADM_DEFAULTS = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_checkpoint": False, "use_scale_shift_norm": True, "resblock_updown": False,
    "use_fp16": False, "use_new_attention_order": False, "learn_sigma": False, "diffusion_steps": 1000,
    "noise_schedule": "linear", "timestep_respacing": "", "use_kl": False, "predict_xstart": False,
    "rescale_timesteps": False, "rescale_learned_sigmas": False,
    # super-resolution models only (sr_model_and_diffusion_defaults); 0 = not a super-resolution model
    "large_size": 0, "small_size": 0,
}

#: Flags of guided-diffusion's sampling and classifier scripts: accepted in a pasted flag string, not used.
IGNORED_FLAGS = frozenset({
    "batch_size", "num_samples", "use_ddim", "clip_denoised", "model_path", "classifier_path", "classifier_scale",
    "classifier_use_fp16", "classifier_width", "classifier_depth", "classifier_attention_resolutions",
    "classifier_use_scale_shift_norm", "classifier_resblock_updown", "classifier_pool", "base_samples",
})

#: Image-size -> channel_mult when the flag is empty (ADM's create_model / sr_create_model tables).
_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
_SR_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}
_NUM_CLASSES = 1000  # ADM's class-conditional models are ImageNet models
_GROUPS = 32  # ADM's normalization(): GroupNorm(32, channels), eps 1e-5


def _to_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError(f"ADM flag {name} must be a boolean (True/False), got {value!r}")


def parse_adm_flags(flags: str | Mapping) -> dict:
    """ADM model and diffusion flags, with ADM's defaults filled in and values typed.

    Args:
      flags: a dict ``{"image_size": 256, ...}`` or the flag string printed by
        guided-diffusion's README, e.g. ``"--attention_resolutions 32,16,8
        --class_cond False --image_size 256 --learn_sigma True ..."``
        (``--flag=value`` also accepted). The sampling and classifier flags of
        its scripts (:data:`IGNORED_FLAGS`) are accepted and dropped.

    Returns:
      A dict with every key of :data:`ADM_DEFAULTS`, typed as the default is.

    Raises:
      ValueError: an unknown flag, a value of the wrong type, a dangling flag.
    """
    if isinstance(flags, str):
        tokens = shlex.split(flags)
        parsed, i = {}, 0
        while i < len(tokens):
            token = tokens[i]
            if not token.startswith("--"):
                raise ValueError(f"expected a --flag in the ADM flag string, got {token!r}")
            if "=" in token:
                name, value = token[2:].split("=", 1)
                i += 1
            else:
                if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                    raise ValueError(f"ADM flag {token} has no value")
                name, value = token[2:], tokens[i + 1]
                i += 2
            parsed[name] = value
        flags = parsed
    if not isinstance(flags, Mapping):
        raise ValueError(f"ADM flags must be a dict or a flag string, got {type(flags).__name__}")
    flags = {k: v for k, v in flags.items() if k not in IGNORED_FLAGS}
    unknown = sorted(set(flags) - set(ADM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown ADM flags {unknown}; known: {sorted(ADM_DEFAULTS)}")
    out = dict(ADM_DEFAULTS)
    for name, value in flags.items():
        default = ADM_DEFAULTS[name]
        try:
            if isinstance(default, bool):
                out[name] = _to_bool(name, value)
            elif isinstance(default, int):
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                out[name] = int(float(value))
            elif isinstance(default, float):
                out[name] = float(value)
            else:
                out[name] = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        except (TypeError, ValueError):
            raise ValueError(f"ADM flag {name} must be {type(default).__name__}, got {value!r}") from None
    return out


def _structure(f: dict) -> dict:
    """Channel multipliers, attention levels, heads and input channels of an ADM model."""
    super_res = f["large_size"] > 0
    size = f["large_size"] if super_res else f["image_size"]
    if f["channel_mult"] and not super_res:
        mult = tuple(float(m) for m in f["channel_mult"].split(","))
    else:
        table = _SR_CHANNEL_MULT if super_res else _CHANNEL_MULT
        if size not in table:
            raise ValueError(f"ADM has no default channel_mult for image size {size} (known: {sorted(table)}); "
                             "give --channel_mult")
        mult = table[size]
    channels = [int(m * f["num_channels"]) for m in mult]
    if any(c % _GROUPS for c in channels):
        raise ValueError(f"ADM's GroupNorm(32) needs channels divisible by 32, got {channels}")
    resolutions = [r for r in f["attention_resolutions"].split(",") if r.strip()]
    attn_ds = {size // int(r) for r in resolutions}
    attn_levels = [2**level in attn_ds for level in range(len(mult))]
    if f["num_head_channels"] != -1:
        head_dim = f["num_head_channels"]
        attn_channels = [c for c, a in zip(channels, attn_levels) if a] + [channels[-1]]
        bad = [c for c in attn_channels if c % head_dim]
        if bad:
            raise ValueError(f"num_head_channels {head_dim} does not divide attention channels {bad}")
    heads = None
    if f["num_head_channels"] == -1:
        heads_up = f["num_heads"] if f["num_heads_upsample"] == -1 else f["num_heads_upsample"]
        if heads_up != f["num_heads"]:
            raise ValueError(f"num_heads_upsample {heads_up} != num_heads {f['num_heads']}: UNet2DModel uses "
                             "one head layout for the whole network")
        attn_channels = {c for c, a in zip(channels, attn_levels) if a} | {channels[-1]}
        if any(c % f["num_heads"] for c in attn_channels):
            raise ValueError(f"num_heads {f['num_heads']} does not divide attention channels {sorted(attn_channels)}")
        widths = {c // f["num_heads"] for c in attn_channels}
        if f["num_heads"] == 1:
            head_dim = None  # one head, as wide as each layer: UNet2DModel's attention_head_dim=None
        elif len(widths) == 1:
            head_dim = widths.pop()  # one head width everywhere: plain UNet2DModel
        else:  # different widths per level (ADM 128, 64 -> 256): a fixed head count, diffjax's extension
            head_dim, heads = None, f["num_heads"]
    if f["rescale_timesteps"] and f["diffusion_steps"] != 1000:
        raise ValueError("rescale_timesteps with diffusion_steps != 1000 feeds the network t * 1000 / N, "
                         "which UNet2DModel's timestep input does not do")
    return {"channels": channels, "attn_levels": attn_levels, "head_dim": head_dim, "heads": heads, "size": size,
            "in_channels": 6 if super_res else 3, "half_width_input": mult[0] != 1}


def adm_unet_config(flags: str | Mapping) -> dict:
    """The diffusers ``UNet2DModel`` config (as in its ``config.json``) of an ADM model.

    Args:
      flags: ADM flags (see :func:`parse_adm_flags`).

    Returns:
      A config dict with ``"_class_name": "UNet2DModel"``.

    Raises:
      ValueError: the flags describe a model ``UNet2DModel`` cannot express (see module docs).
    """
    f = parse_adm_flags(flags)
    s = _structure(f)
    updown = f["resblock_updown"]
    down = [("AttnDownBlock2D" if a else ("ResnetDownsampleBlock2D" if updown else "DownBlock2D"))
            for a in s["attn_levels"]]
    up = [("AttnUpBlock2D" if a else ("ResnetUpsampleBlock2D" if updown else "UpBlock2D"))
          for a in reversed(s["attn_levels"])]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": s["size"],
        "in_channels": s["in_channels"],
        "out_channels": 6 if f["learn_sigma"] else 3,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": 0,
        "flip_sin_to_cos": True,  # ADM's timestep_embedding is [cos, sin]
        "down_block_types": down,
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": up,
        "block_out_channels": s["channels"],
        "layers_per_block": f["num_res_blocks"],
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "resnet" if updown else "conv",
        "upsample_type": "resnet" if updown else "conv",
        "dropout": 0.0,
        "act_fn": "silu",
        "attention_head_dim": s["head_dim"],
        "norm_num_groups": _GROUPS,
        "attn_norm_num_groups": _GROUPS,  # ADM norms every attention input, the middle one included
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift" if f["use_scale_shift_norm"] else "default",
        "add_attention": True,
        "class_embed_type": None,
        "num_class_embeds": _NUM_CLASSES if f["class_cond"] else None,
        **_extensions(f, s),
    }


def _extensions(f: dict, s: dict) -> dict:
    """diffjax's config keys for what UNet2DModel cannot express (none for the models it can)."""
    out = {}
    if s["heads"] is not None:
        out["diffjax_attention_heads"] = s["heads"]
    if s["half_width_input"]:  # channel_mult[0] != 1: ADM's time features stay num_channels wide
        out.update(time_embedding_dim=4 * f["num_channels"], diffjax_time_proj_dim=f["num_channels"])
    return out


def adm_scheduler_config(flags: str | Mapping) -> dict:
    """The diffusers ``DDPMScheduler`` config of an ADM model's diffusion flags.

    ADM's ``linear`` schedule is ``linspace(1e-4 * 1000 / N, 0.02 * 1000 / N, N)``
    (diffusers' ``linear`` with those end points); its ``cosine`` schedule is
    diffusers' ``squaredcos_cap_v2``. ``learn_sigma`` gives ``variance_type=
    "learned_range"`` (the network's last 3 channels; see
    :func:`learned_range_log_variance` for ADM's exact formula), otherwise ADM's
    ``fixed_large``. ADM clips ``x0`` to [-1, 1] when sampling (``clip_sample``).

    Args:
      flags: ADM flags (see :func:`parse_adm_flags`).

    Returns:
      A config dict with ``"_class_name": "DDPMScheduler"``.
    """
    f = parse_adm_flags(flags)
    n = f["diffusion_steps"]
    if f["noise_schedule"] == "linear":
        schedule = {"beta_schedule": "linear", "beta_start": 1e-4 * 1000 / n, "beta_end": 0.02 * 1000 / n}
    elif f["noise_schedule"] == "cosine":
        schedule = {"beta_schedule": "squaredcos_cap_v2", "beta_start": 1e-4, "beta_end": 0.02}
    else:
        raise ValueError(f"ADM noise_schedule must be 'linear' or 'cosine', got {f['noise_schedule']!r}")
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": n,
        **schedule,
        "prediction_type": "sample" if f["predict_xstart"] else "epsilon",
        "variance_type": "learned_range" if f["learn_sigma"] else "fixed_large",
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


def adm_alphas_cumprod(flags: str | Mapping) -> np.ndarray:
    """ADM's ``alphas_cumprod`` (float64, ``(diffusion_steps,)``) for its ``noise_schedule``.

    ``linear``: ``betas = linspace(1e-4 s, 0.02 s, N)`` with ``s = 1000 / N``; ``cosine``:
    ``betas_n = min(1 - abar(n+1) / abar(n), 0.999)`` with ``abar(n) = cos((n/N + 0.008) / 1.008 * pi/2)^2``
    (Nichol & Dhariwal 2021). Feed it to :func:`adm_ancestral_step`; for a respaced
    sampler pass ``alphas_cumprod[steps]``.

    Args:
      flags: ADM flags (see :func:`parse_adm_flags`).

    Returns:
      The cumulative products of ``1 - beta``.
    """
    f = parse_adm_flags(flags)
    n = f["diffusion_steps"]
    if f["noise_schedule"] == "linear":
        betas = np.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n, dtype=np.float64)
    elif f["noise_schedule"] == "cosine":
        def abar(u):
            return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2

        grid = np.arange(n, dtype=np.float64) / n
        betas = np.minimum(1 - abar(grid + 1.0 / n) / abar(grid), 0.999)
    else:
        raise ValueError(f"ADM noise_schedule must be 'linear' or 'cosine', got {f['noise_schedule']!r}")
    return np.cumprod(1.0 - betas)


# ----------------------------------------------------------------------------- state-dict keys

_RES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
_ATTN = (("norm", "group_norm"), ("qkv", "qkv"), ("proj_out", "to_out.0"))


def _module_pairs(f: dict, s: dict) -> list[tuple[str, str, str]]:
    """(ADM module prefix, diffusers module prefix, kind) for every module, in ADM's order."""
    pairs = [("time_embed.0", "time_embedding.linear_1", "plain"), ("time_embed.2", "time_embedding.linear_2", "plain")]
    if f["class_cond"]:
        pairs.append(("label_emb", "class_embedding", "plain"))
    pairs.append(("input_blocks.0.0", "conv_in", "plain"))
    levels, k = len(s["channels"]), 1
    for level in range(levels):
        for j in range(f["num_res_blocks"]):
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}", "res"))
            if s["attn_levels"][level]:
                pairs.append((f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}", "attn"))
            k += 1
        if level != levels - 1:
            if f["resblock_updown"]:
                pairs.append((f"input_blocks.{k}.0", f"down_blocks.{level}.downsamplers.0", "res"))
            else:
                pairs.append((f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            k += 1
    pairs += [("middle_block.0", "mid_block.resnets.0", "res"), ("middle_block.1", "mid_block.attentions.0", "attn"),
              ("middle_block.2", "mid_block.resnets.1", "res")]
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(f["num_res_blocks"] + 1):
            pairs.append((f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", "res"))
            sub = 1
            if s["attn_levels"][level]:
                pairs.append((f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}", "attn"))
                sub = 2
            if level and j == f["num_res_blocks"]:
                if f["resblock_updown"]:
                    pairs.append((f"output_blocks.{k}.{sub}", f"up_blocks.{i}.upsamplers.0", "res"))
                else:
                    pairs.append((f"output_blocks.{k}.{sub}.conv", f"up_blocks.{i}.upsamplers.0.conv", "plain"))
            k += 1
    pairs += [("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]
    return pairs


def adm_key_pairs(flags: str | Mapping) -> list[tuple[str, str]]:
    """``(ADM prefix, diffusers prefix)`` of every parameterised sub-module, in ADM's order.

    Each pair is a module (parameters ``weight`` / ``bias`` below it): ResNet
    blocks map ``in_layers.0 -> norm1``, ``in_layers.2 -> conv1``, ``emb_layers.1
    -> time_emb_proj``, ``out_layers.0 -> norm2``, ``out_layers.3 -> conv2``,
    ``skip_connection -> conv_shortcut``; attention blocks ``norm -> group_norm``,
    ``qkv -> to_q, to_k, to_v`` (split), ``proj_out -> to_out.0`` (1x1 conv ->
    linear); everything else keeps its parameter names.

    Args:
      flags: ADM flags (see :func:`parse_adm_flags`).

    Returns:
      The list of pairs of module prefixes.
    """
    f = parse_adm_flags(flags)
    out = []
    for adm, dif, kind in _module_pairs(f, _structure(f)):
        subs = {"res": _RES, "attn": _ATTN, "plain": (("", ""),)}[kind]
        out += [(f"{adm}.{a}".rstrip("."), f"{dif}.{d}".rstrip(".")) for a, d in subs]
    return out


def _heads(config: dict, channels: int) -> int:
    if config.get("diffjax_attention_heads") is not None:
        return config["diffjax_attention_heads"]
    head_dim = config["attention_head_dim"]
    return 1 if head_dim is None else channels // head_dim


def _split_qkv(weight: np.ndarray, bias: np.ndarray, heads: int, new_order: bool):
    """ADM's fused (3C, C, 1) qkv conv -> (C, C) q, k, v linear weights and (C,) biases."""
    c = weight.shape[1]
    w, b = weight.reshape(weight.shape[0], c), bias
    if new_order:  # QKVAttention: [q (all heads) | k | v]
        ws, bs = w.reshape(3, c, c), b.reshape(3, c)
    else:  # QKVAttentionLegacy: per head [q_h | k_h | v_h]
        ch = c // heads
        ws = w.reshape(heads, 3, ch, c).transpose(1, 0, 2, 3).reshape(3, c, c)
        bs = b.reshape(heads, 3, ch).transpose(1, 0, 2).reshape(3, c)
    return [np.ascontiguousarray(x) for x in ws], [np.ascontiguousarray(x) for x in bs]


def _fuse_qkv(ws, bs, heads: int, new_order: bool):
    """Inverse of :func:`_split_qkv`."""
    w, b = np.stack(ws), np.stack(bs)
    c = w.shape[-1]
    if not new_order:
        ch = c // heads
        w = w.reshape(3, heads, ch, c).transpose(1, 0, 2, 3)
        b = b.reshape(3, heads, ch).transpose(1, 0, 2)
    return np.ascontiguousarray(w.reshape(3 * c, c, 1)), np.ascontiguousarray(b.reshape(3 * c))


def _check_keys(given: Mapping, expected: set, what: str):
    missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
    if missing or extra:
        raise ValueError(f"{what} does not match the flags: missing {missing[:6]}{'...' if len(missing) > 6 else ''}"
                         f" ({len(missing)}), unexpected {extra[:6]}{'...' if len(extra) > 6 else ''} ({len(extra)})")


def _changes_width(state: Mapping, block: str) -> bool:
    """Whether a ResNet block's first conv changes the channel count (then it has a skip conv)."""
    w = state.get(f"{block}.in_layers.2.weight")
    return w is not None and w.shape[0] != w.shape[1]


def adm_to_diffusers(flags: str | Mapping, state: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Convert a guided-diffusion state dict to a diffusers ``UNet2DModel`` one.

    Args:
      flags: the checkpoint's ADM flags (see :func:`parse_adm_flags`).
      state: ``{adm_key: array}``, e.g. from
        :func:`diffjax.interop.torch_pickle.read_torch_checkpoint` (float16
        checkpoints are cast to float32).

    Returns:
      ``(config, diffusers_state)``: the ``UNet2DModel`` config
      (:func:`adm_unet_config`) and ``{diffusers_key: float32 array}`` in
      PyTorch layouts (convs OIHW, linears (out, in)).

    Raises:
      ValueError: unsupported flags; state keys not those the flags imply (the
        message lists missing and unexpected keys); a wrong shape.
    """
    f = parse_adm_flags(flags)
    config = adm_unet_config(f)
    expected = set()
    out: dict[str, np.ndarray] = {}
    modules = _module_pairs(f, _structure(f))
    for adm, dif, kind in modules:
        subs = {"res": _RES, "attn": _ATTN, "plain": (("", ""),)}[kind]
        for a, d in subs:
            src, dst = f"{adm}.{a}".rstrip("."), f"{dif}.{d}".rstrip(".")
            if a == "skip_connection" and not _changes_width(state, adm):
                continue  # identity skip: the block keeps its width
            params = ("weight",) if src.endswith("label_emb") else ("weight", "bias")
            expected.update(f"{src}.{p}" for p in params)
            if any(f"{src}.{p}" not in state for p in params):
                continue  # reported below with every other missing key
            if a == "qkv":
                w, b = np.asarray(state[f"{src}.weight"], np.float32), np.asarray(state[f"{src}.bias"], np.float32)
                c = w.shape[1]
                if w.shape != (3 * c, c, 1) or b.shape != (3 * c,):
                    raise ValueError(f"{src}: expected a (3C, C, 1) weight and (3C,) bias, got {w.shape}, {b.shape}")
                ws, bs = _split_qkv(w, b, _heads(config, c), f["use_new_attention_order"])
                for name, wi, bi in zip(("to_q", "to_k", "to_v"), ws, bs):
                    out[f"{dif}.{name}.weight"], out[f"{dif}.{name}.bias"] = wi, bi
                continue
            for p in params:
                value = np.asarray(state[f"{src}.{p}"], np.float32)
                if a == "proj_out" and p == "weight":
                    if value.ndim != 3 or value.shape[2] != 1:
                        raise ValueError(f"{src}.weight: expected a (C, C, 1) 1x1 conv, got {value.shape}")
                    value = value[:, :, 0]
                out[f"{dst}.{p}"] = value
    _check_keys(state, expected, "the ADM state dict")
    return config, out


def diffusers_to_adm(flags: str | Mapping, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`adm_to_diffusers`: a ``UNet2DModel`` state dict in guided-diffusion's names.

    Args:
      flags: ADM flags (see :func:`parse_adm_flags`).
      state: ``{diffusers_key: array}`` of a ``UNet2DModel`` built from
        :func:`adm_unet_config` of the same flags.

    Returns:
      ``{adm_key: array}`` in ADM's module order.
    """
    f = parse_adm_flags(flags)
    config = adm_unet_config(f)
    out: dict[str, np.ndarray] = {}
    for adm, dif, kind in _module_pairs(f, _structure(f)):
        subs = {"res": _RES, "attn": _ATTN, "plain": (("", ""),)}[kind]
        for a, d in subs:
            src, dst = f"{dif}.{d}".rstrip("."), f"{adm}.{a}".rstrip(".")
            if a == "qkv":
                ws = [np.asarray(state[f"{dif}.{n}.weight"]) for n in ("to_q", "to_k", "to_v")]
                bs = [np.asarray(state[f"{dif}.{n}.bias"]) for n in ("to_q", "to_k", "to_v")]
                out[f"{dst}.weight"], out[f"{dst}.bias"] = _fuse_qkv(ws, bs, _heads(config, ws[0].shape[1]),
                                                                      f["use_new_attention_order"])
                continue
            for p in ("weight", "bias"):
                if f"{src}.{p}" in state:
                    value = np.asarray(state[f"{src}.{p}"])
                    out[f"{dst}.{p}"] = value[:, :, None] if a == "proj_out" and p == "weight" else value
    return out


def convert_adm_checkpoint(checkpoint: str, flags: str | Mapping, out_dir: str) -> str:
    """Write a guided-diffusion ``.pt`` checkpoint as a diffusers ``DDPMPipeline`` folder.

    The folder holds ``model_index.json``, ``unet/config.json`` (:func:`adm_unet_config`),
    ``unet/diffusion_pytorch_model.safetensors`` (float32, diffusers keys),
    ``scheduler/scheduler_config.json`` (:func:`adm_scheduler_config`) and
    ``adm_flags.json`` (the parsed flags, for the record). The checkpoint is read
    with :func:`diffjax.interop.torch_pickle.read_torch_checkpoint` (no code runs).

    Args:
      checkpoint: the guided-diffusion ``.pt`` file.
      flags: its ADM flags (see :func:`parse_adm_flags`).
      out_dir: the folder to write (created; existing files are overwritten).

    Returns:
      ``out_dir``.

    Raises:
      ValueError, UnsafeCheckpointError: see :func:`adm_to_diffusers` and the reader.
    """
    import json
    import os

    from safetensors.numpy import save_file

    from diffjax.interop.torch_pickle import read_torch_checkpoint

    parsed = parse_adm_flags(flags)
    config, state = adm_to_diffusers(parsed, read_torch_checkpoint(checkpoint))
    os.makedirs(os.path.join(out_dir, "unet"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
    files = {
        "model_index.json": {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                             "scheduler": ["diffusers", "DDPMScheduler"]},
        os.path.join("unet", "config.json"): config,
        os.path.join("scheduler", "scheduler_config.json"): adm_scheduler_config(parsed),
        "adm_flags.json": parsed,
    }
    for name, content in files.items():
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(content, f, indent=2)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()},
              os.path.join(out_dir, "unet", "diffusion_pytorch_model.safetensors"))
    return out_dir


# ----------------------------------------------------------------------------- learned variance

def _posterior_terms(alphas_cumprod, n):
    """beta_n, log of ADM's clipped beta-tilde_n, and abar_n, abar_{n-1} on a (respaced) schedule."""
    import jax.numpy as jnp

    abar = jnp.asarray(alphas_cumprod, jnp.float32)
    abar_prev_all = jnp.concatenate([jnp.ones((1,), abar.dtype), abar[:-1]])
    betas = 1.0 - abar / abar_prev_all
    tilde = betas * (1.0 - abar_prev_all) / (1.0 - abar)
    # beta-tilde_0 = 0: ADM clips its log by using beta-tilde_1 at step 0 (improved DDPM).
    log_tilde = jnp.log(jnp.concatenate([tilde[1:2], tilde[1:]]))
    return betas[n], log_tilde[n], abar[n], abar_prev_all[n]


def learned_range_log_variance(v, alphas_cumprod, n):
    """ADM's learned reverse-process log-variance (Nichol & Dhariwal 2021, eq. 15).

    ``log Sigma = frac log(beta_n) + (1 - frac) log(beta-tilde_n)`` with
    ``frac = (v + 1) / 2``, where ``beta-tilde_n = beta_n (1 - abar_{n-1}) /
    (1 - abar_n)`` and, at ``n = 0`` (where it is 0), ``beta-tilde_1``, as ADM clips it.

    Args:
      v: the network's variance output (its last ``C`` channels), shape ``(B, ...)``,
        nominally in [-1, 1].
      alphas_cumprod: ``(N,)`` cumulative products of the (possibly respaced)
        schedule; ``beta_n = 1 - abar_n / abar_{n-1}``.
      n: ``(B,)`` integer step indices in ``[0, N)``.

    Returns:
      The log-variance, shaped like ``v``.
    """
    import jax.numpy as jnp

    v = jnp.asarray(v)
    beta, log_tilde, _, _ = _posterior_terms(alphas_cumprod, jnp.asarray(n))
    expand = (slice(None),) + (None,) * (v.ndim - 1)
    frac = (v + 1.0) / 2.0
    return frac * jnp.log(beta)[expand] + (1.0 - frac) * log_tilde[expand]


def adm_ancestral_step(x, model_output, alphas_cumprod, n, noise, *, clip_denoised: bool = True,
                       predict_xstart: bool = False):
    """One step of ADM's ancestral sampler with its learned variance (``p_sample``).

    ``x0`` comes from the first half of the channels (eps, or x0 itself when
    ``predict_xstart``), clipped to [-1, 1]; the mean is the posterior mean of
    ``q(x_{n-1} | x_n, x0)`` and the variance :func:`learned_range_log_variance` of
    the second half. No noise is added at ``n = 0``.

    Args:
      x: ``(B, H, W, C)`` current sample ``x_n``.
      model_output: ``(B, H, W, 2C)`` the network's output, channels last.
      alphas_cumprod: ``(N,)`` cumulative alpha products of the schedule sampled.
      n: ``(B,)`` integer step indices.
      noise: standard normal noise shaped like ``x``.
      clip_denoised: clip ``x0`` to [-1, 1] (ADM's default).
      predict_xstart: the first half is ``x0`` instead of ``eps``.

    Returns:
      ``x_{n-1}``, shaped like ``x``.
    """
    import jax.numpy as jnp

    x = jnp.asarray(x)
    c = x.shape[-1]
    if model_output.shape[-1] != 2 * c:
        raise ValueError(f"learned-variance output needs 2 x {c} channels (channels last), got {model_output.shape}")
    n = jnp.asarray(n)
    out, v = model_output[..., :c], model_output[..., c:]
    beta, _, abar, abar_prev = _posterior_terms(alphas_cumprod, n)
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    beta, abar, abar_prev = beta[expand], abar[expand], abar_prev[expand]
    x0 = out if predict_xstart else (x - jnp.sqrt(1.0 - abar) * out) / jnp.sqrt(abar)
    if clip_denoised:
        x0 = jnp.clip(x0, -1.0, 1.0)
    mean = (jnp.sqrt(abar_prev) * beta / (1.0 - abar)) * x0 + (
        jnp.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar)) * x
    log_var = learned_range_log_variance(v, alphas_cumprod, n)
    return mean + (n > 0)[expand] * jnp.exp(0.5 * log_var) * noise


