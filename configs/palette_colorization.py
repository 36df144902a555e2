"""Palette colorization on 32x32 photo crops: the condition is the luma."""

from configs.palette_common import palette_config


def get_config(arg=None):
    return palette_config("palette_colorization", arg)
