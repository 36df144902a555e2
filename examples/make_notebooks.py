"""Write the notebooks in examples/ (outputs stripped) from the cell sources below.

    python examples/make_notebooks.py          # rewrite every notebook
    python examples/make_notebooks.py --check  # exit 1 if a committed notebook differs

Every notebook has the same first two code cells: ONE install cell (installs this
repository with pip when ``diffjax`` is not importable, e.g. on a fresh colab runtime
after the repository was cloned or uploaded to ``/content/diffjax``) and ONE parameter
cell, tagged ``parameters``, that holds every size; with ``DIFFJAX_SMOKE=1`` in the
environment it picks smoke sizes (what CI runs: ``tests/test_notebooks.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Install: this repository, with pip, unless diffjax is already importable (CI, a local venv).
# On colab: clone or upload the repository to /content/diffjax first (see README), or set DIFFJAX_REPO.
import importlib, importlib.util, os, subprocess, sys

REPO = next((os.path.abspath(p) for p in (os.environ.get("DIFFJAX_REPO", ""), "..", "/content/diffjax", ".")
             if p and os.path.isfile(os.path.join(p, "pyproject.toml"))), None)
if importlib.util.find_spec("diffjax") is None:
    if REPO is None:
        raise RuntimeError("diffjax is not installed and no repository was found in .., /content/diffjax or "
                           "$DIFFJAX_REPO: clone or upload the repository first (see README, 'Notebooks')")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", REPO])
    importlib.invalidate_caches()
if REPO is not None and REPO not in sys.path:
    sys.path.insert(0, REPO)  # configs/ live in the repository, not in the installed package
'''


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(text: str):
    return code("import os\n\nSMOKE = os.environ.get(\"DIFFJAX_SMOKE\") == \"1\"  # CI: tiny sizes\n" + text.strip("\n"),
                tags=("parameters",))


# -- 1. a sampler in your own JAX code --------------------------------------------
SAMPLERS_NB = [
    md("""
# Samplers in your own JAX code

diffjax's samplers take any `score_fn(x, t)`: an analytic function, a Flax NNX network, an
Equinox or Haiku model. This notebook drives them first with the exact score of a Gaussian
(so the error of every sampler is measurable), then with a small NNX network trained here
on a 2-D mixture, and compares the samplers on one plot each time.
"""),
    code(INSTALL),
    params("""
N = 512 if SMOKE else 8192                      # samples per sampler
NFE = [4, 8, 16] if SMOKE else [4, 8, 16, 32, 64, 128]   # score evaluations to compare
TRAIN_STEPS = 200 if SMOKE else 4000            # network training steps
BATCH = 256
WIDTH = 64 if SMOKE else 128                    # MLP width
"""),
    code("""
import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import diffjax as dj
from diffjax.losses import make_loss_fn

print("jax", jax.__version__, "on", jax.devices())
"""),
    md("""
## 1. An analytic score

Data `x0 ~ N(mu, diag(s^2))` in 2-D. Under the VP process `x_t = alpha(t) x0 + sigma(t) z`,
so `x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2)` and its score is known in closed form. The
error of a sampler is the 2-Wasserstein distance between the Gaussian fitted to its
samples and the data's (exact samples of the same size give the statistical floor).
"""),
    code("""
sde = dj.VPSDE(beta_min=0.1, beta_max=20.0)
mu, s = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.5])

def gaussian_score(x, t):
    alpha, sigma = sde.alpha_sigma(t)              # each (batch,)
    alpha, sigma = alpha[:, None], sigma[:, None]
    return -(x - alpha * mu) / (alpha**2 * s**2 + sigma**2)

def gaussian_w2(x):
    \"\"\"W2 between N(mean(x), diag(var(x))) and N(mu, diag(s^2)).\"\"\"
    return float(jnp.sqrt(jnp.sum((x.mean(0) - mu) ** 2 + (x.std(0) - s) ** 2)))

