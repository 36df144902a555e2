"""A jointly Gaussian ``(x, y)`` whose every conditional-estimator target is known in closed form.

Used by tests/test_conditional.py and ``benchmarks/conditional.py`` to measure how far each
estimator's samples are from ``p(x | y)`` with no training in the way.

Construction: ``x = m_x + U a`` and ``y = m_y + V b`` with orthogonal ``U``, ``V``
and independent pairs ``(a_i, b_i) ~ N(0, [[va_i, c_i], [c_i, vb_i]])``. The
forward noise is isotropic, so rotating ``x_t`` by ``U^T`` and ``y_t`` by ``V^T``
keeps it standard normal: in those coordinates the diffused pairs
``(a_t, b_t)`` stay independent 2-D Gaussians with

    Var a_t = alpha^2 va + sigma^2,  Var b_t = alpha_y^2 vb + sigma_y^2,  Cov = alpha alpha_y c.

The x-part of the joint score is then ``grad_x log p(x_t, y_t) = -U (P_aa a_t + P_ab b_t)``
with the 2x2 precision ``P``, elementwise: matmuls and divisions only (no
LAPACK call inside compiled programs). The three targets are one formula:

* CDE, ``grad_x log p_t(x_t | y)``: ``y`` clean, ``(alpha_y, sigma_y) = (1, 0)``;
* CDiffE: ``(alpha_y, sigma_y)`` of the process of ``x``;
* CMDE: ``(alpha_y, sigma_y)`` of the condition's own process ``sde_y``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey

__all__ = ["PairedGaussian", "gaussian_w2"]


@dataclasses.dataclass(frozen=True)
class PairedGaussian:
    """Jointly Gaussian ``(x, y)`` in ``R^d x R^d`` (numpy float64 fields, see module docstring)."""

    mx: np.ndarray
    my: np.ndarray
    u: np.ndarray  # (d, d) orthogonal, columns = x's canonical directions
    v: np.ndarray  # (d, d) orthogonal, y's
    va: np.ndarray  # (d,)
    vb: np.ndarray  # (d,)
    c: np.ndarray  # (d,) cross-covariances, |c| < sqrt(va vb)

    @classmethod
    def random(cls, seed: int = 0, dim: int = 4, correlation: float = 0.9) -> "PairedGaussian":
        """A random instance whose canonical correlations lie in ``[correlation - 0.1, correlation]``."""
        rng = np.random.default_rng(seed)
        u, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        v, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        va = rng.uniform(0.3, 1.0, dim)
        vb = rng.uniform(0.3, 1.0, dim)
        rho = rng.uniform(correlation - 0.1, correlation, dim) * rng.choice([-1.0, 1.0], dim)
        return cls(mx=rng.normal(size=dim) * 0.5, my=rng.normal(size=dim) * 0.5, u=u, v=v, va=va, vb=vb,
                   c=rho * np.sqrt(va * vb))

    @property
    def dim(self) -> int:
        return self.mx.shape[0]

    # -- exact answers -------------------------------------------------------
    def posterior(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(d,)`` and covariance ``(d, d)`` of ``p(x | y)`` for one ``y``."""
        b = self.v.T @ (np.asarray(y, np.float64) - self.my)
        mean = self.mx + self.u @ (self.c / self.vb * b)
        cov = self.u @ np.diag(self.va - self.c**2 / self.vb) @ self.u.T
        return mean, cov

    def sample(self, key: PRNGKey, n: int) -> tuple[Array, Array]:
        """``n`` joint draws ``(x, y)``, each ``(n, d)`` float32."""
        za, zb = jax.random.normal(key, (2, n, self.dim))
        va, vb, c = (jnp.asarray(a, jnp.float32) for a in (self.va, self.vb, self.c))
        b = jnp.sqrt(vb) * zb
        a = c / vb * b + jnp.sqrt(va - c**2 / vb) * za
        f = lambda m, r, w: jnp.asarray(m, jnp.float32) + w @ jnp.asarray(r, jnp.float32).T
        return f(self.mx, self.u, a), f(self.my, self.v, b)

    def score(self, x_t: Array, y_in: Array, alpha, sigma, alpha_y, sigma_y) -> Array:
        """``grad_x log p(x_t, y_in)`` when ``x_t = alpha x + sigma z``, ``y_in = alpha_y y + sigma_y z'``.

        Scales are ``(batch,)`` arrays or scalars; ``(alpha_y, sigma_y) = (1, 0)``
        gives the conditional score given the clean ``y``.
        """
        col = lambda s: jnp.reshape(jnp.asarray(s, jnp.float32), (-1, 1))
        alpha, sigma, alpha_y, sigma_y = (col(s) for s in (alpha, sigma, alpha_y, sigma_y))
        f32 = lambda a: jnp.asarray(a, jnp.float32)
        va, vb, c = f32(self.va), f32(self.vb), f32(self.c)
        a_t = (x_t - alpha * f32(self.mx)) @ f32(self.u)
        b_t = (y_in - alpha_y * f32(self.my)) @ f32(self.v)
        var_a = alpha**2 * va + sigma**2
        var_b = alpha_y**2 * vb + sigma_y**2
        cov = alpha * alpha_y * c
        det = var_a * var_b - cov**2
        grad_a = -(var_b * a_t - cov * b_t) / det
        return grad_a @ f32(self.u).T

    def cond_score_fn(self, sde: SDE, method: str, sde_y: SDE | None = None):
        """The exact target of ``method`` as ``cond_score_fn(x_t, y_in, t)``."""
        process = {"cde": None, "cdiffe": sde, "cmde": sde_y}[method]

        def cond_score_fn(x_t, y_in, t):
            alpha, sigma = sde.alpha_sigma(t)
            if process is None:
                alpha_y, sigma_y = jnp.ones_like(t), jnp.zeros_like(t)
            else:
                alpha_y, sigma_y = process.alpha_sigma(t)
            return self.score(x_t, y_in, alpha, sigma, alpha_y, sigma_y)

        return cond_score_fn


def gaussian_w2(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """2-Wasserstein distance between the Gaussian fitted to ``samples`` and ``N(mean, cov)``.

    Host numpy (float64); the matrix square roots come from symmetric eigendecompositions.
    """

    def sqrtm(m):
        w, q = np.linalg.eigh((m + m.T) / 2)
        return (q * np.sqrt(np.clip(w, 0.0, None))) @ q.T

    samples = np.asarray(samples, np.float64)
    m_hat, c_hat = samples.mean(0), np.cov(samples, rowvar=False)
    root = sqrtm(cov)
    cross = sqrtm(root @ c_hat @ root)
    w2 = np.sum((m_hat - mean) ** 2) + np.trace(c_hat + cov - 2 * cross)
    return float(np.sqrt(max(w2, 0.0)))
