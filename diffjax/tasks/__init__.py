"""Task algorithms built on an unconditional or conditional score function.

``repaint``  RePaint inpainting with resampling jumps (any unconditional score)
``sdedit``   SDEdit: editing and synthesis from a guide (any unconditional score)
``egsde``    EGSDE: unpaired translation with energy guidance (:mod:`diffjax.tasks.egsde`)
``sr3``      SR3 super-resolution: bicubic resampling, tiled sampling (:mod:`diffjax.tasks.sr3`)
``cascade``  conditioning augmentation of cascaded models (:mod:`diffjax.tasks.cascade`)
``conditional_sample``  CDE / CDiffE / CMDE conditional score estimators (:mod:`diffjax.tasks.conditional`)
``plug_and_play``  a diffusion prior plus a differentiable constraint (Graikos et al.)
``segmentation``   per-pixel features of a diffusion network (Baranchuk et al.)
``pixel_classifier``  their MLP ensemble: vote and per-pixel uncertainty
``latent``   latent diffusion: ``scale_by_std``, sampling a latent through a decoder (:mod:`diffjax.tasks.latent`)
``palette``  Palette image-to-image tasks: degradations and conditional sampling (:mod:`diffjax.tasks.palette`)
``ddep``     DDeP: denoising pretraining for segmentation (:mod:`diffjax.tasks.ddep`)
``lsgm``     LSGM: a score-based prior in a VAE's latent space, its bound and mixed score (:mod:`diffjax.tasks.lsgm`)
"""

from diffjax.tasks.repaint import repaint, repaint_nfe, repaint_schedule
from diffjax.tasks.sdedit import sdedit
from diffjax.tasks.egsde import egsde, egsde_energy
from diffjax.tasks.conditional import conditional_sample
from diffjax.tasks.pnp import plug_and_play
from diffjax.tasks import pixel_classifier, segmentation  # ddpm_feature_fn, train_ensemble, ...
from diffjax.tasks import latent  # latent diffusion: dj.tasks.latent.latent_sample, scale_by_std
from diffjax.tasks import cascade, conditional, sr3  # super-resolution: dj.tasks.sr3.super_resolve, ...
from diffjax.tasks import ddep, palette, pnp  # every method module is an attribute: dj.tasks.palette, ...
from diffjax.tasks import lsgm  # latent score-based models: dj.tasks.lsgm.lsgm_terms, nelbo_ode, ...

__all__ = ["repaint", "repaint_schedule", "repaint_nfe", "sdedit", "egsde", "egsde_energy", "conditional_sample",
           "plug_and_play"]