SAMPLERS = {                                     # NFE budget -> sampler spending it
    "Euler-Maruyama": lambda nfe: dj.samplers.EulerMaruyama(nfe),
    "DDIM": lambda nfe: dj.samplers.DDIM(nfe),
    "Heun": lambda nfe: dj.samplers.Heun(max(nfe // 2, 1)),       # 2 evaluations per step
    "DPM-Solver++ 2M": lambda nfe: dj.samplers.DPMSolverPP(nfe, order=2),
}

def compare(score_fn, x_T, error_fn):
    errors = {}
    for name, make in SAMPLERS.items():
        errors[name] = {}
        for nfe in NFE:
            run = jax.jit(functools.partial(dj.sample, score_fn, sde, sampler=make(nfe)))  # whole loop compiled
            x0, info = run(x_T, key=jax.random.key(1))
            errors[name][int(info["nfe"])] = error_fn(x0)
    return errors

x_T = sde.prior_sample(jax.random.key(0), (N, 2))
errors = compare(gaussian_score, x_T, gaussian_w2)
floor = gaussian_w2(mu + s * jax.random.normal(jax.random.key(2), (N, 2)))
for name, row in errors.items():
    print(f"{name:16s}", "  ".join(f"NFE {k}: {v:.3f}" for k, v in row.items()))
print(f"exact samples (floor): {floor:.3f}")
"""),
    code("""
def plot_errors(errors, floor, title, ylabel):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in errors.items():
        ax.loglog(list(row), list(row.values()), "o-", label=name)
    ax.axhline(floor, color="k", ls=":", label="exact samples (floor)")
    ax.set(xlabel="NFE (score evaluations)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    plt.show()

plot_errors(errors, floor, "Exact Gaussian score: sampler error against NFE", "W2 of the fitted Gaussian")
# The deterministic high-order solvers reach the floor in a handful of steps.
assert min(errors["DPM-Solver++ 2M"].values()) < floor + 0.1, errors
"""),
    md("""
## 2. A small NNX network

Now the data is a ring of eight Gaussians and the score comes from an MLP trained here with
diffjax's denoising loss (`diffjax.losses.make_loss_fn`, eps prediction). The network is split
into `(graphdef, params)` so that the training step is a plain `jax.jit` of a pure function;
`dj.parametrization.model_score_fn` turns it into a `score_fn(x, t)` for the samplers.
"""),
    code("""
CENTRES = 2.0 * jnp.stack([jnp.cos(jnp.arange(8) * jnp.pi / 4), jnp.sin(jnp.arange(8) * jnp.pi / 4)], -1)

def sample_ring(key, n):
    k1, k2 = jax.random.split(key)
    return CENTRES[jax.random.randint(k1, (n,), 0, 8)] + 0.15 * jax.random.normal(k2, (n, 2))

class MLP(nnx.Module):
    \"\"\"eps(x_t, t): x and sinusoidal features of t through three SiLU layers.\"\"\"

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(2 + 16, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.l3 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x, t):
        freqs = jnp.pi * jnp.arange(1, 9)
        h = jnp.concatenate([x, jnp.sin(t[:, None] * freqs), jnp.cos(t[:, None] * freqs)], -1)
        for layer in (self.l1, self.l2, self.l3):
            h = nnx.silu(layer(h))
        return self.out(h)

graphdef, params = nnx.split(MLP(WIDTH, rngs=nnx.Rngs(0)))
loss_fn = make_loss_fn(sde, prediction="eps", time_input="t")
optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, TRAIN_STEPS))
opt_state = optimizer.init(params)

@jax.jit
def train_step(params, opt_state, key):
    k_data, k_loss = jax.random.split(key)
    def loss(p):
        model = nnx.merge(graphdef, p)
        return loss_fn(model, sample_ring(k_data, BATCH), k_loss)[0]
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

losses = []
for step in range(TRAIN_STEPS):
    params, opt_state, value = train_step(params, opt_state, jax.random.fold_in(jax.random.key(3), step))
    losses.append(float(value))
plt.figure(figsize=(6, 3)); plt.semilogy(losses); plt.xlabel("step"); plt.ylabel("loss"); plt.show()
"""),
    code("""
model = nnx.merge(graphdef, params)
net_score = dj.parametrization.model_score_fn(model, sde, prediction="eps", time_input="t")

def mode_distance(x):
    \"\"\"Mean distance of the samples to their nearest ring centre (data: about 0.19).\"\"\"
    return float(jnp.linalg.norm(x[:, None] - CENTRES[None], axis=-1).min(1).mean())

errors_net = compare(net_score, x_T, mode_distance)
floor_net = mode_distance(sample_ring(jax.random.key(4), N))
plot_errors(errors_net, floor_net, "NNX network on the ring: sampler error against NFE",
            "mean distance to the nearest mode")
"""),
    code("""
# The samples themselves, one panel per sampler at the largest budget.
fig, axes = plt.subplots(1, len(SAMPLERS) + 1, figsize=(3 * (len(SAMPLERS) + 1), 3), sharex=True, sharey=True)
panels = {"data": sample_ring(jax.random.key(4), N)}
for name, make in SAMPLERS.items():
    panels[name] = jax.jit(functools.partial(dj.sample, net_score, sde, sampler=make(NFE[-1])))(
        x_T, key=jax.random.key(1))[0]
for ax, (name, x) in zip(axes, panels.items()):
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
    ax.set_title(f"{name}\\n{mode_distance(x):.3f}", fontsize=9)
    ax.set_aspect("equal")
plt.show()
"""),
]

NOTEBOOKS = {
    "01_samplers_in_your_own_jax.ipynb": SAMPLERS_NB,
}


def build(cells) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with no outputs, a python3 kernel and stable cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # deterministic ids: regenerating changes nothing
    nb.cells = cells
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed notebooks")
    args = parser.parse_args()
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = os.path.join(HERE, name)
        text = nbformat.writes(build(cells)) + "\n"
        if args.check:
            if not os.path.isfile(path) or open(path).read() != text:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
            print("wrote", path)
    if args.check:
        stale += sorted(set(n for n in os.listdir(HERE) if n.endswith(".ipynb")) - set(NOTEBOOKS))
    for name in stale:
        print(f"{name} differs from examples/make_notebooks.py (or is not made by it); run it and commit the result",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
