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
BATCH = 256 if SMOKE else 1024
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
samples and the data's; the dotted line is the same distance for one set of exact samples of
the same size, the size of the statistical noise (a sampler can land below it by chance).
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
`dj.parametrization.model_score_fn` turns it into a `score_fn(x, t)` for the samplers. The
network sees the log signal-to-noise ratio rather than `t`: it resolves the small noise
levels where the modes separate (with `t` itself the samples kept bridges between modes).
"""),
    code("""
CENTRES = 2.0 * jnp.stack([jnp.cos(jnp.arange(8) * jnp.pi / 4), jnp.sin(jnp.arange(8) * jnp.pi / 4)], -1)

def sample_ring(key, n):
    k1, k2 = jax.random.split(key)
    return CENTRES[jax.random.randint(k1, (n,), 0, 8)] + 0.15 * jax.random.normal(k2, (n, 2))

class MLP(nnx.Module):
    \"\"\"eps(x_t, c): x and sinusoidal features of c = log(alpha / sigma) through three SiLU layers.\"\"\"

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(2 + 16, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.l3 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x, c):
        c = c[:, None] / 8.0 * jnp.arange(1, 9)   # log-SNR spans about [-5, 7] on [eps, T]
        h = jnp.concatenate([x, jnp.sin(c), jnp.cos(c)], -1)
        for layer in (self.l1, self.l2, self.l3):
            h = nnx.silu(layer(h))
        return self.out(h)

graphdef, params = nnx.split(MLP(WIDTH, rngs=nnx.Rngs(0)))
loss_fn = make_loss_fn(sde, prediction="eps", time_input="log_snr")
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
net_score = dj.parametrization.model_score_fn(model, sde, prediction="eps", time_input="log_snr")

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


