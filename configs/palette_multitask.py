"""One Palette model for inpainting, uncropping, colorization and JPEG restoration."""

from configs.palette_common import palette_config


def get_config(arg=None):
    return palette_config("palette_multitask", arg)
