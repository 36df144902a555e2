"""Exact-answer fixtures: Gaussian and Gaussian-mixture data under any process.

If ``x_0 ~ N(mu, C)`` then ``x_t ~ N(alpha mu, alpha^2 C + sigma^2 I)`` for every
process in :mod:`diffjax.sde`, so the score, the density and fresh samples are
known in closed form at every t. Covariances are held as eigendecompositions
``C = U diag(d) U^T`` so every score is matmuls only (no batched LAPACK calls in
the compiled programs; see the note on CPU hangs in tests/README).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.sde import broadcast_to_x


def random_spd(rng: np.random.Generator, dim: int, low: float = 0.2, high: float = 2.0):
    """Eigenvalues in [low, high] and a random orthogonal basis."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    d = rng.uniform(low, high, size=dim)
    return d, q


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """``sum_k w_k N(mu_k, U_k diag(d_k) U_k^T)`` over flat vectors of size ``dim``.

    A single Gaussian is the K = 1 case. Arrays are numpy (float64) so the
    fixture can be built once and closed over by compiled code.
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    eigvals: np.ndarray  # (K, D)
    eigvecs: np.ndarray  # (K, D, D), columns are eigenvectors

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covariances(self) -> np.ndarray:
        return np.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    @property
    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    @property
    def covariance(self) -> np.ndarray:
        m = self.mean
        centred = self.means - m
        return np.einsum("k,kij->ij", self.weights, self.covariances) + np.einsum(
            "k,ki,kj->ij", self.weights, centred, centred
        )

    # -- exact quantities at time t --------------------------------------
    def _component_terms(self, x, t, sde):
        """Per-component log N(x; alpha mu_k, alpha^2 C_k + sigma^2 I) and score."""
        dtype = x.dtype
        alpha, sigma = sde.alpha_sigma(t)  # (B,)
        alpha = alpha[:, None, None]
        sigma = sigma[:, None, None]
        means = jnp.asarray(self.means, dtype)[None]  # (1, K, D)
        lam = alpha**2 * jnp.asarray(self.eigvals, dtype)[None] + sigma**2  # (B, K, D)
        u = jnp.asarray(self.eigvecs, dtype)  # (K, D, D)
        diff = x[:, None, :] - alpha * means  # (B, K, D)
        proj = jnp.einsum("bkd,kde->bke", diff, u)  # U^T diff
        logn = -0.5 * (
            jnp.sum(proj**2 / lam, axis=-1)
            + jnp.sum(jnp.log(lam), axis=-1)
            + self.dim * jnp.log(2 * jnp.pi)
        )
        score = -jnp.einsum("kde,bke->bkd", u, proj / lam)
        return logn, score

    def log_prob(self, x, t, sde):
        """Exact ``log p_t(x)`` for ``x`` of shape ``(B, D)``, ``t`` of shape ``(B,)``."""
        logn, _ = self._component_terms(x, t, sde)
        return jax.nn.logsumexp(logn + jnp.log(jnp.asarray(self.weights, x.dtype)), axis=-1)

    def score(self, x, t, sde):
        """Exact ``grad log p_t(x)``."""
        logn, score = self._component_terms(x, t, sde)
        resp = jax.nn.softmax(logn + jnp.log(jnp.asarray(self.weights, x.dtype)), axis=-1)
        return jnp.einsum("bk,bkd->bd", resp, score)

    def score_fn(self, sde, shape=None):
        """A ``score_fn(x, t)`` for the samplers; ``shape`` reshapes non-flat x."""

        def fn(x, t):
            flat = x.reshape(x.shape[0], -1)
            return self.score(flat, t, sde).reshape(x.shape)

        return fn

    def responsibilities(self, x0):
        """Posterior component probabilities of clean samples (to count mixture weights)."""
        logn, _ = self._component_terms(
            x0, jnp.zeros(x0.shape[:1], x0.dtype), _Identity()
        )
        return jax.nn.softmax(logn + jnp.log(jnp.asarray(self.weights, x0.dtype)), axis=-1)

    def sample(self, key, n, dtype=jnp.float32):
        """``n`` exact draws from the data distribution."""
        kc, kz = jax.random.split(key)
        comp = jax.random.choice(kc, len(self.weights), (n,), p=jnp.asarray(self.weights))
        z = jax.random.normal(kz, (n, self.dim), dtype)
        scale = jnp.asarray(np.sqrt(self.eigvals), dtype)[comp]
        u = jnp.asarray(self.eigvecs, dtype)[comp]
        return jnp.asarray(self.means, dtype)[comp] + jnp.einsum("nde,ne->nd", u, scale * z)

    def sample_t(self, key, n, t, sde, dtype=jnp.float32):
        """``n`` exact draws from the marginal ``p_t`` (t a scalar)."""
        k0, kn = jax.random.split(key)
        x0 = self.sample(k0, n, dtype)
        mean, std = sde.marginal_prob(x0, jnp.full((n,), t, dtype))
        return mean + broadcast_to_x(std, x0) * jax.random.normal(kn, x0.shape, dtype)


class _Identity:
    """A process with alpha = 1, sigma = 0: evaluates densities of the clean data."""

    def alpha_sigma(self, t):
        return jnp.ones_like(t), jnp.zeros_like(t)


def gaussian(dim: int = 4, seed: int = 0) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    d, q = random_spd(rng, dim)
    return GaussianMixture(
        weights=np.ones(1), means=rng.normal(size=(1, dim)), eigvals=d[None], eigvecs=q[None]
    )


def mixture(dim: int = 8, k: int = 4, seed: int = 0, separation: float = 3.0) -> GaussianMixture:
    """K components with unequal weights and distinct covariances."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, k + 1, dtype=np.float64)
    weights /= weights.sum()
    means = rng.normal(size=(k, dim)) * separation
    eig = [random_spd(rng, dim, 0.05, 0.5) for _ in range(k)]
    return GaussianMixture(
        weights=weights,
        means=means,
        eigvals=np.stack([e[0] for e in eig]),
        eigvecs=np.stack([e[1] for e in eig]),
    )


