"""Task algorithms built on an unconditional or conditional score function.

``repaint``  RePaint inpainting with resampling jumps (any unconditional score)
``sdedit``   SDEdit: editing and synthesis from a guide (any unconditional score)
``egsde``    EGSDE: unpaired translation with energy guidance (:mod:`diffjax.tasks.egsde`)
``sr3``      SR3 super-resolution: bicubic resampling, tiled sampling (:mod:`diffjax.tasks.sr3`)
``cascade``  conditioning augmentation of cascaded models (:mod:`diffjax.tasks.cascade`)
``conditional_sample``  CDE / CDiffE / CMDE conditional score estimators (:mod:`diffjax.tasks.conditional`)
"""

from diffjax.tasks.repaint import repaint, repaint_nfe, repaint_schedule
from diffjax.tasks.sdedit import sdedit
from diffjax.tasks.egsde import egsde, egsde_energy
from diffjax.tasks.conditional import conditional_sample
from diffjax.tasks import cascade, conditional, sr3  # super-resolution: dj.tasks.sr3.super_resolve, ...

__all__ = ["repaint", "repaint_schedule", "repaint_nfe", "sdedit", "egsde", "egsde_energy", "conditional_sample"]
