"""Cascaded diffusion: conditioning augmentation (both variants, blur) and the cascade end to end."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.pipelines.cascade import CascadePipeline, Stage, sample_cascade
from diffjax.tasks.cascade import (
    aug_alpha_sigma,
    gaussian_blur,
    gaussian_kernel_matrix,
    noise_augment,
    truncated_condition,
    truncation_time,
)
from diffjax.tasks.sr3 import bicubic_matrix, upsample


def test_aug_levels_are_variance_preserving_with_closed_form():
    s = np.array([0.0, 0.25, 0.5, 0.9])
    alpha, sigma = aug_alpha_sigma(s)
    np.testing.assert_allclose(alpha, np.cos(np.pi * s / 2))
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        noise_augment(np.zeros((1, 2, 2, 1), np.float32), np.array([1.0]), np.zeros((1, 2, 2, 1)))


@pytest.mark.parametrize("sde", [dj.VPSDE(), dj.VESDE(), dj.sde.CosineVPSDE()])
def test_truncation_stops_where_the_log_snr_matches_and_rescales_exactly(sde):
    s = 0.3
    t = truncation_time(sde, s)
    alpha_s, sigma_s = aug_alpha_sigma(s)
    np.testing.assert_allclose(float(sde.log_snr(jnp.float32(t))), np.log(alpha_s / sigma_s), rtol=1e-4)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    eps = jax.random.normal(jax.random.key(1), x.shape)
    alpha_t, sigma_t = sde.alpha_sigma(jnp.float32(t))
    z_s = truncated_condition(alpha_t * x + sigma_t * eps, sde, t, s)
    np.testing.assert_allclose(z_s, alpha_s * x + sigma_s * eps, atol=2e-4)


def test_blur_kernel_is_normalised_and_keeps_constants():
    m = gaussian_kernel_matrix(8, 0.5)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    taps = np.exp(-0.5 * (np.arange(-1, 2) / 0.5) ** 2)
    np.testing.assert_allclose(m[3, 2:5], taps / taps.sum())
    np.testing.assert_allclose(gaussian_blur(np.full((1, 8, 8, 3), 0.4, np.float32), 0.5), 0.4, atol=1e-6)


def _lift(cond: np.ndarray, scale: int) -> np.ndarray:
    """Invert the (injective) bicubic upsampling by least squares."""
    _, h, w, _ = cond.shape
    rows = np.linalg.pinv(bicubic_matrix(h // scale, h))
    cols = np.linalg.pinv(bicubic_matrix(w // scale, w))
    return np.einsum("oh,nhwc,pw->nopc", rows, cond, cols)


def test_training_feeds_the_level_of_the_noise_it_added():
    pipeline = CascadePipeline(scale=2, noise_aug_max=0.8, sample_aug_level=0.1)
    assert pipeline.model_fields() == {"aug_level_embedding": True}
    n = 64
    images = np.tile(np.linspace(-0.5, 0.5, 16 * 16 * 3, dtype=np.float32).reshape(1, 16, 16, 3), (n, 1, 1, 1))
    batch = pipeline.prepare_batch({"image": images, "label": np.zeros(n, np.int32)}, step=3, seed=0,
                                   rows=np.arange(n))
    s = batch["aug_level"]
    assert s.shape == (n,) and s.min() >= 0 and s.max() <= 0.8 and s.std() > 0.1
    clean = pipeline.low_res(images)
    low = _lift(batch["cond"], 2)
    alpha, sigma = aug_alpha_sigma(s.astype(np.float64))
    # The noise implied by the claimed level is standard normal, for every row.
    z = (low - alpha[:, None, None, None] * clean) / sigma[:, None, None, None]
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.05


def test_blur_option_changes_the_condition_without_a_level():
    pipeline = CascadePipeline(scale=2, noise_aug_max=0.0, sample_aug_level=0.0, blur_prob=1.0)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    batch = pipeline.prepare_batch({"image": images}, step=0, seed=0, rows=np.arange(2))
    assert "aug_level" not in batch
    plain = upsample(pipeline.low_res(images), 2)
    assert np.abs(batch["cond"] - plain).max() > 0.05
    with pytest.raises(ValueError, match="truncated"):
        CascadePipeline(truncated=True, sample_aug_level=0.0)


class _Spy:
    """A stand-in network: predicts eps = 0 and records what it is fed (through host callbacks)."""

    def __init__(self, log):
        self.log = log

    def __call__(self, x, c, **inputs):
        def record(x, c, cond, aug):
            self.log.append({"x": np.asarray(x), "c": np.asarray(c), "cond": np.asarray(cond), "aug": np.asarray(aug)})

        zero = jnp.zeros(x.shape[:1])
        jax.debug.callback(record, x, c, inputs.get("cond", jnp.zeros(x.shape)), inputs.get("aug_level", zero))
        return jnp.zeros_like(x)


@pytest.fixture
def spies(monkeypatch):
    import diffjax.training

    # Stage.graphdef holds the spy itself; "merging" returns it.
    monkeypatch.setattr(diffjax.training, "model_from_state", lambda graphdef, params, state: graphdef)
    return [], []


def _stages(spies, truncated: bool, s: float):
    sde = dj.VPSDE()
    base = Stage(_Spy(spies[0]), None, None, sde, dj.samplers.DDIM(4), (4, 4, 1), num_classes=3)
    pipeline = CascadePipeline(scale=2, noise_aug_max=0.5, truncated=truncated, sample_aug_level=s)
    sr = Stage(_Spy(spies[1]), None, None, sde, dj.samplers.DDIM(3), (8, 8, 1), time_input="alpha",
               pipeline=pipeline)
    return sde, [base, sr]


def test_truncated_sampling_conditions_on_the_base_latent_at_s(spies):
    s = 0.3
    sde, stages = _stages(spies, truncated=True, s=s)
    outputs = sample_cascade(stages, np.arange(2), jax.random.key(0))
    assert [o.shape for o in outputs] == [(2, 4, 4, 1), (2, 8, 8, 1)]
    base_log, sr_log = spies
    # With eps = 0, DDIM scales x_T by alpha(t) / alpha(T): the latent at the truncation time is known exactly.
    x_T = base_log[0]["x"]
    alpha_T = float(sde.alpha_sigma(jnp.float32(sde.T))[0])
    want = upsample(x_T * aug_alpha_sigma(s)[0] / alpha_T, 2)
    np.testing.assert_allclose(sr_log[0]["cond"], want, rtol=1e-3, atol=1e-5)
    assert all(np.allclose(entry["aug"], s) for entry in sr_log)
    # The base stopped at the truncation time: its last evaluation (Tweedie view) is there.
    np.testing.assert_allclose(base_log[-1]["c"], truncation_time(sde, s), rtol=1e-5)


def test_non_truncated_sampling_renoises_the_final_base_output_to_s(spies):
    s = 0.4
    sde, stages = _stages(spies, truncated=False, s=s)
    outputs = sample_cascade(stages, np.arange(32) % 3, jax.random.key(1))
    base_log, sr_log = spies
    np.testing.assert_allclose(base_log[-1]["c"], sde.eps, rtol=1e-5)  # ran to the end
    assert all(np.allclose(entry["aug"], s) for entry in sr_log)
    alpha, sigma = aug_alpha_sigma(s)
    z = (_lift(sr_log[0]["cond"], 2) - alpha * outputs[0]) / sigma
    assert abs(z.mean()) < 0.2 and abs(z.std() - 1.0) < 0.15  # 512 noise values: 4.5 standard errors


@pytest.fixture(scope="module")
def cascade_workdirs(tmp_path_factory):
    from test_sr3 import _train

    root = tmp_path_factory.mktemp("cdm")
    base_dir, sr_dir = str(root / "base"), str(root / "sr")
    # The bundled digits stand in for Fashion-MNIST (whose 60,000 images take long to load and
    # resize on a busy CPU); the stages, task and cascade code are the config's own.
    quick = {"training.num_steps": 2, "data.name": "digits"}
    # The base stage is a plain class-conditional generator (trained in many other tests): its initial
    # state, saved as its checkpoint, is all sampling needs. The SR stage trains: the cascade task's own loop.
    from untrained_runs import write_initial_run

    from configs.cdm_fashion_mnist import get_config

    base = get_config("base,smoke")
    base.data.name = "digits"
    write_initial_run(base, base_dir, (base.data.image_size, base.data.image_size, 1), num_classes=10)
    _train("configs.cdm_fashion_mnist", "sr,smoke", sr_dir, **quick)
    return base_dir, sr_dir


@pytest.mark.parametrize("truncated", [False, True])
def test_cascade_runs_end_to_end_from_trained_stages(cascade_workdirs, tmp_path, truncated):
    from sample import load_run_config, sample_from_workdir

    base_dir, sr_dir = cascade_workdirs
    config = load_run_config(sr_dir)
    config.task.cascade.previous_workdir = base_dir
    config.task.cascade.truncated = truncated
    info = sample_from_workdir(config, sr_dir, output=str(tmp_path / "out"), num=3)
    assert info["stages"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["stage0_8px", "stage1_16px"]
    assert len(list((tmp_path / "out" / "stage1_16px").glob("*_class*.png"))) == 3
    if not truncated:  # a cascade stage loads as a dj.Run (once is enough)
        import diffjax as dj

        assert isinstance(dj.load_run(sr_dir, overrides={"task.cascade.previous_workdir": base_dir}), dj.Run)