@dataclasses.dataclass(frozen=True)
class CorrelatedImage:
    """A 1-channel ``h x w`` Gaussian "image" with correlated pixels and one fixed draw.

    ``x ~ N(mean, cov)`` with ``cov`` an RBF kernel over pixel positions (length scale
    1.5 pixels) plus a 0.02 nugget and a smooth mean; ``truth`` is one draw (seed 0), the
    image to complete. With the pixels ``known`` given, the missing ones have the exact
    Gaussian conditional :meth:`posterior` (float64, on the host).
    """

    model: GaussianMixture
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    truth: np.ndarray  # (D,)

    def posterior(self, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the missing pixels given ``truth`` on ``known`` (bool (D,))."""
        k_uu = self.cov[~known][:, ~known]
        k_uk = self.cov[~known][:, known]
        k_kk = self.cov[known][:, known]
        gain = np.linalg.solve(k_kk, k_uk.T).T
        return self.mean[~known] + gain @ (self.truth[known] - self.mean[known]), k_uu - gain @ k_uk.T

    def errors(self, samples, known: np.ndarray) -> tuple[float, float, float]:
        """(mean error, covariance error, Gaussian KL) of the missing pixels of ``samples``.

        mean error ``|m - m*| / sqrt(tr C*)``; covariance error ``|C - C*|_F / |C*|_F``;
        KL between the Gaussian fitted to the samples and the exact conditional.
        Also asserts that the known pixels equal ``truth`` bit for bit.
        """
        flat = np.asarray(samples).reshape(len(samples), -1)
        np.testing.assert_array_equal(
            flat[:, known], np.broadcast_to(self.truth[known].astype(np.float32), flat[:, known].shape)
        )
        post_mean, post_cov = self.posterior(known)
        missing = flat[:, ~known].astype(np.float64)
        mean, cov = missing.mean(0), np.cov(missing.T)
        diff = mean - post_mean
        precision = np.linalg.inv(post_cov)
        kl = 0.5 * (
            np.trace(precision @ cov) + diff @ precision @ diff - len(diff)
            + np.linalg.slogdet(post_cov)[1] - np.linalg.slogdet(cov)[1]
        )
        return (
            float(np.linalg.norm(diff) / np.sqrt(np.trace(post_cov))),
            float(np.linalg.norm(cov - post_cov) / np.linalg.norm(post_cov)),
            float(kl),
        )


def correlated_image(h: int = 4, w: int = 4) -> CorrelatedImage:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([rows.ravel(), cols.ravel()], -1).astype(np.float64)
    sq_dist = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    cov = np.exp(-sq_dist / (2 * 1.5**2)) + 0.02 * np.eye(h * w)
    mean = 0.3 * np.sin(pos[:, 1] / 2.0)
    eigvals, eigvecs = np.linalg.eigh(cov)
    model = GaussianMixture(weights=np.ones(1), means=mean[None], eigvals=eigvals[None], eigvecs=eigvecs[None])
    truth = mean + eigvecs @ (np.sqrt(eigvals) * np.random.default_rng(0).normal(size=h * w))
    return CorrelatedImage(model, mean, cov, truth)