# -- 2. train on the digits -------------------------------------------------------
DIGITS_NB = [
    md("""
# Train on the digits, watch the loss, sample with three samplers

`dj.train` is what `python train.py` does, from Python: it builds the run from a config file
(or an `ml_collections.ConfigDict`), trains with checkpoints and logs in a workdir, and writes
the loss curve as PNG (`WORKDIR/plots/`). `dj.load_run` restores the run's EMA parameters onto
whatever devices are present; `run.generate` samples with the run's sampler or any other, and
`run.score_fn` plugs the network into `dj.sample` or your own code.
"""),
    code(INSTALL),
    params("""
CONFIG = os.path.join(REPO or "..", "configs", "ddpm_digits.py") + (":smoke" if SMOKE else "")
# Dotted overrides, checked like train.py's --config.a.b=v (a typo names the closest key).
OVERRIDES = ({"training.num_steps": 20, "training.sample_every": 0, "training.progress_bar": False,
              "eval.enabled": False, "model.channel_mult": (1,)} if SMOKE else {})
WORKDIR = os.path.join(os.environ.get("DIFFJAX_NOTEBOOK_OUT", "runs"), "digits_notebook")
NUM_SAMPLES = 16 if SMOKE else 64
SAMPLER_STEPS = 8 if SMOKE else 50
"""),
    code("""
import jax
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import diffjax as dj
from diffjax import plots
from diffjax.logging_utils import image_grid, save_png

summary = dj.train(CONFIG, WORKDIR, overrides=OVERRIDES)   # resumes if WORKDIR holds a checkpoint
print({k: summary[k] for k in ("step", "final_loss")})
"""),
    md("""
## The loss

Every logged step is a line of `WORKDIR/metrics.jsonl` (and a TensorBoard event:
`tensorboard --logdir WORKDIR/tb`); `diffjax.plots.read_metrics` reads it back, and the run
already wrote `plots/loss.png` and `plots/train_metrics.png`.
"""),
    code("""
metrics = plots.read_metrics(WORKDIR)
plt.figure(figsize=(6, 3))
plt.semilogy(metrics["step"], metrics["loss"], "o-")
plt.xlabel("step"); plt.ylabel("loss"); plt.grid(alpha=0.3)
plt.show()
display(Image(os.path.join(WORKDIR, "plots", "train_metrics.png"), width=700))
"""),
    md("""
## Three samplers

The same noise (`key=0`) through the stochastic ancestral sampler, deterministic DDIM and
DPM-Solver++ (2M), each with the same number of network evaluations.
"""),
    code("""
run = dj.load_run(WORKDIR)
print(run)
SAMPLERS = {
    "ancestral": dj.samplers.Ancestral(SAMPLER_STEPS),
    "DDIM": dj.samplers.DDIM(SAMPLER_STEPS),
    "DPM-Solver++ 2M": dj.samplers.DPMSolverPP(SAMPLER_STEPS, order=2),
}
samples = {name: run.generate(NUM_SAMPLES, key=0, sampler=s) for name, s in SAMPLERS.items()}  # [0, 1]
fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 4))
for ax, (name, images) in zip(axes, samples.items()):
    grid = image_grid(np.round(images * 255).astype(np.uint8))
    ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(name); ax.axis("off")
    save_png(os.path.join(WORKDIR, f"notebook_{name.split()[0].lower()}.png"), grid)
plt.show()
print("grids saved in", WORKDIR)
"""),
    md("""
## The model in your own code

`run.score_fn(x, t)` is an ordinary JAX function of arrays in the model's range `[-1, 1]`:
drive any sampler with it, jit it, or wrap it in guidance.
"""),
    code("""
x_T = run.sde.prior_sample(jax.random.key(1), (8, *run.image_shape))
x0, info = jax.jit(lambda x, key: dj.sample(run.score_fn, run.sde, x, key=key,
                                            sampler=dj.samplers.DPMSolverPP(SAMPLER_STEPS)))(x_T, jax.random.key(2))
print("nfe:", int(info["nfe"]), " range:", float(x0.min()), float(x0.max()))
plt.imshow(image_grid(np.asarray(np.clip((x0 + 1) * 127.5, 0, 255), np.uint8), columns=8)[..., 0], cmap="gray")
plt.axis("off"); plt.show()
"""),
]

