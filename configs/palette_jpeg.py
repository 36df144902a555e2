"""Palette JPEG restoration on 32x32 photo crops: qualities 5-30 through Pillow."""

from configs.palette_common import palette_config


def get_config(arg=None):
    return palette_config("palette_jpeg", arg)
