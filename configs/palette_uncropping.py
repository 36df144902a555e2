"""Palette uncropping on 32x32 photo crops: one-direction halves and a four-sided border."""

from configs.palette_common import palette_config


def get_config(arg=None):
    return palette_config("palette_uncropping", arg)
