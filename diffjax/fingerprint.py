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

EGSDE's domain classifier is not trained with the score run: it is named at
sampling time (``translation.classifier_workdir``). The first time a score run
translates with a classifier, that classifier's fingerprint is recorded in the
score run's ``fingerprints.json`` (under ``egsde_classifier``, keyed by the
classifier's path); a later translation with the classifier at that path
retrained since is refused naming both fingerprints, so one run's translations
never silently come from two different classifiers.
"""

from __future__ import annotations

import hashlib
import json
import os

from diffjax import workdir_io
from diffjax.errors import UserError

__all__ = ["fingerprint", "record", "check", "describe", "check_classifier", "record_classifier",
           "FINGERPRINT_FILE", "CLASSIFIER_ROLE"]

FINGERPRINT_FILE = "fingerprints.json"
CLASSIFIER_ROLE = "egsde_classifier"
_SHAPE_KEYS = ("image_size", "in_channels", "z_channels", "factor", "base_channels", "channel_mult",
               "num_classes")
_CHUNK = 1 << 20


def _steps(workdir: str) -> list[int]:
    from diffjax.checkpoint import CHECKPOINT_DIR

    folder = os.path.join(workdir, CHECKPOINT_DIR)
    if not workdir_io.isdir(folder):
        return []
    return sorted(int(n) for n in workdir_io.listdir(folder)
                  if n.isdigit() and workdir_io.isdir(os.path.join(folder, n)))


def _digest_files(folder: str) -> str:
    h = hashlib.sha256()
    for relative in workdir_io.file_names(folder):  # os.walk order, folders and files sorted
        h.update(relative.encode() + b"\0")
        with workdir_io.open_binary(os.path.join(folder, relative)) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(workdir: str) -> dict:
    """``{"workdir", "step", "sha256", "shape"}`` of the run in ``workdir`` (its newest checkpoint).

    Raises:
      UserError: ``workdir`` holds no checkpoint.
    """
    from diffjax.checkpoint import CHECKPOINT_DIR, model_config_path

    workdir = workdir_io.absolute(workdir)
    steps = _steps(workdir)
    if not steps:
        raise UserError(f"{workdir} holds no checkpoint: train it first")
    shape = {}
    if workdir_io.exists(model_config_path(workdir)):
        stored = json.loads(workdir_io.read_text(model_config_path(workdir)))
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
    return load_json(path) if workdir_io.exists(path) else {}


def record(workdir: str, role: str, first_workdir: str) -> dict:
    """Store the fingerprint of ``first_workdir`` as ``role`` in ``workdir``.

    Called when the second stage starts training (a resumed run calls
    :func:`check` first, so what it stores again is the same).

    Returns:
      The stored fingerprint.
    """
    stored = _read(workdir)
    stored[role] = fingerprint(first_workdir)
    _write(workdir, stored)
    return stored[role]


def _write(workdir: str, stored: dict) -> None:
    workdir_io.write_text(_path(workdir), json.dumps(stored, indent=2, sort_keys=True))  # whole or not at all


def _change(stored: dict, now: dict) -> str | None:
    """How ``now`` differs from ``stored`` (a phrase after "was"), ``None`` when it is the same run."""
    if now["sha256"] == stored["sha256"] and now["step"] == stored["step"]:
        return None
    common = set(now.get("shape", {})) & set(stored.get("shape", {}))  # keys both recorded
    if any(now["shape"][k] != stored["shape"][k] for k in common):
        return "retrained at another size"
    if now["step"] != stored["step"]:
        return "trained further or retrained"
    return "retrained (same step, other parameters)"


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
    what = _change(stored, now)
    if what is None:
        return
    raise UserError(
        f"{workdir} was trained on the {role} {stored['workdir']} ({describe(stored)}); {now['workdir']} is now "
        f"({describe(now)}): the {role} was {what} since. Use the {role} the run was trained on, or retrain this "
        "run on the new one (a new --workdir)"
    )


def check_classifier(workdir: str, classifier_workdir: str) -> dict:
    """Refuse an EGSDE classifier changed since the score run in ``workdir`` first translated with it.

    Args:
      workdir: the score run that translates.
      classifier_workdir: the domain-classifier run it is given.

    Returns:
      The classifier's fingerprint now (pass it to :func:`record_classifier`).

    Raises:
      UserError: naming both fingerprints and what changed; or the classifier
        holds no checkpoint.
    """
    now = fingerprint(classifier_workdir)
    stored = _read(workdir).get(CLASSIFIER_ROLE, {}).get(now["workdir"])
    what = None if stored is None else _change(stored, now)
    if what is None:
        return now
    raise UserError(
        f"{workdir} first translated with the EGSDE classifier {now['workdir']} as ({describe(stored)}); it is now "
        f"({describe(now)}): the classifier was {what} since, and translations with it would not match the earlier "
        f"ones. Use the classifier as it was, train the new one into another classifier_workdir, or delete its "
        f"entry under {CLASSIFIER_ROLE!r} in {_path(workdir)} to accept it"
    )


def record_classifier(workdir: str, fp: dict) -> None:
    """Store an EGSDE classifier's fingerprint ``fp`` in the score run ``workdir``, if none is stored for it.

    A workdir that cannot be written (a read-only published run) is left as it
    is, with a warning: translation still works, unguarded.
    """
    stored = _read(workdir)
    classifiers = stored.setdefault(CLASSIFIER_ROLE, {})
    if fp["workdir"] in classifiers:
        return
    classifiers[fp["workdir"]] = fp
    try:
        _write(workdir, stored)
    except OSError as err:
        import logging

        logging.getLogger("diffjax").warning("cannot record the EGSDE classifier's fingerprint in %s: %s", workdir, err)
