"""Fingerprints of a first-stage run, so a second stage never runs on a changed one.

A second stage (latent diffusion on an autoencoder, segmentation on a DDPM
backbone) is only meaningful with the exact first stage it was trained on. At
training time it records the first stage's fingerprint in its own workdir
(``WORKDIR/fingerprints.json``, one entry per role); at load and sample time the
first stage is fingerprinted again and a difference is refused, naming both.

A fingerprint is the run's newest checkpoint step, a SHA-256 of that
checkpoint's files (the saved parameters) and the network's shape from its
``model_config.json``, so a first stage retrained, trained further, or
retrained at another size is told apart, with a message saying which.
"""

from __future__ import annotations

import hashlib
import json
import os

from diffjax.errors import UserError

__all__ = ["fingerprint", "record", "check", "describe", "FINGERPRINT_FILE"]

FINGERPRINT_FILE = "fingerprints.json"
_SHAPE_KEYS = ("image_size", "in_channels", "z_channels", "factor", "base_channels", "channel_mult",
               "num_classes")
_CHUNK = 1 << 20


def _steps(workdir: str) -> list[int]:
    from diffjax.checkpoint import CHECKPOINT_DIR

    folder = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def _digest_files(folder: str) -> str:
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).replace(os.sep, "/").encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
    return h.hexdigest()


def fingerprint(workdir: str) -> dict:
    """``{"workdir", "step", "sha256", "shape"}`` of the run in ``workdir`` (its newest checkpoint).

    Raises:
      UserError: ``workdir`` holds no checkpoint.
    """
    from diffjax.checkpoint import CHECKPOINT_DIR, model_config_path

    workdir = os.path.abspath(workdir)
    steps = _steps(workdir)
    if not steps:
        raise UserError(f"{workdir} holds no checkpoint: train it first")
    shape = {}
    if os.path.exists(model_config_path(workdir)):
        with open(model_config_path(workdir)) as f:
            stored = json.load(f)
        stored = stored.get("vae", stored) if isinstance(stored, dict) else {}
        shape = {k: stored[k] for k in _SHAPE_KEYS if k in stored}
    return {"workdir": workdir, "step": steps[-1],
            "sha256": _digest_files(os.path.join(workdir, CHECKPOINT_DIR, str(steps[-1]))), "shape": shape}


def describe(fp: dict) -> str:
    """One phrase for a fingerprint: ``step 4, sha256 1a2b3c4d5e6f, image_size=16 in_channels=1``."""
    shape = " ".join(f"{k}={v}" for k, v in sorted(fp.get("shape", {}).items()))
    return f"step {fp['step']}, sha256 {fp['sha256'][:12]}" + (f", {shape}" if shape else "")


def _path(workdir: str) -> str:
    return os.path.join(workdir, FINGERPRINT_FILE)


def _read(workdir: str) -> dict:
    from diffjax.errors import load_json

    path = _path(workdir)
    return load_json(path) if os.path.exists(path) else {}


def record(workdir: str, role: str, first_workdir: str) -> dict:
    """Store the fingerprint of ``first_workdir`` as ``role`` in ``workdir``.

    Called when the second stage starts training (a resumed run calls
    :func:`check` first, so what it stores again is the same).

    Returns:
      The stored fingerprint.
    """
    stored = _read(workdir)
    stored[role] = fingerprint(first_workdir)
    os.makedirs(workdir, exist_ok=True)
    tmp = _path(workdir) + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(stored, f, indent=2, sort_keys=True)
    os.replace(tmp, _path(workdir))  # atomic
    return stored[role]


def check(workdir: str, role: str, first_workdir: str) -> None:
    """Refuse when ``first_workdir`` is not the ``role`` run ``workdir`` was trained on.

    A workdir without a recorded fingerprint (trained before fingerprints existed)
    passes.

    Raises:
      UserError: naming the recorded and the current fingerprints, and what changed.
    """
    stored = _read(workdir).get(role)
    if stored is None:
        return
    now = fingerprint(first_workdir)
    if now["sha256"] == stored["sha256"] and now["step"] == stored["step"]:
        return
    common = set(now.get("shape", {})) & set(stored.get("shape", {}))  # keys both recorded
    if any(now["shape"][k] != stored["shape"][k] for k in common):
        what = "was retrained at another size"
    elif now["step"] != stored["step"]:
        what = "was trained further or retrained"
    else:
        what = "was retrained (same step, other parameters)"
    raise UserError(
        f"{workdir} was trained on the {role} {stored['workdir']} ({describe(stored)}); {now['workdir']} is now "
        f"({describe(now)}): the {role} {what} since. Use the {role} the run was trained on, or retrain this run "
        "on the new one (a new --workdir)"
    )
