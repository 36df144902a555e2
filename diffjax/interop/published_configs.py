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
