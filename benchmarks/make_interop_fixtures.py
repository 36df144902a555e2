"""Write the small PyTorch / diffusers fixtures of tests/test_interop_adm.py and tests/test_interop_vae.py.

Needs torch, diffusers and safetensors (``pip install -e .[interop-test]``); the
tests themselves read only the committed files. Run from the repository root::

    python benchmarks/make_interop_fixtures.py [--only torch|vae]

Every fixture is made from fixed seeds, so rerunning rewrites the same numbers
(up to torch's own version-to-version changes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np

ADM_DIR = os.path.join("tests", "fixtures", "interop_adm")
VAE_DIR = os.path.join("tests", "fixtures", "interop_vae")


def make_torch_fixtures():
    """A tensor checkpoint covering every storage dtype, views, shared storage and nesting."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = collections.OrderedDict(
        f32=torch.randn(2, 3, 1, 1, generator=g),
        f16=torch.randn(5, generator=g).half(),
        bf16=torch.randn(3, 2, generator=g).to(torch.bfloat16),
        f64=torch.randn(2, generator=g).double(),
        i64=torch.arange(-3, 4),
        u8=torch.arange(7, dtype=torch.uint8),
        boolean=torch.tensor([True, False, True]),
        transposed=base.t(),              # non-contiguous strides
        row=base[2],                      # offset into a shared storage
        scalar=torch.tensor(1.5),
        empty=torch.zeros(0, 3),
    )
    os.makedirs(ADM_DIR, exist_ok=True)
    torch.save(state, os.path.join(ADM_DIR, "tensors.pt"))
    torch.save({"state_dict": {"layer": {"w": state["f32"]}}, "epoch": 3, "name": "x"},
               os.path.join(ADM_DIR, "nested.ckpt"))
    np.savez(os.path.join(ADM_DIR, "tensors_expected.npz"),
             **{k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["torch", "vae"], default=None)
    args = parser.parse_args()
    if args.only in (None, "torch"):
        make_torch_fixtures()
    if args.only in (None, "vae"):
        make_vae_fixtures()
    print(json.dumps({"written": sorted(os.listdir(ADM_DIR)) + sorted(os.listdir(VAE_DIR))}))


def make_vae_fixtures():
    pass


if __name__ == "__main__":
    main()