# -- 3. restoration ---------------------------------------------------------------
RESTORATION_NB = [
    md("""
# Restoration: super-resolution, RePaint inpainting and Palette colorization on a photo

Three runs, each trained here through `dj.train` on crops of scikit-image's photos (the test
photo, the cat `chelsea`, is held out of training), then loaded with `dj.load_run`; one call,
`run.restore(images, masks)`, restores arrays with the task the run was trained for. The
photo is larger than the networks: restoration works on any size at least the model's.

The sizes below train tiny models for a short time, so the outputs show the API, not the
quality of the methods. To see that, point `WORKDIRS` at runs trained with `train.py` and the
configs' own settings (`docs/restoration.md`, `docs/sr.md`): they are then loaded, not trained.
"""),
    code(INSTALL),
    params("""
OUT = os.environ.get("DIFFJAX_NOTEBOOK_OUT", "runs")
WORKDIRS = {  # None = train here; or the --workdir of a trained run
    "sr3": None, "repaint": None, "colorization": None,
}
MODEL_SIZE = 16 if SMOKE else 32    # training crop size
PHOTO_SIZE = 32 if SMOKE else 64    # the photo restored (any size >= the model's)
if SMOKE:
    COMMON = {"training.num_steps": 2, "training.ckpt_every": 2, "training.log_every": 1,
              "training.sample_every": 0, "training.progress_bar": False, "eval.enabled": False,
              "optim.warmup_steps": 1, "sampling.steps": 2, "data.image_size": MODEL_SIZE,
              "model.channel_mult": (1,)}
    REPAINT = {"task.repaint.steps": 4, "task.repaint.jump_length": 2, "task.repaint.jump_n_sample": 2}
else:
    COMMON = {"training.num_steps": 1500, "training.batch_size": 32, "training.ckpt_every": 500,
              "training.sample_every": 0, "eval.enabled": False, "optim.warmup_steps": 100,
              "training.ema_decay": 0.995, "model.base_channels": 32, "data.image_size": MODEL_SIZE}
    REPAINT = {"task.repaint.steps": 100, "task.repaint.jump_length": 10, "task.repaint.jump_n_sample": 5}
CONFIGS = {"sr3": "sr3_photos_x4.py", "repaint": "repaint_photos.py", "colorization": "palette_colorization.py"}
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
from PIL import Image as PILImage

import diffjax as dj

runs = {}
for name, config in CONFIGS.items():
    workdir = WORKDIRS[name]
    if workdir is None:
        workdir = os.path.join(OUT, f"{name}_notebook")
        spec = os.path.join(REPO or "..", "configs", config) + (":smoke" if SMOKE else "")
        dj.train(spec, workdir, overrides={**COMMON, **(REPAINT if name == "repaint" else {})})
    runs[name] = dj.load_run(workdir)
    print(runs[name])
"""),
    code("""
# The held-out photo: a 200x200 crop around the cat's eye, as a PHOTO_SIZE x PHOTO_SIZE float image in [0, 1].
photo = PILImage.fromarray(skimage.data.chelsea()[30:230, 90:290]).resize((PHOTO_SIZE, PHOTO_SIZE), PILImage.BICUBIC)
photo = np.asarray(photo, np.float32) / 255.0

# Super-resolution x4: a low-resolution photo in, four times larger out.
scale = runs["sr3"].pipeline.scale
low = np.asarray(PILImage.fromarray(np.uint8(photo * 255)).resize((PHOTO_SIZE // scale,) * 2, PILImage.BICUBIC),
                 np.float32) / 255.0
sr = runs["sr3"].restore(low, key=0)

# Inpainting with RePaint: mask 1 = known pixel, 0 = fill (a box in the middle).
mask = np.ones((PHOTO_SIZE, PHOTO_SIZE), np.float32)
mask[PHOTO_SIZE // 4 : 3 * PHOTO_SIZE // 4, PHOTO_SIZE // 3 : 2 * PHOTO_SIZE // 3] = 0
inpainted = runs["repaint"].restore(photo, mask, key=0)

# Palette colorization: a grayscale photo in, colour out.
gray = photo.mean(-1, keepdims=True)
colour = runs["colorization"].restore(gray, key=0)
print(low.shape, "->", sr.shape, "|", photo.shape, "->", inpainted.shape, "|", gray.shape, "->", colour.shape)
"""),
    code("""
rows = [
    ("super-resolution x%d" % scale, np.kron(low, np.ones((scale, scale, 1))), sr),
    ("RePaint inpainting", photo * mask[..., None] + (1 - mask[..., None]) * 0.5, inpainted),
    ("Palette colorization", np.repeat(gray, 3, -1), colour),
]
fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)))
for (title, before, after), ax in zip(rows, axes):
    for a, image, label in zip(ax, (before, after, photo), ("input", "restored", "original")):
        a.imshow(np.clip(image, 0, 1)); a.set_title(f"{title}: {label}" if label == "input" else label, fontsize=9)
        a.axis("off")
plt.tight_layout()
plt.show()
# Known pixels come back unchanged: RePaint re-injects them at every step.
known = mask.astype(bool)
print("max change on known pixels:", float(np.abs(inpainted - photo)[known].max()))
"""),
]

