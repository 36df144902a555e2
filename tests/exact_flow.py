"""Closed-form probability-flow map for Gaussian data (the reference for ODE solvers).

If ``x_0 ~ N(mu, U diag(d) U^T)`` then ``p_t = N(alpha mu, U diag(s_t) U^T)`` with
``s_t = alpha_t^2 d + sigma_t^2``, and the probability flow is linear. In the
eigen-coordinates ``z = U^T (x - alpha_t mu)`` it reads::

    dz/dt = (f + g^2 / (2 s_t)) z,   with   ds_t/dt = 2 f s_t + g^2

(``f = d log alpha / dt`` and ``g^2 = d sigma^2/dt - 2 f sigma^2`` for every
process), so ``d log z / dt = d log sqrt(s_t) / dt``: each coordinate scales by
``sqrt(s_t / s_s)`` between times s and t.
"""

from __future__ import annotations

import jax.numpy as jnp


def gaussian_flow_map(g, sde, x, s, t):
    """Exact probability-flow image at time ``t`` of ``x`` (shape (B, D)) at time ``s``.

    ``g`` is a single-component :class:`gaussians.GaussianMixture`; ``s``, ``t`` scalars.
    """
    dtype = x.dtype
    mu = jnp.asarray(g.means[0], dtype)
    d = jnp.asarray(g.eigvals[0], dtype)
    u = jnp.asarray(g.eigvecs[0], dtype)
    a_s, sig_s = sde.alpha_sigma(jnp.asarray(s, dtype))
    a_t, sig_t = sde.alpha_sigma(jnp.asarray(t, dtype))
    z = (x - a_s * mu) @ u
    z = z * jnp.sqrt((a_t**2 * d + sig_t**2) / (a_s**2 * d + sig_s**2))
    return a_t * mu + z @ u.T
