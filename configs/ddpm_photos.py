"""Unconditional model on 32x32 colour photo crops (offline dataset)."""

from configs.ddpm_fashion_mnist import unconditional_32
from configs.default import apply_smoke, check_arg


def get_config(arg=None):
    check_arg("ddpm_photos", arg)
    c = unconditional_32("photos")
    return apply_smoke(c) if arg == "smoke" else c
