"""Palette inpainting on 32x32 photo crops: free-form strokes and boxes, loss in the hole."""

from configs.palette_common import palette_config


def get_config(arg=None):
    return palette_config("palette_inpainting", arg)
