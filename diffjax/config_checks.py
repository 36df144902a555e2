"""Checks of a ``ConfigDict`` against the schema and of ``--config.a.b=v`` overrides (no other diffjax import)."""

from __future__ import annotations

import difflib

import ml_collections

__all__ = ["fill_missing_keys", "validate_config", "check_override_keys"]


def fill_missing_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with every key of ``schema`` it lacks added at its default.

    A stored config predates keys added to the schema since; their defaults are what the run
    used, so older runs stay readable. Unknown keys are kept for :func:`validate_config` to report.
    """
    filled = ml_collections.ConfigDict(config.to_dict())

    def walk(cfg, ref):
        for key in ref.keys():
            if key not in cfg:
                cfg[key] = ref[key]
            elif isinstance(ref[key], ml_collections.ConfigDict) and isinstance(cfg[key], ml_collections.ConfigDict):
                walk(cfg[key], ref[key])

    walk(filled, schema)
    return filled


def validate_config(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict) -> None:
    """Check that ``config`` has exactly the sections and keys of ``schema``; a ValueError names each other one.

    Catches typos in config files (``config.training.bacth_size = ...`` silently
    adds a key to an unlocked ConfigDict) and missing sections.
    """
    problems = []

    def walk(cfg, ref, prefix):
        for key in cfg.keys():
            if key not in ref:
                problems.append(f"unknown key config.{prefix}{key} (valid here: {sorted(ref.keys())})")
            elif isinstance(ref[key], ml_collections.ConfigDict):
                if not isinstance(cfg[key], ml_collections.ConfigDict):
                    problems.append(f"config.{prefix}{key} must be a section, got {cfg[key]!r}")
                else:
                    walk(cfg[key], ref[key], f"{prefix}{key}.")
        for key in ref.keys():
            if key not in cfg:
                problems.append(f"missing key config.{prefix}{key}")

    walk(config, schema, "")
    if problems:
        raise ValueError("config does not match the schema of configs/default.py:\n  " + "\n  ".join(problems))


def check_override_keys(argv: list[str], config: ml_collections.ConfigDict, flag: str = "config") -> None:
    """Reject (ValueError, on the first) ``--{flag}.a.b=v`` command-line overrides naming keys ``config`` lacks.

    ml_collections would fail too, but with a bare ``AttributeError``
    traceback; this names the flag, the closest key and the valid ones.
    """
    prefix = f"--{flag}."
    for arg in argv:
        if not arg.startswith(prefix):
            continue
        path = arg[len(prefix):].split("=", 1)[0].split(".")
        node, walked = config, []
        for key in path:
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                where = "config." + ".".join(walked) if walked else "config"
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config key {key!r} in {arg.split('=', 1)[0]}.{hint} "
                                 f"Valid keys of {where}: {valid}")
            node, walked = node[key], walked + [key]
