"""Paired comparisons with bootstrap intervals, shared by the restoration and SR benchmarks.

A verdict ("A better" / "A worse") is printed only where the 95% interval of the
paired difference excludes zero; otherwise the difference is "inside the noise".
"""

from __future__ import annotations

import numpy as np

from diffjax.metrics import bootstrap_ci

# metric -> True where lower is better
LOWER_IS_BETTER = {"lpips": True, "lpips_alex": True, "psnr": False, "ssim": False,
                   "grain": True}  # benchmarks/sr_grain.py: high-pass RMS on flat pixels


def compare(method_a: str, method_b: str, metric: str, per_image_a, per_image_b, seed: int = 0) -> dict:
    """``A - B`` on ``metric`` over the same images (``(N,)`` or ``(seeds, N)`` each), with its 95% interval.

    Args:
      method_a, method_b: labels of the two methods.
      metric: a key of :data:`LOWER_IS_BETTER`.
      per_image_a, per_image_b: per-image values of the metric.
      seed: bootstrap seed.

    Returns:
      ``{"a", "b", "metric", "diff", "low", "high", "verdict"}``; verdict is
      ``"A better"``, ``"A worse"`` or ``"inside the noise"``.

    Raises:
      ValueError: on an unknown metric (and as :func:`diffjax.metrics.bootstrap_ci`).
    """
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"compare: metric must be one of {sorted(LOWER_IS_BETTER)}, got {metric!r}")
    ci = bootstrap_ci(per_image_a, per_image_b, seed=seed)
    verdict = "inside the noise"
    if ci["excludes_zero"]:
        a_lower = ci["high"] < 0
        verdict = "A better" if a_lower == LOWER_IS_BETTER[metric] else "A worse"
    return {"a": method_a, "b": method_b, "metric": metric, "diff": ci["mean"], "low": ci["low"],
            "high": ci["high"], "verdict": verdict}


def print_comparisons(comparisons: list[dict]) -> None:
    """A markdown table of :func:`compare` results."""
    print("\n| A | B | metric | A - B | 95% interval (bootstrap over images and seeds) | verdict |")
    print("|---|---|---|---|---|---|")
    for c in comparisons:
        digits = 2 if c["metric"] == "psnr" else 4
        print(f"| {c['a']} | {c['b']} | {c['metric']} | {c['diff']:+.{digits}f} | "
              f"[{c['low']:+.{digits}f}, {c['high']:+.{digits}f}] | {c['verdict']} |")


def per_seed_images(values) -> np.ndarray:
    """Per-image values as ``(seeds, N)`` float64 (a ``(N,)`` array is one seed)."""
    v = np.asarray(values, np.float64)
    return v[None] if v.ndim == 1 else v