# -- 4. translation ---------------------------------------------------------------
TRANSLATION_NB = [
    md("""
# Translation and editing: SDEdit and EGSDE, sneakers to ankle boots

Two runs of `configs/translation_fashion_mnist.py`: `:score`, an unconditional score model
of the *target* domain only (ankle boots), and `:classifier`, EGSDE's time-dependent domain
classifier (sneakers against ankle boots, trained on noised images). Held-out test-split
sneakers, which neither run saw, are translated

* with **SDEdit**: perturb the source to `t0` with the forward process, then run the reverse
  SDE of the boots model from `t0`;
* with **EGSDE**: the same, with the reverse SDE's mean shifted at every step by the gradient
  of an energy that lowers the classifier-feature similarity to the source (realism) and keeps
  its low-pass image (faithfulness).

First with one call on a run (`run.translate`, what `sample.py` does), then with the library
functions, where the energy is any JAX function you write. At smoke size the runs train for a
few steps, so the pictures show the API only; point `WORKDIRS` at runs trained with the
configs' defaults (`docs/translation.md`) to see the methods.
"""),
    code(INSTALL),
    params("""
OUT = os.environ.get("DIFFJAX_NOTEBOOK_OUT", "runs")
WORKDIRS = {"score": None, "classifier": None}   # None = train here; or the --workdir of a trained run
NUM = 4 if SMOKE else 16                         # held-out sneakers to translate
T0S = [0.5] if SMOKE else [0.3, 0.4, 0.5, 0.6]   # start times for the sweep
SMOKE_OVERRIDES = {"training.num_steps": 2, "training.ckpt_every": 2, "training.log_every": 1,
                   "training.sample_every": 0, "training.progress_bar": False, "eval.enabled": False,
                   "data.image_size": 16, "sampling.steps": 4, "model.channel_mult": (1,)}
OVERRIDES = SMOKE_OVERRIDES if SMOKE else {"training.progress_bar": False}
"""),
    code("""
import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import diffjax as dj
from diffjax import metrics
from diffjax.data import load_dataset

runs = {}
for name in ("score", "classifier"):
    workdir = WORKDIRS[name]
    if workdir is None:   # train.py --config configs/translation_fashion_mnist.py:<name> --workdir ...
        workdir = os.path.join(OUT, f"translation_{name}_notebook")
        spec = os.path.join(REPO or "..", "configs", "translation_fashion_mnist.py") + f":{name}" + ("_smoke" if SMOKE else "")
        dj.train(spec, workdir, overrides=OVERRIDES)
    runs[name] = dj.load_run(workdir)
    print(runs[name])
score_run, classifier_run = runs["score"], runs["classifier"]
"""),
    md("""
## Held-out sources

The test split of Fashion-MNIST at the model's size; class 7 (sneaker) is the source domain.
"""),
    code("""
size = score_run.image_shape[0]
test = load_dataset("fashion_mnist", split="test", image_size=size)
sneakers = test.stored_images()[test.labels() == 7][:NUM]          # uint8 (NUM, size, size, 1)
sources = sneakers.astype(np.float32) / 255.0                      # [0, 1], what run.translate takes

def ssim(images):
    \"\"\"Mean SSIM of [0, 1] images to their sources (faithfulness).\"\"\"
    return float(np.mean(metrics.ssim(images, sources, data_range=1.0)))

def show(rows, titles):
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(1.3 * len(rows[0]), 1.4 * len(rows)), squeeze=False)
    for ax_row, row, title in zip(axes, rows, titles):
        for ax, image in zip(ax_row, row):
            ax.imshow(np.asarray(image)[..., 0], cmap="gray", vmin=0, vmax=1); ax.axis("off")
        ax_row[0].set_title(title, fontsize=9, loc="left")
    plt.tight_layout(); plt.show()
"""),
    md("""
## One call on a run

`run.translate` is `sample.py --config.translation.method=sdedit|egsde`: the settings (`t0`,
EGSDE's weights `lambda_s`, `lambda_i` and low-pass `down_factor`) come from the run's
`config.translation`, the sampler from `config.sampling` (the stochastic SDE-DPM-Solver++).
SSIM to the source measures faithfulness.
"""),
    code("""
sdedit_out = score_run.translate(sources, method="sdedit", key=0)
egsde_out = score_run.translate(sources, method="egsde", key=0, classifier_workdir=classifier_run.workdir)
for name, out in (("SDEdit", sdedit_out), ("EGSDE", egsde_out)):
    print(f"{name}: SSIM to the source {ssim(out):.3f}")
show([sources, sdedit_out, egsde_out], ["source (held-out sneakers)", "SDEdit, t0 = 0.5", "EGSDE, t0 = 0.5"])
"""),
    md("""
## The library functions

`dj.tasks.sdedit` and `dj.tasks.egsde` take any `score_fn(x, t)` and work on arrays in the
model's range `[-1, 1]`; each is one jit-able function (the whole sampling loop is a `lax.scan`).
`dj.tasks.egsde_energy` builds the paper's energy from a classifier's feature function
(`classifier_run.feature_fn`). With the run's settings and the key `run.translate` used for
its first batch, the library call gives the same images; `t0` is a traced argument, so the
sweep compiles once.
"""),
    code("""
x = jnp.asarray(sources * 2.0 - 1.0)
tr, sampling = score_run.config.translation, score_run.config.sampling
energy = dj.tasks.egsde_energy(classifier_run.feature_fn, lambda_s=tr.lambda_s, lambda_i=tr.lambda_i,
                               down_factor=tr.down_factor)
sampler = dj.samplers.DPMSolverPP(sampling.steps, order=sampling.order, eta=sampling.eta)
egsde = jax.jit(functools.partial(dj.tasks.egsde, score_run.score_fn, score_run.sde, energy_fn=energy, sampler=sampler))
key = jax.random.fold_in(jax.random.key(0), 0)   # run.translate's key for batch 0 with key=0

def to_unit(y):
    return np.clip((np.asarray(y) + 1.0) / 2.0, 0.0, 1.0)

sweep = {t0: to_unit(egsde(x, key=key, t0=t0)) for t0 in T0S}
if 0.5 in sweep:
    difference = float(np.abs(sweep[0.5] - egsde_out).max())
    print(f"largest difference to run.translate: {difference:.2e}")
    assert difference < 1e-2, difference
for t0, out in sweep.items():
    print(f"EGSDE, t0 = {t0}: SSIM {ssim(out):.3f}")
show([sources] + list(sweep.values()), ["source"] + [f"EGSDE, t0 = {t0}" for t0 in T0S])
"""),
    md("""
## Your own energy

Any `energy_fn(y, x_t, t) -> (batch,)` guides EGSDE: `y` is the current sample, `x_t` the
source perturbed to the same level with the start's noise, `t` the times. Here a
faithfulness-only energy that keeps the source's silhouette: the squared distance between
soft masks of where each image is brighter than the background.
"""),
    code("""
def silhouette_energy(y, x_t, t, weight=5.0):
    soft_mask = lambda z: jax.nn.sigmoid(8.0 * (z + 0.8))   # ~1 on the item, ~0 on the black background
    return weight * jnp.sum((soft_mask(y) - soft_mask(x_t)) ** 2, axis=(1, 2, 3))

own = to_unit(dj.tasks.egsde(score_run.score_fn, score_run.sde, x, key=key, energy_fn=silhouette_energy,
                             t0=0.5, sampler=sampler))
print(f"t0 = 0.5, SSIM to the source: SDEdit {ssim(sdedit_out):.3f}, EGSDE with the silhouette energy {ssim(own):.3f}")
show([sources, sdedit_out, own], ["source", "SDEdit, t0 = 0.5", "EGSDE with the silhouette energy, t0 = 0.5"])
"""),
]

NOTEBOOKS = {
    "01_samplers_in_your_own_jax.ipynb": SAMPLERS_NB,
    "02_train_on_digits.ipynb": DIGITS_NB,
    "03_restoration.ipynb": RESTORATION_NB,
    "04_translation.ipynb": TRANSLATION_NB,
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
