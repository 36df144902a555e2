"""UNet2DModel architectures of published diffusers checkpoints (for tests and benchmarks with random weights).

Written from the hub folders' ``unet/config.json``; the keys left out are
UNet2DModel's defaults.
"""

from __future__ import annotations

__all__ = ["PUBLISHED_UNETS"]

_DDPM = dict(downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32,
             attention_head_dim=None, layers_per_block=2, in_channels=3, out_channels=3)

PUBLISHED_UNETS: dict[str, dict] = {
    # google/ddpm-cifar10-32 (35.7M parameters)
    "ddpm-cifar10-32": dict(_DDPM, sample_size=32, block_out_channels=(128, 256, 256, 256),
                            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    # google/ddpm-celebahq-256 (also ddpm-church-256, ddpm-bedroom-256, ddpm-cat-256; 113.7M parameters)
    "ddpm-celebahq-256": dict(_DDPM, sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                              down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4),
}

# google/ncsnpp-celebahq-256 (also ncsnpp-ffhq-256; score_sde's NCSN++ continuous VE model): Fourier time
# features, skip blocks with FIR resampling, attention at 16x16. Its folder writes norm_num_groups as the
# groups of min(channels // 4, 32), which is 32 at every width here.
PUBLISHED_UNETS["ncsnpp-celebahq-256"] = dict(
    sample_size=256, in_channels=3, out_channels=3, block_out_channels=(128, 128, 256, 256, 256, 256, 256),
    layers_per_block=2, time_embedding_type="fourier", flip_sin_to_cos=True, mid_block_scale_factor=2 ** 0.5,
    norm_eps=1e-6, norm_num_groups=32, attention_head_dim=None,
    down_block_types=("SkipDownBlock2D",) * 4 + ("AttnSkipDownBlock2D",) + ("SkipDownBlock2D",) * 2,
    up_block_types=("SkipUpBlock2D",) * 2 + ("AttnSkipUpBlock2D",) + ("SkipUpBlock2D",) * 4)
# CompVis/ldm-super-resolution-4x-openimages: the latent (3 channels) and the low-resolution image
# concatenated (in_channels 6); LDM's model_channels 160, channel_mult 1,2,2,4, heads of 32 channels.
PUBLISHED_UNETS["ldm-super-resolution-4x-openimages"] = dict(
    sample_size=128, in_channels=6, out_channels=3, block_out_channels=(160, 320, 320, 640), layers_per_block=2,
    attention_head_dim=32, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32, norm_eps=1e-5,
    down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * 3, up_block_types=("AttnUpBlock2D",) * 3 + ("UpBlock2D",))
